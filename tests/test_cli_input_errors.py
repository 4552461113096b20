"""Bad input to the CLI is one line and a non-zero exit, never a traceback: configs, outputs, options, databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import one_line_error
from typer.testing import CliRunner

from moai.cli import app
from moai.config import ConfigError, load_config, parse_config
from moai.server.auth import list_keys
from moai.telemetry.database import DatabaseUnavailable
from moai.telemetry.records import RequestRecord
from moai.telemetry.store import TelemetryStore

LOCAL = """\
models:
  a: {provider: local, package: smollm2-135m, privacy: local}
  qwen2.5: {provider: local, package: nosuchpkg, privacy: local}
mixes:
  d: {strategy: route}
"""

REMOTE = """\
models:
  m: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: private}
mixes:
  default: {strategy: route}
  other: {strategy: route}
"""


@pytest.fixture()
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite database for the commands that default to MOAI_DATABASE_URL."""
    url = f"sqlite:///{tmp_path / 'moai.db'}"
    monkeypatch.setenv("MOAI_DATABASE_URL", url)
    monkeypatch.delenv("MOAI_CONFIG", raising=False)
    return url




# ---------------------------------------------------------------- config: local packages, encodings


def test_unknown_local_package_is_a_load_time_error_with_line_and_known_names() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(LOCAL, "mix.yaml")
    msg = str(e.value)
    assert msg.startswith("mix.yaml:3: models.qwen2.5.package: unknown local package 'nosuchpkg'"), msg
    assert "smollm2-135m" in msg and "qwen2.5-coder-1.5b" in msg


def test_known_local_packages_and_the_embedded_default_still_load() -> None:
    cfg = parse_config(LOCAL.replace("nosuchpkg", "qwen2.5-coder-0.5b"), "mix.yaml")
    assert cfg.models["qwen2.5"].params_b == 0.5
    assert load_config().models


def test_config_check_rejects_unknown_package(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(LOCAL)
    one_line_error(CliRunner().invoke(app, ["config", "check", str(path)]), f"{path}:3:", "nosuchpkg")


def test_non_utf8_config_is_one_line_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"x\.yaml:1: not UTF-8"):
        load_config(path)
    path.write_bytes(b"models:\n  a: {provider: local}\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"x\.yaml:3: not UTF-8"):
        load_config(path)
    one_line_error(CliRunner().invoke(app, ["config", "check", str(path)]), "not UTF-8")
    one_line_error(CliRunner().invoke(app, ["route", "hi", "--config", str(path)]), "not UTF-8")


# ---------------------------------------------------------------- report outputs


def test_report_creates_the_folders_of_its_outputs(tmp_path: Path, db: str) -> None:
    html = tmp_path / "a" / "b" / "r.html"
    png = tmp_path / "c" / "r.png"
    TelemetryStore(db)  # `moai report` reads a database; it creates none
    r = CliRunner().invoke(app, ["report", "--since", "24h", "--html", str(html), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert html.read_text().lstrip().lower().startswith("<!doctype html")
    assert png.read_bytes().startswith(b"\x89PNG")


def test_report_to_an_unwritable_path_is_one_line(tmp_path: Path, db: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    TelemetryStore(db)
    one_line_error(CliRunner().invoke(app, ["report", "--html", str(blocker / "r.html")]), "cannot write")


# ---------------------------------------------------------------- option ranges


@pytest.mark.parametrize("value", ["0", "-3", "40000"])
def test_chat_max_tokens_out_of_range_is_a_usage_error(value: str, db: str) -> None:
    r = CliRunner().invoke(app, ["chat", "hi", "--max-tokens", value])
    assert r.exit_code == 2, r.output
    assert "--max-tokens" in r.output and "ValidationError" not in r.output


@pytest.fixture()
def no_serving(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """Record what would be served instead of serving (a test must fail, not hang, when serve goes ahead)."""
    from cli_support import record_serving

    return record_serving(monkeypatch)


@pytest.mark.parametrize("value", ["99999", "-1", "65536"])
def test_serve_port_out_of_range_is_a_usage_error(value: str, db: str, no_serving: list[dict[str, object]]) -> None:
    r = CliRunner().invoke(app, ["serve", "--port", value])
    assert r.exit_code == 2, r.output
    assert "--port" in r.output and no_serving == []


# ---------------------------------------------------------------- database URLs


BAD_URLS = [
    ("bogus://x", "unknown database kind 'bogus'"),
    ("not a url", "bad database URL"),
    ("sqlite:////nonexistent/dir/x.db", "unable to open database file"),
    ("postgresql+psycopg://u:s3cret@127.0.0.1:1/db", "127.0.0.1"),
]


@pytest.mark.parametrize("url,reason", BAD_URLS)
def test_store_raises_one_line_without_the_password(url: str, reason: str) -> None:
    with pytest.raises(DatabaseUnavailable) as e:
        TelemetryStore(url)
    msg = str(e.value)
    assert reason in msg and "\n" not in msg and "s3cret" not in msg, msg


@pytest.mark.parametrize("url,reason", BAD_URLS)
@pytest.mark.parametrize("argv", [["report"], ["keys", "list"], ["feedback", "chatcmpl-x", "1"],
                                  ["serve", "--port", "1"], ["chat", "hi"]])
def test_commands_with_a_bad_database_url_fail_in_one_line(url: str, reason: str, argv: list[str],
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           no_serving: list[dict[str, object]]) -> None:
    monkeypatch.setenv("MOAI_DATABASE_URL", url)
    monkeypatch.delenv("MOAI_CONFIG", raising=False)
    line = one_line_error(CliRunner().invoke(app, argv), reason)
    assert "s3cret" not in line and no_serving == []


def test_serve_database_url_option_is_checked_before_serving(db: str, no_serving: list[dict[str, object]]) -> None:
    one_line_error(CliRunner().invoke(app, ["serve", "--database-url", "bogus://x"]), "bogus")
    assert no_serving == []


# ---------------------------------------------------------------- keys: allowed names


def test_keys_create_rejects_unknown_names_against_the_config_in_use(tmp_path: Path, db: str) -> None:
    runner = CliRunner()
    one_line_error(runner.invoke(app, ["keys", "create", "--name", "x", "--mixes", "nosuchmix"]),
                   "'nosuchmix'", "<embedded default_config.yaml>", "smollm2-135m")
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(REMOTE)
    one_line_error(runner.invoke(app, ["keys", "create", "--name", "x", "--mixes", "default,smollm2-135m",
                                       "--config", str(cfg)]), "'smollm2-135m'", str(cfg))
    one_line_error(runner.invoke(app, ["keys", "create", "--name", "x", "--mixes", " , "]), "--mixes")
    assert list_keys(TelemetryStore(db)) == []

    r = runner.invoke(app, ["keys", "create", "--name", "ok", "--mixes", "moai/other,m", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["keys", "create", "--name", "env", "--mixes", "other"], env={"MOAI_CONFIG": str(cfg)})
    assert r.exit_code == 0, r.output
    keys = {k.name: k.allowed_mixes for k in list_keys(TelemetryStore(db))}
    assert keys == {"ok": ["other", "m"], "env": ["other"]}  # stored as requests are checked: bare mix names


def test_feedback_score_off_every_scale_is_one_line(db: str) -> None:
    one_line_error(CliRunner().invoke(app, ["feedback", "chatcmpl-x", "50"]), "outside")


def test_feedback_to_a_database_that_does_not_exist_does_not_create_it(db: str, tmp_path: Path) -> None:
    """A mistyped path became a new empty database, and the request was reported unknown."""
    one_line_error(CliRunner().invoke(app, ["feedback", "chatcmpl-x", "1"]), "chatcmpl-x", "does not exist")
    assert not (tmp_path / "moai.db").exists()


def test_chat_refused_by_privacy_is_one_line_and_recorded(db: str, tmp_path: Path) -> None:
    """`moai chat` refuses as the server does (no trusted model for a card number) and keeps the refusal."""
    cfg = tmp_path / "cloud.yaml"
    cfg.write_text('models:\n  c: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: cloud}\n'
                   "mixes:\n  default: {strategy: route, constraints: {sensitive_data: local_only}}\n")
    r = CliRunner().invoke(app, ["chat", "my card is 4539 1488 0343 6467", "--config", str(cfg)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    rows = TelemetryStore(db).requests()
    assert [(x.mix, x.status, x.http_status, x.model) for x in rows] == [("default", "refused", 422, None)]


def test_route_and_chat_name_the_mixes_and_refuse_an_empty_prompt(db: str) -> None:
    runner = CliRunner()
    for args in (["route", ""], ["route", "   ", "--json"], ["chat", " "]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "the prompt is empty" in r.output and "Traceback" not in r.output, args
    for cmd in ("route", "chat"):
        r = runner.invoke(app, [cmd, "hi", "--mix", "nosuch"])
        assert r.exit_code == 2 and "unknown mix or model 'nosuch'" in r.output and "mixes: default" in r.output
        assert "/v1/models" not in r.output  # not the server's words: no server is running


def test_an_unreachable_ray_address_is_one_line_not_minutes_of_retries(tmp_path: Path) -> None:
    from moai.gate.cli import app as gate_app
    from moai.scale import RayUnreachable, _reachable

    with pytest.raises(RayUnreachable, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        _reachable("127.0.0.1:1", timeout_s=2)
    _reachable("auto")  # left to Ray
    records = Path(__file__).resolve().parents[1] / "data" / "local-zoo" / "records.jsonl"
    small = tmp_path / "r.jsonl"
    small.write_text("".join(records.read_text().splitlines(keepends=True)[:20]))
    r = CliRunner().invoke(gate_app, ["train", "--data", str(small), "--out", str(tmp_path / "g"), "--ray",
                                      "127.0.0.1:1", "--epochs", "1"])
    assert r.exit_code == 2 and "cannot reach the Ray cluster" in r.output and "Traceback" not in r.output


def test_serve_shows_moais_own_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """uvicorn configures only its own loggers: a live tuner's changes (moai.tuning.live) were dropped."""
    import logging

    from moai.cli import log_to_stderr

    logger = logging.getLogger("moai")
    saved = logger.handlers[:], logger.level
    logger.handlers.clear()
    try:
        log_to_stderr("info")
        logging.getLogger("moai.tuning.live").info("cascade: threshold 0.6 -> 0.4")
        logging.getLogger("moai.tuning.live").debug("not at info level")
        err = capsys.readouterr().err
        assert "moai.tuning.live: cascade: threshold 0.6 -> 0.4" in err and "not at info level" not in err
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])


def test_commands_use_the_database_their_config_names(tmp_path: Path, db: str) -> None:
    """A config with its own settings.database_url: keys, feedback and report work on the database that
    `moai serve --config` records to, not on MOAI_DATABASE_URL's."""
    own = f"sqlite:///{tmp_path / 'own.db'}"
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(REMOTE + f"settings:\n  database_url: '{own}'\n")
    store = TelemetryStore(own)
    store.write(RequestRecord(id="chatcmpl-own", mix="default", strategy="route", model="m", status="ok",
                              http_status=200, stream=False, prompt_tokens=3, completion_tokens=2, latency_ms=5.0))
    runner = CliRunner()
    r = runner.invoke(app, ["keys", "create", "--name", "team", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    r2 = runner.invoke(app, ["keys", "create", "--name", "via-env"], env={"MOAI_CONFIG": str(cfg)})
    assert r2.exit_code == 0, r2.output
    assert sorted(k.name for k in list_keys(TelemetryStore(own))) == ["team", "via-env"]
    assert list_keys(TelemetryStore(db)) == []
    listed = runner.invoke(app, ["keys", "list", "--config", str(cfg)])
    assert all(k.id in listed.output for k in list_keys(store))  # whole, however narrow: revoke takes it
    key_id = next(k.id for k in list_keys(store) if k.name == "team")
    assert runner.invoke(app, ["keys", "revoke", key_id, "--config", str(cfg)]).exit_code == 0
    assert next(k for k in list_keys(store) if k.name == "team").revoked_at is not None

    assert runner.invoke(app, ["feedback", "chatcmpl-own", "1", "--config", str(cfg)]).exit_code == 0
    assert [f.score for f in store.feedback_for("chatcmpl-own")] == [1.0]
    rep = runner.invoke(app, ["report", "--config", str(cfg)])
    assert rep.exit_code == 0 and "no requests recorded" not in rep.output
    assert "no requests recorded" in runner.invoke(app, ["report"]).output  # MOAI_DATABASE_URL's: empty
    # an explicit --database-url still wins over the config's
    other = f"sqlite:///{tmp_path / 'other.db'}"
    r3 = runner.invoke(app, ["keys", "create", "--name", "x", "--config", str(cfg), "--database-url", other])
    assert r3.exit_code == 0 and [k.name for k in list_keys(TelemetryStore(other))] == ["x"]


def test_feedback_on_a_declared_scale_is_stored_as_its_quality(db: str) -> None:
    """A 0-10 client's 1 is 1/10 once it says so; a bare 1 stays a thumbs-up; a score off its scale is one line."""
    store = TelemetryStore(db)
    for rid in ("chatcmpl-a", "chatcmpl-b"):
        store.write(RequestRecord(id=rid, mix="default", strategy="route", model="m", status="ok", http_status=200,
                                  stream=False, prompt_tokens=3, completion_tokens=2, latency_ms=5.0))
    runner = CliRunner()
    assert runner.invoke(app, ["feedback", "chatcmpl-a", "1", "--scale", "ten"]).exit_code == 0
    assert runner.invoke(app, ["feedback", "chatcmpl-b", "1"]).exit_code == 0
    assert [f.score for f in store.feedback_for("chatcmpl-a")] == [pytest.approx(0.1)]
    assert [f.score for f in store.feedback_for("chatcmpl-b")] == [1.0]
    one_line_error(runner.invoke(app, ["feedback", "chatcmpl-a", "7", "--scale", "thumbs"]), "thumbs scale")


def test_feedback_takes_a_responses_id_for_its_completion(db: str) -> None:
    """`POST /v1/responses` answers as resp_<hex>: the same answer as chatcmpl-<hex>, rated by either id."""
    store = TelemetryStore(db)
    store.write(RequestRecord(id="chatcmpl-abc", mix="default", strategy="route", model="m", status="ok",
                              http_status=200, stream=False, prompt_tokens=3, completion_tokens=2, latency_ms=5.0))
    assert CliRunner().invoke(app, ["feedback", "resp_abc", "-1"]).exit_code == 0
    assert [f.score for f in store.feedback_for("chatcmpl-abc")] == [-1.0]
    one_line_error(CliRunner().invoke(app, ["feedback", "resp_nope", "1"]), "resp_nope")


def test_route_and_chat_read_moai_config_as_serve_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "mix.yaml"
    cfg.write_text('models:\n  far: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", max_retries: 0}\n'
                   "mixes:\n  only: {strategy: route, models: [far]}\n")
    monkeypatch.setenv("MOAI_DATABASE_URL", f"sqlite:///{tmp_path / 'moai.db'}")
    r = CliRunner().invoke(app, ["route", "hi", "-m", "only", "--json"], env={"MOAI_CONFIG": str(cfg)})
    assert r.exit_code == 0, r.output
    assert '"far"' in r.output
    one_line_error(CliRunner().invoke(app, ["chat", "hi", "-m", "nope"], env={"MOAI_CONFIG": str(cfg)}),
                   str(cfg))  # the unknown mix is looked up in the file MOAI_CONFIG names
