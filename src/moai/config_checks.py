"""The checks that need more than one field of the mix instructions (names, upstreams, endpoints, listed cascades and
fallbacks, collaboration loops, plain numbers): each raises at the field to fix."""

from __future__ import annotations

import types
import unicodedata
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel

from moai.catalog import ModelCard, env_reference
from moai.config_errors import FieldProblem
from moai.config_mix import Mix, Pick, Role

MIX_PREFIX = "moai/"  # a request for ``moai/<name>`` is for the mix <name> (see Mixture.resolve)
# $1 a token: above any real price (a test rig may use it to spend a budget in one request); 1e300 overflowed costs
MAX_PRICE_PER_MTOK = 1_000_000.0


def _plain_number_problem(value: Any) -> str | None:
    """Why ``value`` is not to be read as a number, or None: a boolean, or a number written as a string."""
    if isinstance(value, bool):
        return f"expects a number, not {str(value).lower()}"
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return None  # not a number at all: pydantic says so
        return f"expects a number, not the string {value!r}; write it without quotes"
    return None


def check_plain_values(path: tuple[int | str, ...], values: Any, model: type[BaseModel]) -> None:
    """Numbers as YAML numbers and switches as YAML booleans, nested sections and lists of them included, before
    pydantic's lax coercion reads them: ``price: {input_per_mtok: true}`` was billed at 1 USD per million tokens,
    ``feedback_per_key: "no"`` read as false, ``max_tokens: "100"`` as 100."""
    if not isinstance(values, dict):
        return
    for key, value in values.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            continue
        forms = annotation_forms(field.annotation)
        if bool in forms:
            if isinstance(value, str):
                raise FieldProblem((*path, key), f"expects true or false, not the string {value!r}")
        elif any(form in (int, float) for form in forms) and (problem := _plain_number_problem(value)):
            raise FieldProblem((*path, key), problem)
        for form in forms:  # (a role's ``pick`` reads its own forms, "2" included: see PickValue)
            if isinstance(form, type) and issubclass(form, BaseModel) and form is not Pick:
                check_plain_values((*path, key), value, form)
            elif get_origin(form) is list and isinstance(value, list):
                item = get_args(form)[0]
                if isinstance(item, type) and issubclass(item, BaseModel):
                    for i, v in enumerate(value):
                        check_plain_values((*path, key, i), v, item)


def check_names(models: dict[str, ModelCard], mixes: dict[str, Mix]) -> None:
    """Names are what clients send as the request's ``model``: each must reach one thing only. A mix is called as
    ``<mix>`` or ``moai/<mix>`` before any model of that name (so a mix may take a model's name only to route to
    that model alone), and a name that differs from another only in case is one slip away from another model (and
    its privacy tier)."""
    for section, names in (("models", list(models)), ("mixes", list(mixes))):
        kind = section[:-1] if section == "models" else "mix"
        seen: dict[str, str] = {}
        for name in names:
            if not name:
                raise FieldProblem((section, name), f"a {kind} name cannot be empty")
            if any(c.isspace() for c in name):
                raise FieldProblem((section, name), f"{name!r}: a {kind} name cannot contain spaces or other "
                                    "whitespace (clients send it as the request's model)")
            if hidden := [c for c in dict.fromkeys(name) if unicodedata.category(c) in ("Cf", "Cc")]:
                codes = ", ".join(f"U+{ord(c):04X}" for c in hidden)
                raise FieldProblem((section, name), f"{name!r}: a {kind} name cannot contain invisible or control "
                                    f"characters ({codes}): it would look like another name a client could send")
            other = seen.setdefault(name.casefold(), name)
            if other != name:
                raise FieldProblem((section, name), f"{kind} {name!r} differs from {kind} {other!r} only in case; "
                                    f"a request with the wrong case would reach the other {kind}: rename one")
    mix_folded = {m.casefold(): m for m in mixes}
    for name in models:
        other = mix_folded.get(name.casefold())
        if other is not None and other != name:
            raise FieldProblem(("models", name), f"model {name!r} differs from mix {other!r} only in case; a "
                                "request with the wrong case would reach the other one: rename one")
        mix = mixes.get(name)
        if mix is not None and (mix.strategy != "route" or mix.models != [name]):
            raise FieldProblem(("models", name), f"model {name!r} has the name of mix {name!r}: a request for "
                                f"{name!r} gets the mix, never the model; rename the model or the mix (a mix may "
                                f"share a model's name only as {{strategy: route, models: [{name}]}})")
        if name.startswith(MIX_PREFIX):
            called = name.removeprefix(MIX_PREFIX)
            raise FieldProblem(("models", name), f"model {name!r} starts with {MIX_PREFIX!r}, which names a mix: a "
                                f"request for {name!r} is one for mix {called!r}; rename the model")


def check_upstream(name: str, card: ModelCard) -> None:
    """What is sent upstream: the model id and endpoint as written, and prices a bill can be computed from."""
    places: list[tuple[tuple[int | str, ...], str | None, str | None]] = [((), card.model, card.endpoint)]
    places += [(("deployments", i), d.model, d.endpoint) for i, d in enumerate(card.deployments)]
    for path, model, endpoint in places:
        if model is not None and (ref := env_reference(model)) is not None:
            what = "" if model.strip() == ref else f" ({ref})"
            raise FieldProblem(("models", name, *path, "model"), f"{model!r}: environment variables{what} are not "
                                "expanded in mix instructions; write the provider's model id itself")
        if endpoint is not None and (problem := _endpoint_problem(endpoint, card.provider)):
            raise FieldProblem(("models", name, *path, "endpoint"), problem)
    for fld in ("input_per_mtok", "output_per_mtok"):
        usd = getattr(card.price, fld)
        if usd > MAX_PRICE_PER_MTOK:
            raise FieldProblem(("models", name, "price", fld), f"{usd:g} USD per million tokens is above any "
                                f"real price (at most {MAX_PRICE_PER_MTOK:,.0f}, $1 a token)")


def _endpoint_problem(url: str, provider: str) -> str | None:
    """An endpoint is the server's base URL: the provider appends the API's path to it, so a full request URL (or
    one with a query or fragment, which the appended path would land inside) posts to a path that does not exist."""
    base = "e.g. http://host:8000/v1"
    if "?" in url or "#" in url:
        return f"{url!r}: the endpoint is the server's base URL ({base}), with no query string or fragment"
    path = urlsplit(url).path.rstrip("/").lower()
    suffix = "/messages" if provider == "anthropic" else "/chat/completions"
    for full in ("/chat/completions", "/completions", suffix):
        if path.endswith(full):
            return (f"{url!r}: the endpoint is the server's base URL ({base}); moai adds {suffix} itself, so "
                    f"leave {full} out")
    return None


def check_listed(mix_name: str, mix: Mix) -> None:
    """A cascade, fallbacks and every model a role names run only among the models the mix may use: one named
    outside them (the mix's ``models`` or ``constraints.allowed_models``) used to be dropped or swapped for the
    gate's pick unsaid (a request whose model failed got a 502, its fallback never tried). One above
    ``constraints.max_privacy`` is warned about (``pin_privacy_warnings``): a request's own privacy needs narrow
    the same way at run time, and such a pin is only ever left out."""
    allowed = mix.constraints.allowed_models
    for field, name, never in pins(mix):
        path = ("mixes", mix_name, *(int(p) if p.isdigit() else p for p in field.split(".")))
        if mix.models is not None and name not in mix.models:
            add = "; add it there or leave it out of the cascade" if field.startswith("cascade.") else (
                ", so it would never be tried; add it there" if field.startswith("fallbacks.") else
                f", so {never}; add it there or name one of them")
            raise FieldProblem(path, f"{name!r} is not among the mix's models ({', '.join(mix.models)}){add}")
        if allowed is not None and name not in allowed:
            raise FieldProblem(path, f"{name!r} is not in constraints.allowed_models ({', '.join(allowed)}), "
                                     f"so {never}")


def pins(mix: Mix) -> list[tuple[str, str, str]]:
    """``(field, model, what naming it outside the mix would mean)`` for each model a cascade, the fallbacks or a role
    the mix's strategy reads names (a role its strategy never reads is only warned about: see READ_BY)."""
    from moai.config_warnings import READ_BY

    out: list[tuple[str, str, str]] = []
    for fld, name in model_refs(mix):
        head = fld.split(".", 1)[0]
        if head in ("models", "constraints"):
            continue
        if head == "cascade":
            out.append((fld, name, "the cascade would never call it"))
        elif head == "fallbacks":
            out.append((fld, name, "it would never be tried"))
        elif mix.strategy in READ_BY.get(head, ()):
            role = f"chain step {int(fld.split('.')[1]) + 1}" if head == "steps" else (
                "a proposer" if head == "proposers" else f"the {head}")
            out.append((fld, name, f"the gate would never pick it for {role}" if ".among." in fld
                        else f"it would never play {role}"))
    return out


def check_package(name: str, card: ModelCard) -> None:
    """A local model's zoo package must exist now, not fail on the first request that routes to it."""
    from moai.local_models import ZOO

    if card.provider == "local" and card.package is not None and card.package not in ZOO:
        raise FieldProblem(("models", name, "package"),
                            f"unknown local package {card.package!r}; known: {', '.join(ZOO)}")


def check_collaboration_cycles(mixes: dict[str, Mix]) -> None:
    """An ``auto`` mix plans its hard queries with its ``collaborate`` mix, and an ``auto`` target does the same
    in turn: a chain that comes back to a mix already on it would recurse on every request, so refuse it here."""
    for start, mix in mixes.items():
        if mix.strategy != "auto":
            continue
        path = [start]
        current = mix
        while current.strategy == "auto" and current.collaborate is not None:
            nxt = current.collaborate
            if nxt in path:
                loop = path[path.index(nxt):] + [nxt]
                problem = (f"mix {nxt!r} collaborates with itself" if len(loop) == 2 else
                           f"collaboration loops back to {nxt!r}: {' → '.join(loop)}")
                raise FieldProblem(("mixes", path[-1], "collaborate"), problem + "; name a mix whose strategy "
                                    "is not auto, or an auto mix that ends in one")
            path.append(nxt)
            current = mixes[nxt]


def model_refs(mix: Mix) -> list[tuple[str, str]]:
    """Every model name a mix mentions, with the field it is in, down to a list's item (for error messages that
    point at the item's own line)."""
    refs: list[tuple[str, str]] = [(f"models.{i}", m) for i, m in enumerate(mix.models or [])]
    refs += [(f"cascade.{i}", m) for i, m in enumerate(mix.cascade or [])]
    refs += [(f"constraints.allowed_models.{i}", m) for i, m in enumerate(mix.constraints.allowed_models or [])]
    if isinstance(mix.fallbacks, list):
        refs += [(f"fallbacks.{i}", m) for i, m in enumerate(mix.fallbacks)]
    roles: list[tuple[str, Role | None]] = [
        (f, getattr(mix, f)) for f in ("proposers", "aggregator", "judge", "writer", "critic")
    ]
    roles += [(f"steps.{i}.model", s.model) for i, s in enumerate(mix.steps or [])]
    for fld, role in roles:
        if isinstance(role, str):
            refs.append((fld, role))
        elif isinstance(role, list):
            refs += [(f"{fld}.{i}", m) for i, m in enumerate(role)]
        elif isinstance(role, Pick) and role.among:
            refs += [(f"{fld}.among.{i}", m) for i, m in enumerate(role.among)]
    return refs


def annotation_forms(tp: Any) -> list[Any]:
    """The plain types a field annotation may take: Annotated and unions unwrapped."""
    origin = get_origin(tp)
    if origin is Annotated:
        return annotation_forms(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [form for arg in get_args(tp) for form in annotation_forms(arg)]
    return [tp]


def replay_records_problem(card: ModelCard) -> tuple[int, str] | None:
    """``(index in records, problem)`` for a replay model's records file that is not there or has a line that is
    not a routing record (``file:line: problem``), else None. A bad line used to pass the check and then fail
    every request to the model with a traceback."""
    from pathlib import Path

    from moai.bench.datasets import RecordError
    from moai.providers.replay import load_replay_index

    paths = [Path(file).expanduser() for file in card.records]
    for i, (file, path) in enumerate(zip(card.records, paths, strict=True)):
        if not path.is_file():
            problem = "is not a file" if path.exists() else "does not exist"
            return i, f"{file} {problem}; a replay model answers only from its records"
    try:
        load_replay_index(card.records)
    except RecordError as e:
        at = next((i for i, path in enumerate(paths) if str(path) == e.path), 0)
        return at, str(e)
    return None
