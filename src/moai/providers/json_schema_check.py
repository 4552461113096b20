"""Checking a local model's answer against a client's ``json_schema`` response format.

llama.cpp's grammar enforces only part of a JSON schema, so a local answer is checked after generation. The
check is its own concept because the schema is the client's: it is read under bounds (size, depth, ``$ref``s
that resolve within it) and its patterns are matched under a time limit, so that one request cannot hold a
worker; what it finds wrong is the request's fault (``INVALID_SCHEMA``) or beyond the model (``SchemaUnmet``).
"""

from __future__ import annotations

import json
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
INVALID_SCHEMA = "invalid_json_schema"  # the error code of a schema refused as the request's fault
SCHEMA_UNMET = "json_schema_unmet"  # the error code of a strict schema no answer of the model matched


class SchemaUnmet(ProviderRequestError):
    """No answer of the model matched a strict ``json_schema``. What the request asks is beyond this model, which
    says nothing of its health: like a refusal it neither counts against the model (error rate, breaker, the
    request's later steps) nor stops the mix's next model from answering; when none can, the client gets a 422."""

    status = 422


def _schema_error(model: str, message: str) -> ProviderRequestError:
    """The request's fault, found in its schema (OpenAI's ``param`` for it, and a code)."""
    return ProviderRequestError(model, f"response_format's JSON schema {message}", code=INVALID_SCHEMA,
                                param="response_format")


def _search(model: str, pattern: str, text: str) -> bool:
    """``re.search`` for a client's pattern, with a time limit: Python's ``re`` may take exponential time
    (``^(a+)+$``) and never lets go of the interpreter meanwhile, under the model's lock. A pattern that
    overruns is the request's fault."""
    import regex

    try:
        return regex.search(pattern, text, timeout=PATTERN_TIMEOUT_S) is not None
    except TimeoutError as e:
        raise _schema_error(model, f"has a pattern, {pattern!r}, that took over {PATTERN_TIMEOUT_S}s to match "
                                   f"a {len(text)}-character string: rewrite it without nested repetition") from e
    except regex.error as e:
        raise _schema_error(model, f"has a pattern, {pattern!r}, that cannot be read: {e}") from e


def _time_limited(cls: Any, model: str) -> Any:
    """The validator class ``cls`` with every keyword that matches a client's pattern against the answer
    (``pattern``, ``patternProperties``, and ``additionalProperties``, which looks them up) run by ``_search``."""
    import jsonschema

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[Any]:
        if validator.is_type(instance, "string") and not _search(model, patrn, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    def matched(patterns: Any, key: str) -> bool:
        return any(_search(model, p, key) for p in patterns)

    def pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in patterns.items():
            for k, v in instance.items():
                if _search(model, patrn, k):
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

    def problems(self, text: str) -> str | None:
        """Why ``text`` does not match the schema, or None when it does. A pattern of the schema too costly to
        match raises the request's error (``_search``)."""
        try:
            value = json.loads(text)
        except ValueError as e:
            return f"it is not JSON ({e})"
        errors = sorted(self.validator.iter_errors(value), key=lambda e: (list(map(str, e.path)), e.message))
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


def _bounded(model: str, schema: dict[str, Any]) -> None:
    """Refuse a schema too large or too deep to check in reasonable time (``SCHEMA_MAX_OBJECTS``, ``_DEPTH``);
    read without recursion."""
    objects, stack = 0, [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > SCHEMA_MAX_DEPTH:
            raise _schema_error(model, f"is nested more than {SCHEMA_MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            objects += 1
            if objects > SCHEMA_MAX_OBJECTS:
                raise _schema_error(model, f"has more than {SCHEMA_MAX_OBJECTS:,} objects: too large to check")
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _unresolvable_ref(schema: dict[str, Any]) -> str | None:
    """The first ``$ref`` (or ``$dynamicRef``) of the schema that does not resolve within it (another document,
    a URL, a path to nothing), found before any generation: nothing is ever fetched."""
    from referencing import Registry
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012, specification_with

    spec = specification_with(str(schema.get("$schema", "")), default=DRAFT202012)
    root = spec.create_resource(schema)
    stack = [(root, Registry().resolver_with_root(root))]
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


def schema_check(model: str, fmt: dict[str, Any] | None) -> SchemaCheck | None:
    """The check for a ``json_schema`` response format with a schema (None for any other format), made once per
    call, off the event loop (it can take a second on a large schema). A schema that is not valid JSON Schema,
    is too large to check, or has a ``$ref`` that does not resolve within it (nothing is fetched) is the
    request's fault (400, ``param: response_format``), found before any generation."""
    schema = schema_of(fmt)
    if schema is None:
        return None
    import jsonschema

    _bounded(model, schema)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise _schema_error(model, f"is not valid: {e.message}") from e
    ref = _unresolvable_ref(schema)
    if ref is not None:
        raise _schema_error(model, f"has a $ref, {ref!r}, that does not resolve within it (no schema is fetched)")
    if _uses(schema, "unevaluatedProperties") and _uses(schema, "patternProperties"):
        # which keys patternProperties evaluated is found with Python's re, with no time limit (``_search``)
        raise _schema_error(model, "combines unevaluatedProperties with patternProperties, which local models' "
                                   "answers cannot be checked against")
    from referencing import Registry

    spec = (fmt or {}).get("json_schema") or {}
    validator = _time_limited(cls, model)(schema, registry=Registry(), format_checker=cls.FORMAT_CHECKER)
    return SchemaCheck(model, str(spec.get("name") or "schema"), spec.get("strict") is True, validator)
