"""A replay model's records: a bad line is refused when the mix instructions load, as ``file:line: problem``, and
never reaches a request as a traceback; the records are read once and kept."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from cli_support import one_line_error, record_serving
from typer.testing import CliRunner

import moai.providers.replay as replay
from moai.cli import app
from moai.config import ConfigError, load_config, parse_config
from moai.providers import make_provider
from moai.providers.base import ChatParams, ProviderUnavailable

GOOD = json.dumps({"id": "x", "prompt": "hi", "responses": {"a": "yo"}, "scores": {"a": 1},
                   "tokens": {"a": {"input": 3, "output": 1}}}) + "\n"
ROUTE = "mixes:\n  default: {strategy: route}\n"


def _config(tmp_path: Path, records: str | bytes) -> tuple[Path, Path]:
    rec = tmp_path / "rec.jsonl"
    if isinstance(records, bytes):
        rec.write_bytes(records)
    else:
        rec.write_text(records)
    path = tmp_path / "mix.yaml"
    path.write_text("models:\n  a: {provider: replay, records: [rec.jsonl]}\n" + ROUTE)
    return path, rec


@pytest.fixture(autouse=True)
def _fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No reading kept from another test, and a database of this test's own for the commands that record."""
    getattr(replay, "_READ", {}).clear()
    monkeypatch.setenv("MOAI_DATABASE_URL", f"sqlite:///{tmp_path / 'moai.db'}")
    monkeypatch.delenv("MOAI_CONFIG", raising=False)
    monkeypatch.delenv("MOAI_PRIVACY_MODEL", raising=False)


@pytest.mark.parametrize(("body", "problem"), [
    (GOOD + "{bad json\n", ":2: invalid JSON (Expecting property name enclosed in double quotes at column 2)"),
    (GOOD + "[1, 2]\n", ":2: expected a JSON object, got list"),
    (GOOD + '{"prompt": 3, "responses": {"a": "x"}}\n', ":2: record 'line 2': missing or non-string 'prompt'"),
    (GOOD + '{"id": "y", "prompt": "yo", "responses": ["x"]}\n', ":2: record 'y': 'responses' must be an object"),
    (GOOD + '{"id": "z", "prompt": "yo", "tokens": {"a": 5}}\n', ":2: record 'z': 'tokens' must be an object"),
])
def test_config_check_refuses_a_bad_line_at_its_line(tmp_path: Path, body: str, problem: str) -> None:
    """`config check` said ok; `moai chat` then printed a traceback and failed the model on each request."""
    path, rec = _config(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}:2: models.a.records.0: {rec}{problem}"), str(e.value)
    assert "\n" not in str(e.value)
    one_line_error(CliRunner().invoke(app, ["config", "check", str(path)]), f"{rec}{problem}")


def test_chat_and_serve_refuse_binary_records_before_any_request(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of random bytes: `moai chat` printed a UnicodeDecodeError traceback and exited 1."""
    path, rec = _config(tmp_path, b"\x00\xa6\xff\xfe garbage \x81\n")
    line = one_line_error(CliRunner().invoke(app, ["chat", "hi", "-c", str(path)]), f"{rec}: not UTF-8 text")
    assert line.startswith(f"error: {path}:2: models.a.records.0: "), line
    served = record_serving(monkeypatch)
    one_line_error(CliRunner().invoke(app, ["serve", "-c", str(path)]), f"{rec}: not UTF-8 text")
    assert served == []
    assert not (tmp_path / "moai.db").exists()  # nothing was asked, nothing recorded


def test_records_without_ids_and_blank_lines_still_answer(tmp_path: Path) -> None:
    """Guard: a replay finds a record by its prompt; files written by hand with no ``id`` loaded before and do."""
    path, _ = _config(tmp_path, '\n{"prompt": "hi", "responses": {"a": "hello there"}}\n\n' + GOOD)
    r = CliRunner().invoke(app, ["chat", "hi", "-c", str(path)])
    assert r.exit_code == 0 and "hello there" in r.output, r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("nulls", ['"id": null', '"scores": null', '"id": null, "scores": null'])
def test_records_with_a_null_id_or_scores_still_answer(tmp_path: Path, nulls: str) -> None:
    """A replay needs the prompt and the responses: a null ``id`` or ``scores`` loaded before, and still does."""
    path, _ = _config(tmp_path, f'{{{nulls}, "prompt": "hi", "responses": {{"a": "hello there"}}}}\n')
    r = CliRunner().invoke(app, ["chat", "hi", "-c", str(path)])
    assert r.exit_code == 0 and "hello there" in r.output, r.output


def _ask(provider: Any, prompt: str = "hi") -> str:
    return asyncio.run(provider.complete(ChatParams(messages=[{"role": "user", "content": prompt}]))).text


def _count_reads(monkeypatch: pytest.MonkeyPatch, rec: Path) -> list[int]:
    """A list that grows by one each time ``rec`` is opened (``read_text`` opens it too)."""
    reads: list[int] = []
    real_open = Path.open

    def opened(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if self == rec and "r" in mode:
            reads.append(1)
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", opened)
    return reads


def test_an_unchecked_bad_file_fails_the_call_in_one_line_and_is_not_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mix instructions not loaded from a file (``parse_config``) are not checked for records: the call fails as
    the model unusable, one line naming the file and line, and the file is parsed again only once it has changed."""
    rec = tmp_path / "rec.jsonl"
    rec.write_text(GOOD + "{bad json\n")
    cfg = parse_config(f"models:\n  a: {{provider: replay, records: [{rec}]}}\n" + ROUTE)
    provider = make_provider(cfg.models["a"])
    reads = _count_reads(monkeypatch, rec)
    for _ in range(3):
        with pytest.raises(ProviderUnavailable) as e:
            _ask(provider)
        assert str(e.value).startswith(f"a: bad records: {rec}:2: invalid JSON"), str(e.value)
        assert e.value.final and e.value.__cause__ is None
    assert len(reads) == 1
    rec.write_text(GOOD + "\n")  # fixed: read again, and answered
    assert _ask(provider) == "yo" and len(reads) == 2


def test_records_are_read_once_the_config_check_s_reading_reused(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The index was rebuilt from the files on each call that had failed; now the check's reading serves the
    provider, and a file rewritten later is read by the next process: what is served is what the check passed."""
    path, rec = _config(tmp_path, GOOD)
    reads = _count_reads(monkeypatch, rec)
    cfg = load_config(path)
    provider = make_provider(cfg.models["a"])
    assert [_ask(provider) for _ in range(3)] == ["yo"] * 3
    assert len(reads) == 1
    rec.write_text(GOOD.replace('"yo"', '"changed"') + "{bad json\n")
    assert _ask(provider) == "yo" and len(reads) == 1
    with pytest.raises(ConfigError, match=r"rec.jsonl:2: invalid JSON"):  # a new process checks the new file
        load_config(path)
