"""Mix instructions: the YAML that names the models and the mixes, as validated pydantic models.

Users write these by hand, so every error must point at the place to fix: file, line and field.
We parse with ruamel.yaml (it keeps line numbers), validate with pydantic, and map pydantic's error
location back to the YAML line.

Here: the whole file (``Config``) and its loading. Its parts: one mix in ``config_mix``, the ``settings`` section in
``config_settings``, the checks that span fields in ``config_checks``, the advice of ``config check`` in
``config_warnings``; every public name of them is importable from here too.
"""

from __future__ import annotations

import difflib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

from moai.catalog import ModelCard, complete_card
from moai.config_checks import (
    MAX_PRICE_PER_MTOK,
    MIX_PREFIX,
    annotation_forms,
    check_collaboration_cycles,
    check_listed,
    check_names,
    check_package,
    check_plain_values,
    check_upstream,
    model_refs,
)
from moai.config_errors import ConfigError, FieldProblem
from moai.config_mix import (
    ChainStep,
    Constraints,
    LiveKnob,
    LiveTune,
    Mix,
    Pick,
    PickMode,
    PickValue,
    Role,
    SensitivePolicy,
    Strategy,
    Weights,
)
from moai.config_settings import MIN_STATS_REFRESH_S, CacheSettings, Settings, check_database_url
from moai.config_warnings import (
    MIN_PRICE_PER_MTOK,
    READ_BY,
    cascade_warnings,
    config_warnings,
    mix_field_warnings,
    price_warnings,
    privacy_warnings,
)

# the names of the mix instructions' parts, importable from here whichever module defines them
__all__ = [
    "MAX_PRICE_PER_MTOK",
    "MIN_PRICE_PER_MTOK",
    "MIN_STATS_REFRESH_S",
    "MIX_PREFIX",
    "READ_BY",
    "CacheSettings",
    "ChainStep",
    "Config",
    "ConfigError",
    "Constraints",
    "LiveKnob",
    "LiveTune",
    "Mix",
    "Pick",
    "PickMode",
    "PickValue",
    "Role",
    "SensitivePolicy",
    "Settings",
    "Strategy",
    "Weights",
    "cascade_warnings",
    "check_database_url",
    "config_warnings",
    "load_config",
    "mix_field_warnings",
    "parse_config",
    "price_warnings",
    "privacy_warnings",
]


class Config(BaseModel):
    """The whole mix instructions file."""

    model_config = ConfigDict(extra="forbid")
    models: dict[str, ModelCard]
    mixes: dict[str, Mix]
    settings: Settings = Field(default_factory=Settings)
    source: str = Field("<embedded>", exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _sections_left_empty(cls, data: Any) -> Any:
        """A key left empty (YAML null: its entries all commented out) means what leaving the key out means, as
        ``models:`` does in a mix: ``settings:`` was refused ("a valid dictionary"), and ``fallbacks:`` read as no
        fallbacks, turning failover off unsaid. Returns a copy (the loaded YAML keeps its line numbers)."""
        if not isinstance(data, dict):
            return data
        out = {k: v for k, v in data.items() if not (k == "settings" and v is None)}
        if isinstance(data.get("models"), dict):
            out["models"] = {name: _without_nulls(card, EMPTY_SECTIONS["model"])
                             for name, card in data["models"].items()}
        if isinstance(data.get("mixes"), dict):
            out["mixes"] = {name: _without_nulls(mix, EMPTY_SECTIONS["mix"]) for name, mix in data["mixes"].items()}
        return out

    @model_validator(mode="before")
    @classmethod
    def _plain_numbers(cls, data: Any) -> Any:
        """Before pydantic's lax coercion turns ``true`` into 1 and ``"2"`` into 2.0 (it cannot be told after)."""
        models = data.get("models") if isinstance(data, dict) else None
        if isinstance(models, dict):
            for name, card in models.items():
                check_plain_values(("models", name), card, ModelCard)
        mixes = data.get("mixes") if isinstance(data, dict) else None
        if isinstance(mixes, dict):
            for name, mix in mixes.items():
                check_plain_values(("mixes", name), mix, Mix)
        if isinstance(data, dict):
            check_plain_values(("settings",), data.get("settings"), Settings)
        return data

    @model_validator(mode="after")
    def _references(self) -> Config:
        if not self.models:
            raise ValueError("at least one model is needed")
        if not self.mixes:
            raise ValueError("at least one mix is needed")
        check_names(self.models, self.mixes)
        for name, card in self.models.items():
            check_package(name, card)
            check_upstream(name, card)
        self.models = {name: complete_card(name, card) for name, card in self.models.items()}
        for mix_name, mix in self.mixes.items():
            for fld, ref in model_refs(mix):
                if ref not in self.models:
                    path = tuple(int(p) if p.isdigit() else p for p in fld.split("."))
                    raise FieldProblem(("mixes", mix_name, *path),
                                        f"unknown model {ref!r}{_did_you_mean(ref, self.models)}")
            check_listed(mix_name, mix)
            if mix.collaborate is not None and mix.collaborate not in self.mixes:
                raise FieldProblem(("mixes", mix_name, "collaborate"), f"unknown mix {mix.collaborate!r}")
            if not self.pool(mix):
                raise FieldProblem(("mixes", mix_name, "constraints", "allowed_models"),
                                    f"allows none of the mix's models ({', '.join(mix.models or [])})")
        check_collaboration_cycles(self.mixes)
        return self

    def mix(self, name: str) -> Mix:
        return self.mixes[name]

    @property
    def default_mix(self) -> str | None:
        """The mix named ``default`` (what ``moai chat`` and ``moai route`` use without ``--mix``, and what /readyz
        checks), or None when the file names none."""
        return DEFAULT_MIX if DEFAULT_MIX in self.mixes else None

    def pool(self, mix: Mix) -> list[ModelCard]:
        """The models a mix may draw from, after its pool and allowed-model constraint."""
        names = mix.models or list(self.models)
        if mix.constraints.allowed_models is not None:
            names = [n for n in names if n in mix.constraints.allowed_models]
        return [self.models[n] for n in names]


DEFAULT_MIX = "default"
# the keys of a model card or a mix that hold a section (or, for fallbacks, a list whose absence means the gate's
# ranking): left empty, each means what leaving it out means
EMPTY_SECTIONS = {"model": ("price",), "mix": ("weights", "constraints", "fallbacks")}


def _without_nulls(section: Any, keys: tuple[str, ...]) -> Any:
    """``section`` without those of ``keys`` whose value is null (a copy; anything but a mapping as it is)."""
    if not isinstance(section, dict) or not any(k in section and section[k] is None for k in keys):
        return section
    return {k: v for k, v in section.items() if not (k in keys and v is None)}


# ---------------------------------------------------------------- loading with line-precise errors


def _line_of(node: Any, loc: tuple[int | str, ...]) -> int | None:
    """Walk ruamel's commented containers along a pydantic error path; return a 1-based line."""
    line: int | None = None
    for key in loc:
        lc = getattr(node, "lc", None)
        if lc is None:
            break
        try:
            if hasattr(node, "keys") and key in node:  # a mapping's key may be a number in YAML
                line = lc.key(key)[0] + 1
                node = node[key]
            elif isinstance(key, int) and isinstance(node, list) and 0 <= key < len(node):
                line = lc.item(key)[0] + 1
                node = node[key]
            else:
                break
        except (KeyError, AttributeError, TypeError):
            break
    if line is None and getattr(node, "lc", None) is not None:
        line = node.lc.line + 1
    return line


_LEGACY_TAGS = {"str", "list[str]", "Pick", "int", "float", "bool", "none"}


def _is_branch_tag(part: int | str) -> bool:
    """pydantic's names for union branches and wrapped validators: ours are ``<...>``, smart unions use the type."""
    return isinstance(part, str) and (
        (part.startswith("<") and part.endswith(">")) or part in _LEGACY_TAGS
        or part == "[key]" or part.startswith(("literal[", "function-", "list[", "dict["))
    )


def _child(node: Any, key: int | str) -> Any:
    if hasattr(node, "keys"):
        return node.get(key)
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return node[key]
    return None


def _clean_loc(loc: tuple[int | str, ...], data: Any = None) -> tuple[int | str, ...]:
    """Drop pydantic's union-branch tags (e.g. '<pick>', 'str') so the path matches the YAML. A part that is a
    key of the YAML at that place is kept whatever it looks like (a model may be called ``str``)."""
    out: list[int | str] = []
    node = data
    for part in loc:
        if _is_branch_tag(part) and not (hasattr(node, "keys") and part in node):
            continue
        out.append(part)
        node = _child(node, part)
    return tuple(out)


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def _field_names(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the mapping at ``loc`` may hold (for "did you mean"): walk the models' annotations from Config."""
    forms: list[Any] = [Config]
    for key in loc:
        nxt: list[Any] = []
        for tp in forms:
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                field = tp.model_fields.get(key) if isinstance(key, str) else None
                if field is not None:
                    nxt += annotation_forms(field.annotation)
            elif get_origin(tp) is dict:
                nxt += annotation_forms(get_args(tp)[1])
            elif get_origin(tp) is list and isinstance(key, int):
                nxt += annotation_forms(get_args(tp)[0])
        forms = nxt
    for tp in forms:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return [n for n, f in tp.model_fields.items() if not f.exclude]
    return []


def _choose_error(errors: list[Any], data: Any) -> Any:
    """The error to show. pydantic lists a required field before the unknown keys beside it, so a typo such as
    ``modles:`` would read "models: Field required" and never name the typo: report the typo then."""
    first = errors[0]
    if first["type"] == "missing":
        missing = _clean_loc(tuple(first["loc"]), data)
        for err in errors[1:]:
            loc = _clean_loc(tuple(err["loc"]), data)
            if (err["type"] == "extra_forbidden" and loc[:-1] == missing[:-1]
                    and _did_you_mean(str(loc[-1]), [missing[-1]])):
                return err
    return first


def _message(err: Any, loc: tuple[int | str, ...]) -> str:
    """pydantic's message, with the key or value it meant where a name was misspelt."""
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["loc"] and err["loc"][-1] == "[key]":  # `1:` or `null:` as a model or mix name
        return f"a name must be a string, not {err.get('input')!r}; put it in quotes"
    if err["type"] == "extra_forbidden" and loc:
        names = _field_names(loc[:-1])
        # LiteLLM puts its per-token prices on the model itself: the hint then says where ours go (price:)
        if ("input_per_mtok" in names or "price" in names) and (
                unit := _per_token_hint(str(loc[-1]), err.get("input"), under_price="price" in names)):
            return f"unknown key {loc[-1]!r}: {unit}"
        hint = _did_you_mean(str(loc[-1]), names)
        if not hint and 0 < len(names) <= 8:
            hint = f"; known: {', '.join(names)}"
        return f"unknown key {loc[-1]!r}{hint}"
    if err["type"] == "literal_error" and isinstance(err.get("input"), str):
        expected = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        return msg + _did_you_mean(err["input"], expected)
    return msg


# LiteLLM's price keys (USD per token) and the key of the same price here (USD per million tokens)
_PER_TOKEN_KEYS = {"input_cost_per_token": "input_per_mtok", "output_cost_per_token": "output_per_mtok"}


def _per_token_hint(key: str, value: Any, under_price: bool = False) -> str | None:
    """For a price given per token (LiteLLM's ``input_cost_per_token``): the unit here and the figure to write,
    under ``price:`` when it was written on the model card itself."""
    ours = _PER_TOKEN_KEYS.get(key)
    if ours is None:
        return None
    try:
        figure = f"{float(value) * 1e6:.10g}"
    except (TypeError, ValueError):
        figure = None
    if figure is None:
        converted = f"{ours} (the per-token price × 1,000,000)" + (" under price:" if under_price else "")
    else:
        converted = f"price: {{{ours}: {figure}}}" if under_price else f"{ours}: {figure}"
    return f"prices here are USD per million tokens, not per token; write {converted}"


def _one_line(text: str) -> str:
    """Errors are one line: escape newlines (a YAML key may contain one)."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


# YAML's own tags (``!!str``): ruamel's round-trip loader keeps a ``!!str`` scalar as a TaggedScalar, which no
# field takes ("Input should be a valid string", or a model called "TaggedScalar(...)")
_CORE_TAG = "tag:yaml.org,2002:"
_STANDARD_SCALARS = ("str", "int", "float", "bool", "null")
_UNKNOWN_TAG = ("unknown YAML tag '{tag}'; mix instructions read only YAML's standard tags (!!str, !!int, !!float, "
                "!!bool, !!null): write the value without it")


def _shown_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_CORE_TAG) if tag.startswith(_CORE_TAG) else tag


def _plain_scalar(value: TaggedScalar, where: str) -> Any:
    """A tagged scalar as the plain value its standard tag says (``!!str 123`` is "123"); any other tag is
    refused: mix instructions define none, and a value kept under it would be read as something else."""
    tag = value.tag.value or ""
    if not tag.startswith(_CORE_TAG) or tag.removeprefix(_CORE_TAG) not in _STANDARD_SCALARS:
        raise ConfigError(f"{where}: {_UNKNOWN_TAG.format(tag=_shown_tag(tag))}")
    if tag == _CORE_TAG + "str":
        return str(value.value)
    try:
        return YAML(typ="rt").load(f"!<{tag}> {json.dumps(str(value.value))}")
    except (YAMLError, ValueError, KeyError):
        raise ConfigError(f"{where}: {str(value.value)!r} is not a valid {_shown_tag(tag)}") from None


def _untagged(node: Any, source: str, loc: tuple[Any, ...] = (), line: int = 1) -> Any:
    """``node`` with every tagged scalar (values and keys) read as its plain value, in place where it can be (so
    that line numbers stay); a tagged mapping or list, or an unknown tag, is one line naming its place."""
    def where(at: tuple[Any, ...], at_line: int) -> str:
        return f"{source}:{at_line}: " + (_one_line(".".join(str(p) for p in at)) or "(top level)")

    if isinstance(node, TaggedScalar):
        return _plain_scalar(node, where(loc, line))
    tag = getattr(getattr(node, "tag", None), "value", None)
    if isinstance(node, (dict, list)) and tag and not tag.startswith(_CORE_TAG):
        raise ConfigError(f"{where(loc, line)}: {_UNKNOWN_TAG.format(tag=_shown_tag(tag))}")
    if isinstance(node, CommentedMap):
        keys = list(node)
        if any(isinstance(k, TaggedScalar) for k in keys):  # a key is replaced: rebuild in order, lines kept
            renamed = CommentedMap()
            renamed._yaml_set_line_col(node.lc.line, node.lc.col)
            if renamed.lc.data is None:
                renamed.lc.data = {}
            for k in keys:
                at = _key_line(node, k, line)
                new = _plain_scalar(k, where((*loc, k.value), at)) if isinstance(k, TaggedScalar) else k
                if new in renamed:
                    raise ConfigError(f"{where(loc, at)}: duplicate key {new!r}")
                renamed[new] = node[k]
                if node.lc.data and k in node.lc.data:
                    renamed.lc.data[new] = node.lc.data[k]
            node = renamed
        for k in list(node):
            value = node[k]
            plain = _untagged(value, source, (*loc, k), _key_line(node, k, line))
            if plain is not value:  # (a key merged in from an anchor ``<<: *x`` is left where it is otherwise)
                node[k] = plain
    elif isinstance(node, CommentedSeq):
        for i in range(len(node)):
            value = node[i]
            at = node.lc.item(i)[0] + 1 if node.lc.data and i in node.lc.data else line
            plain = _untagged(value, source, (*loc, i), at)
            if plain is not value:
                node[i] = plain
    return node


def _key_line(node: CommentedMap, key: Any, default: int) -> int:
    """The 1-based line of a mapping's key; a key merged in (``<<: *anchor``) has none of its own here."""
    data = node.lc.data
    return data[key][0] + 1 if data and key in data else default


def _bad_scalar_line(text: str) -> int:
    """The line of the first scalar its tag cannot read (``!!int abc``): ruamel raises without a place."""
    def walk(node: Any) -> int | None:
        if isinstance(node, ScalarNode):
            if node.tag in (_CORE_TAG + "int", _CORE_TAG + "float", _CORE_TAG + "bool"):
                try:
                    YAML(typ="rt").load(f"!<{node.tag}> {json.dumps(node.value)}")
                except (YAMLError, ValueError, KeyError):
                    return node.start_mark.line + 1
            return None
        if isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = node.value if isinstance(node, SequenceNode) else []
        for child in children:
            if (line := walk(child)) is not None:
                return line
        return None

    try:
        root = YAML(typ="rt").compose(text)
    except (YAMLError, RecursionError):
        return 1
    return (walk(root) if root is not None else None) or 1


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate mix instructions; raise ConfigError with ``file:line: field: problem``."""
    return _parse(text, source)[0]


def _parse(text: str, source: str) -> tuple[Config, Any]:
    """The config and the YAML it was read from (for the line of a field)."""
    try:
        data = YAML(typ="rt").load(text)
    except MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else "?"
        raise ConfigError(f"{source}:{line}: YAML syntax: {_one_line(str(e.problem))}") from None
    except YAMLError as e:  # e.g. control characters (ReaderError)
        raise ConfigError(f"{source}:1: YAML syntax: {_one_line(str(e))}") from None
    except RecursionError:
        raise ConfigError(f"{source}:1: YAML syntax: nested too deeply") from None
    except TypeError:  # ruamel builds a mapping whose key is a list or mapping ({[a]: 1}) and cannot hash it
        raise ConfigError(f"{source}:1: YAML syntax: a key must be a plain value, not a list or mapping") from None
    except (ValueError, KeyError) as e:  # a standard tag that cannot read its value: !!int abc, !!bool maybe
        raise ConfigError(f"{source}:{_bad_scalar_line(text)}: YAML syntax: a tagged value does not read as its "
                          f"tag says ({_one_line(str(e))})") from None
    try:
        data = _untagged(data, source)
    except RecursionError:
        raise ConfigError(f"{source}:1: YAML syntax: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the file must be a mapping with 'models' and 'mixes'")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        err = _choose_error(e.errors(), data)
        loc = _clean_loc(tuple(err["loc"]), data)
        msg = _message(err, loc)
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldProblem):
            loc, msg = loc + cause.loc, cause.problem
        elif not loc and ": " in msg and msg.split(": ", 1)[0].count(".") >= 1:
            # cross-field errors name their own path: "mixes.d.models: unknown model 'b'"
            path, msg = msg.split(": ", 1)
            loc = tuple(int(p) if p.isdigit() else p for p in path.split("."))
        try:
            line = _line_of(data, loc) or 1
        except RecursionError:
            line = 1
        field = _one_line(".".join(str(p) for p in loc)) or "(top level)"
        msg = _one_line(msg)
        raise ConfigError(f"{source}:{line}: {field}: {msg}") from None
    cfg.source = source
    return cfg, data


def _resolve_paths(cfg: Config, base: Path) -> None:
    """Relative file names in a config (replay ``records``, a local model's ``path``, ``settings.gate``) mean
    the config file's folder, not wherever the command happens to run; absolute and ``~`` paths stay as written."""

    def resolve(name: str) -> str:
        return name if Path(name).expanduser().is_absolute() else str(base / name)

    for name, card in cfg.models.items():
        update: dict[str, Any] = {}
        if card.records:
            update["records"] = [resolve(r) for r in card.records]
        if card.path:
            update["path"] = resolve(card.path)
        if update:
            cfg.models[name] = card.model_copy(update=update)
    if cfg.settings.gate:
        cfg.settings.gate = resolve(cfg.settings.gate)


def load_config(path: str | Path | None = None) -> Config:
    """Load a mix-instructions file, or the embedded default when ``path`` is None."""
    if path is None:
        text = resources.files("moai").joinpath("default_config.yaml").read_text()
        return parse_config(text, "<embedded default_config.yaml>")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}:0: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:  # a binary file, or another encoding: YAML here is UTF-8
        line = e.object[: e.start].count(b"\n") + 1
        raise ConfigError(f"{p}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    cfg, data = _parse(text, str(p))
    _resolve_paths(cfg, p.parent.absolute())
    _check_records(cfg, data)
    return cfg


def _check_records(cfg: Config, data: Any) -> None:
    """A replay model answers only from its records files: one that does not exist used to be a warning, then
    /readyz said ready and every request to the model failed (502); one with a bad line failed each request."""
    from moai.config_checks import replay_records_problem

    for name, card in cfg.models.items():
        if card.provider != "replay":
            continue
        if (found := replay_records_problem(card)) is not None:
            i, problem = found
            loc = ("models", name, "records", i)
            line = _line_of(data, loc) or 1
            raise ConfigError(f"{cfg.source}:{line}: {_one_line('.'.join(map(str, loc)))}: {_one_line(problem)}")
