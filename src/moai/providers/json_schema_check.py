"""Checking a local model's answer against a client's ``json_schema`` response format, and the arguments of its
tool calls against the ``parameters`` of functions declared ``strict``.

llama.cpp's grammar enforces only part of a JSON schema, so a local answer is checked after generation. The
check is its own concept because the schema is the client's: it is read under bounds (size, depth, ``$ref``s
that resolve within it) and its patterns are matched under a time limit, so that one request cannot hold a
worker; what it finds wrong is the request's fault (``INVALID_SCHEMA``) or beyond the model (``SchemaUnmet``).
"""

from __future__ import annotations

import datetime
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from moai.providers.base import ProviderRequestError, Usage

SCHEMA_PROBLEMS_SHOWN = 3  # schema violations named in an error (and in what a retry is told)
# a client's schema is read (checked as JSON Schema, its $refs resolved) before any generation: bounded, so that
# one request cannot hold a worker for seconds (20,000 properties took 3.9 s to check)
SCHEMA_MAX_OBJECTS = 10_000
SCHEMA_MAX_DEPTH = 64
PATTERN_TIMEOUT_S = 0.25  # one match of a client's regular expression against the answer, at most
SCHEMA_CACHE_SIZE = 16  # schemas kept read: a retry, a fallback, the client's next request do not read it again
# the ``format``s checked, the same whatever is installed (jsonschema checks others only when some package is):
# those jsonschema reads with the standard library, and RFC 3339 dates and times read here. Any other
# (uri, hostname, duration...) is an annotation, as JSON Schema's default has it.
CHECKED_FORMATS = ("date", "date-time", "time", "email", "idn-email", "ipv4", "ipv6", "uuid", "regex")
INVALID_SCHEMA = "invalid_json_schema"  # the error code of a schema refused as the request's fault
SCHEMA_UNMET = "json_schema_unmet"  # the error code of a strict schema no answer of the model matched
INVALID_PARAMETERS = "invalid_function_parameters"  # a strict function's parameters schema refused (OpenAI's code)
TOOL_ARGUMENTS_UNMET = "tool_arguments_unmet"  # the error code of calls to strict functions no answer made right
RESPONSE_FORMAT = "response_format's JSON schema"  # what a response format's schema is called in errors


class SchemaUnmet(ProviderRequestError):
    """No answer of the model matched a strict ``json_schema``. What the request asks is beyond this model, which
    says nothing of its health: like a refusal it neither counts against the model (error rate, breaker, the
    request's later steps) nor stops the mix's next model from answering; when none can, the client gets a 422."""

    status = 422


@dataclass(frozen=True)
class _Source:
    """Where a schema comes from in the request, to name it in its errors: what it is called, OpenAI's ``param``
    for it, and the code of its refusal."""

    about: str = RESPONSE_FORMAT
    param: str = "response_format"
    code: str = INVALID_SCHEMA


def _schema_error(model: str, message: str, source: _Source = _Source()) -> ProviderRequestError:
    """The request's fault, found in its schema (OpenAI's ``param`` for it, and a code)."""
    return ProviderRequestError(model, f"{source.about} {message}", code=source.code, param=source.param)


class _TooSlow(Exception):  # noqa: N818 - an outcome of a check, not an error of the code
    """A client's pattern overran its time limit on one string of the answer: that answer cannot be checked."""

    def __init__(self, pattern: str, length: int) -> None:
        super().__init__(pattern)
        self.pattern, self.length = pattern, length


class _BadPattern(Exception):  # noqa: N818 - see _TooSlow
    """A client's pattern that cannot be read: the request's fault."""


def _search(pattern: str, text: str) -> bool:
    """``re.search`` for a client's pattern, with a time limit: Python's ``re`` may take exponential time
    (``^(a+)+$``) and never lets go of the interpreter meanwhile, under the model's lock. An overrun says
    nothing of the pattern's worth (``[a-z]+\\d`` takes 1.2 s on 16,000 letters): it is that answer that cannot
    be checked (``_TooSlow``), which ends its check at once."""
    import regex

    try:
        return regex.search(pattern, text, timeout=PATTERN_TIMEOUT_S) is not None
    except TimeoutError as e:
        raise _TooSlow(pattern, len(text)) from e
    except regex.error as e:
        raise _BadPattern(f"has a pattern, {pattern!r}, that cannot be read: {e}") from e


_DATE = r"(\d{4})-(\d{2})-(\d{2})"
_TIME = r"(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))"
_RFC3339_DATE_TIME = re.compile(f"{_DATE}[Tt]{_TIME}", re.ASCII)
_RFC3339_TIME = re.compile(_TIME, re.ASCII)


def _good_time(hour: str, minute: str, second: str, off_hour: str | None, off_minute: str | None) -> bool:
    return (int(hour) < 24 and int(minute) < 60 and int(second) <= 60  # 60: a leap second
            and (off_hour is None or (int(off_hour) < 24 and int(off_minute or 0) < 60)))


def _date_time(value: object) -> bool:
    """RFC 3339's ``date-time``, as OpenAI's structured outputs take it: a time zone offset is required."""
    if not isinstance(value, str):
        return True
    m = _RFC3339_DATE_TIME.fullmatch(value)
    if m is None:
        return False
    try:
        datetime.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return False
    return _good_time(*m.groups()[3:])


def _time(value: object) -> bool:
    """RFC 3339's ``full-time``: a time zone offset is required."""
    if not isinstance(value, str):
        return True
    m = _RFC3339_TIME.fullmatch(value)
    return m is not None and _good_time(*m.groups())


def format_checker() -> Any:
    """The format checker for every schema: ``CHECKED_FORMATS``, whatever is installed."""
    import jsonschema

    checker = jsonschema.FormatChecker(formats=[f for f in CHECKED_FORMATS if f not in ("date-time", "time")])
    checker.checks("date-time")(_date_time)
    checker.checks("time")(_time)
    return checker


def _time_limited(cls: Any) -> Any:
    """The validator class ``cls`` with every keyword that matches a client's pattern against the answer
    (``pattern``, ``patternProperties``, and ``additionalProperties``, which looks them up) run by ``_search``."""
    import jsonschema

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[Any]:
        if validator.is_type(instance, "string") and not _search(patrn, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    def matched(patterns: Any, key: str) -> bool:
        return any(_search(p, key) for p in patterns)

    def pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in patterns.items():
            for k, v in instance.items():
                if _search(patrn, k):
                    yield from validator.descend(v, subschema, path=k, schema_path=patrn)

    def additional_properties(validator: Any, ap: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if not validator.is_type(instance, "object"):
            return
        properties, patterns = schema.get("properties", {}), schema.get("patternProperties", {})
        extras = [k for k in instance if k not in properties and not matched(patterns, k)]
        if validator.is_type(ap, "object"):
            for extra in extras:
                yield from validator.descend(instance[extra], ap, path=extra)
        elif not ap and extras:
            names = ", ".join(map(repr, sorted(extras)))
            verb = "was" if len(extras) == 1 else "were"
            yield jsonschema.ValidationError(f"Additional properties are not allowed ({names} {verb} unexpected)")

    keywords = {"pattern": pattern, "patternProperties": pattern_properties,
                "additionalProperties": additional_properties}
    return jsonschema.validators.extend(cls, {k: v for k, v in keywords.items() if k in cls.VALIDATORS})


@dataclass(frozen=True)
class SchemaCheck:
    """The ``json_schema`` a local answer must match, checked after generation.

    llama.cpp's grammar enforces a schema's shape (types, required keys, string lengths, patterns, enums) but
    silently drops other keywords: ``minimum``/``maximum`` and their exclusive forms, ``multipleOf``,
    ``uniqueItems``, ``not``, ``format``... So an answer can parse yet break the schema (``{"age": 4000}`` for
    ``maximum: 120``). ``strict`` is OpenAI's flag: with it the answer is guaranteed to follow the schema;
    without it (OpenAI's default) the schema guides the model on a best-effort basis.
    """

    model: str
    name: str
    strict: bool
    validator: Any  # a jsonschema validator for the schema, its patterns matched under a time limit
    source: _Source = _Source()

    def problems(self, text: str) -> str | None:
        """Why ``text`` does not match the schema, or None when it does. A pattern too slow to match on the
        answer (``_TooSlow``) leaves it unchecked: a strict schema is not met by it (that try fails), a schema
        followed at best effort takes it. A pattern that cannot be read raises the request's error."""
        try:
            value = json.loads(text)
        except ValueError as e:
            return f"it is not JSON ({e})"
        try:
            errors = sorted(self.validator.iter_errors(value), key=lambda e: (list(map(str, e.path)), e.message))
        except _TooSlow as e:
            if not self.strict:
                return None
            return (f"the pattern {e.pattern!r} took over {PATTERN_TIMEOUT_S}s to match a {e.length}-character "
                    "string of it: too slow to check")
        except _BadPattern as e:
            raise _schema_error(self.model, str(e), self.source) from e
        if not errors:
            return None
        shown = [f"{e.message} (at {e.json_path})" for e in errors[:SCHEMA_PROBLEMS_SHOWN]]
        more = len(errors) - len(shown)
        return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")

    def feedback(self, text: str, problem: str) -> list[dict[str, Any]]:
        """The turns that show the model its answer and what is wrong with it, for the next try."""
        return [{"role": "assistant", "content": text},
                {"role": "user", "content": f"That JSON does not match the required JSON schema: {problem}. "
                                            "Answer again with JSON that matches the schema."}]

    def failure(self, problem: str, tries: int, usage: Usage) -> SchemaUnmet:
        """The call's error when no answer matched: the request asked more than this model gives, so the mix's
        next model may answer (``SchemaUnmet``)."""
        e = SchemaUnmet(self.model, f"its answer does not match the response_format JSON schema {self.name!r} "
                                    f"after {tries} tr{'y' if tries == 1 else 'ies'}: {problem}",
                        code=SCHEMA_UNMET, param="response_format")
        e.usage = usage
        return e


def schema_of(fmt: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema of a ``json_schema`` response format, if it has one."""
    if not fmt or fmt.get("type") != "json_schema":
        return None
    schema = (fmt.get("json_schema") or {}).get("schema")
    return schema if isinstance(schema, dict) and schema else None


def _bounded(model: str, schema: dict[str, Any], source: _Source) -> None:
    """Refuse a schema too large or too deep to check in reasonable time (``SCHEMA_MAX_OBJECTS``, ``_DEPTH``);
    read without recursion."""
    objects, stack = 0, [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > SCHEMA_MAX_DEPTH:
            raise _schema_error(model, f"is nested more than {SCHEMA_MAX_DEPTH} levels deep", source)
        if isinstance(node, dict):
            objects += 1
            if objects > SCHEMA_MAX_OBJECTS:
                raise _schema_error(model, f"has more than {SCHEMA_MAX_OBJECTS:,} objects: too large to check",
                                    source)
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _root(schema: dict[str, Any]) -> Any:
    from referencing.jsonschema import DRAFT202012, specification_with

    return specification_with(str(schema.get("$schema", "")), default=DRAFT202012).create_resource(schema)


def _registry(schema: dict[str, Any]) -> Any:
    """The schema's resources (each subschema with an ``$id``), found in one crawl: an uncrawled registry
    crawls the whole schema again for each ``$ref`` it resolves (800 ``$id``s took 10 s, 3,000 took 150 s)."""
    from referencing import Registry

    root = _root(schema)
    return Registry().with_resource(root.id() or "", root).crawl()


def _unresolvable_ref(schema: dict[str, Any], registry: Any = None) -> str | None:
    """The first ``$ref`` (or ``$dynamicRef``) of the schema that does not resolve within it (another document,
    a URL, a path to nothing), found before any generation: nothing is ever fetched."""
    from referencing.exceptions import Unresolvable

    registry = registry if registry is not None else _registry(schema)
    root = _root(schema)
    stack = [(root, registry.resolver(root.id() or ""))]
    while stack:
        resource, resolver = stack.pop()
        contents = resource.contents
        if isinstance(contents, dict):
            for keyword in ("$ref", "$dynamicRef"):
                ref = contents.get(keyword)
                if isinstance(ref, str):
                    try:
                        resolver.lookup(ref)
                    except Unresolvable:
                        return ref
        for sub in resource.subresources():
            stack.append((sub, resolver.in_subresource(sub)))
    return None


def _uses(schema: Any, keyword: str) -> bool:
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if keyword in node:
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


@dataclass(frozen=True)
class _Read:
    """A schema as read once: its validator, or why it is refused (``_schema_error``'s message)."""

    validator: Any
    refusal: str | None = None


def _read(schema: dict[str, Any]) -> _Read:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        return _Read(None, f"is not valid: {e.message}")
    registry = _registry(schema)
    ref = _unresolvable_ref(schema, registry)
    if ref is not None:
        return _Read(None, f"has a $ref, {ref!r}, that does not resolve within it (no schema is fetched)")
    if _uses(schema, "unevaluatedProperties") and _uses(schema, "patternProperties"):
        # which keys patternProperties evaluated is found with Python's re, with no time limit (``_search``)
        return _Read(None, "combines unevaluatedProperties with patternProperties, which local models' answers "
                           "cannot be checked against")
    return _Read(_time_limited(cls)(schema, registry=registry, format_checker=format_checker()))


@functools.lru_cache(maxsize=SCHEMA_CACHE_SIZE)
def _read_text(text: str) -> _Read:
    """``_read`` for a schema as JSON text, kept: a validator holds no state of its own between checks."""
    return _read(json.loads(text))


def schema_check(model: str, fmt: dict[str, Any] | None) -> SchemaCheck | None:
    """The check for a ``json_schema`` response format with a schema (None for any other format), made off the
    event loop (it can take a second on a large schema) and kept for the same schema (``SCHEMA_CACHE_SIZE``). A
    schema that is not valid JSON Schema, is too large to check, or has a ``$ref`` that does not resolve within
    it (nothing is fetched) is the request's fault (400, ``param: response_format``), found before any
    generation."""
    schema = schema_of(fmt)
    if schema is None:
        return None
    spec = (fmt or {}).get("json_schema") or {}
    return SchemaCheck(model, str(spec.get("name") or "schema"), spec.get("strict") is True,
                       _validator(model, schema, _Source()))


def _validator(model: str, schema: dict[str, Any], source: _Source) -> Any:
    """The validator for a client's schema, read under bounds and kept (``_read_text``); a schema that cannot be
    checked is the request's fault, named after ``source``."""
    _bounded(model, schema, source)
    try:
        text = json.dumps(schema, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):  # no JSON text (a value JSON does not have): read as it is, not kept
        read = _read(schema)
    else:
        read = _read_text(text)
    if read.refusal is not None:
        raise _schema_error(model, read.refusal, source)
    return read.validator


def strict_functions(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The ``function`` of each offered tool declared ``strict: true``: its calls' arguments must match its
    ``parameters`` (the others' are followed at best effort, unchecked)."""
    return [t["function"] for t in tools or [] if isinstance(t, dict) and t.get("type", "function") == "function"
            and isinstance(t.get("function"), dict) and t["function"].get("strict") is True]


def _call_text(call: dict[str, Any]) -> str:
    """A call as the model would write it (Hermes style, which templates and ``parse_tool_calls`` read)."""
    fn = call.get("function") or {}
    args = fn.get("arguments") or ""
    try:
        value: Any = json.loads(args)
    except ValueError:
        value = args
    return f"<tool_call>\n{json.dumps({'name': fn.get('name'), 'arguments': value})}\n</tool_call>"


@dataclass(frozen=True)
class ToolArgumentsCheck:
    """The ``parameters`` schemas that calls to strict functions must match, checked after generation.

    With ``strict: true`` on a function OpenAI guarantees that a call's arguments follow its ``parameters``; a
    local model's tool-call grammar, like its ``json_schema`` one, drops keywords such as ``minimum``/``maximum``,
    so each call to a strict function is validated as a ``json_schema`` answer is (``SchemaCheck``), and a call
    still breaking it fails the call (``SchemaUnmet``, ``param: tools``). Calls to other functions are unchecked.
    """

    model: str
    checks: dict[str, SchemaCheck]  # by function name: only strict functions
    strict: bool = True  # only strict functions are checked, so a call still wrong is never returned

    def shown(self, calls: list[dict[str, Any]]) -> str:
        """The calls as one text: shown to the next try, and compared to tell a model stuck on its answer."""
        return "\n".join(map(_call_text, calls))

    def problems(self, calls: list[dict[str, Any]]) -> str | None:
        """Why the calls to strict functions break their ``parameters``, or None when none does."""
        found = []
        for i, call in enumerate(calls):
            fn = call.get("function") or {}
            check = self.checks.get(fn.get("name"))
            problem = check.problems(fn.get("arguments") or "{}") if check is not None else None
            if problem is not None:
                found.append(f"the arguments of call {i + 1} (to {fn.get('name')!r}): {problem}")
        return "; ".join(found) or None

    def feedback(self, text: str, problem: str) -> list[dict[str, Any]]:
        """The turns that show the model its calls and what is wrong with them, for the next try."""
        return [{"role": "assistant", "content": text},
                {"role": "user", "content": f"Those tool call arguments do not match the function's parameters "
                                            f"schema: {problem}. Call again with arguments that match the schema."}]

    def failure(self, problem: str, tries: int, usage: Usage) -> SchemaUnmet:
        """The call's error when no answer's calls matched: as for a strict ``json_schema``, the mix's next model
        may answer (``SchemaUnmet``), and when none can the client gets a 422 about ``tools``."""
        e = SchemaUnmet(self.model, f"its tool calls do not match the parameters of strict functions after {tries} "
                                    f"tr{'y' if tries == 1 else 'ies'}: {problem}",
                        code=TOOL_ARGUMENTS_UNMET, param="tools")
        e.usage = usage
        return e


def tool_arguments_check(model: str, tools: list[dict[str, Any]] | None) -> ToolArgumentsCheck | None:
    """The check for the calls to the strict functions of ``tools`` (None when there are none), made off the event
    loop and kept as a response format's schema is (``schema_check``). A ``parameters`` schema that cannot be
    checked is the request's fault (400, ``param: tools``), found before any generation; a strict function
    without one takes an object."""
    checks: dict[str, SchemaCheck] = {}
    for fn in strict_functions(tools):
        name = str(fn.get("name") or "")
        source = _Source(f"tools' function {name!r} parameters schema", "tools", INVALID_PARAMETERS)
        schema = fn.get("parameters")
        if schema is None or schema == {}:
            schema = {"type": "object"}
        if not isinstance(schema, dict):
            raise _schema_error(model, "is not an object", source)
        checks.setdefault(name, SchemaCheck(model, name, True, _validator(model, schema, source), source))
    return ToolArgumentsCheck(model, checks) if checks else None
