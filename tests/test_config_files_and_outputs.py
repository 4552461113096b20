"""Files the mix instructions and the operator commands name: a replay model's records that are not there, a
config with no ``default`` mix, a telemetry database path with a typo, a plot asked for as PDF or SVG."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import one_line_error
from typer.testing import CliRunner

from moai.cli import app
from moai.config import ConfigError, load_config, parse_config

ROUTE = "mixes:\n  default: {strategy: route}\n"


# ---------------------------------------------------------------- replay records and local model files


def test_a_replay_model_s_missing_records_are_refused_at_load(tmp_path: Path) -> None:
    """Only a warning: the server then said ready and answered every request 502."""
    path = tmp_path / "mix.yaml"
    path.write_text("models:\n  r:\n    provider: replay\n    records:\n      - here.jsonl\n      - nope.jsonl\n"
                    + ROUTE)
    (tmp_path / "here.jsonl").write_text("")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == (f"{path}:6: models.r.records.1: {tmp_path / 'nope.jsonl'} does not exist; a replay model "
                            "answers only from its records"), str(e.value)
    one_line_error(CliRunner().invoke(app, ["config", "check", str(path)]), "mix.yaml:6: models.r.records.1")
    (tmp_path / "nope.jsonl").mkdir()
    with pytest.raises(ConfigError, match="nope.jsonl is not a file"):
        load_config(path)


def test_records_that_exist_load_and_a_missing_gguf_is_a_warning(tmp_path: Path) -> None:
    """Guard: a local model's file may be put in place after the check (as a zoo package is pulled), so it stays a
    warning; /readyz leaves the model out until it is there."""
    (tmp_path / "rec.jsonl").write_text("")
    path = tmp_path / "mix.yaml"
    path.write_text("models:\n  r: {provider: replay, records: [rec.jsonl]}\n"
                    "  l: {provider: local, path: models/m.gguf}\n" + ROUTE)
    assert load_config(path).models["r"].records == [str(tmp_path / "rec.jsonl")]
    r = CliRunner().invoke(app, ["config", "check", str(path)])
    assert r.exit_code == 0, r.output
    assert f"no such file for: l ({tmp_path / 'models/m.gguf'})" in r.output, r.output


# ---------------------------------------------------------------- the default mix


def test_config_check_notes_a_file_without_a_default_mix(tmp_path: Path) -> None:
    """It said ok; `moai route` then failed "unknown mix 'default'" and /readyz picked the first mix unsaid."""
    path = tmp_path / "mix.yaml"
    path.write_text('models: {a: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}}\n'
                    "mixes: {foo: {strategy: route}, bar: {strategy: route}}\n")
    r = CliRunner().invoke(app, ["config", "check", str(path)])
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    notes = [ln for ln in r.output.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "no mix named 'default' (mixes: foo, bar)" in notes[0], r.output
    assert "/readyz checks every mix" in notes[0]
    assert parse_config(path.read_text()).default_mix is None
    path.write_text(path.read_text().replace("foo:", "default:"))
    r = CliRunner().invoke(app, ["config", "check", str(path)])
    assert r.exit_code == 0 and "note:" not in r.output, r.output
    assert parse_config(path.read_text()).default_mix == "default"


# ---------------------------------------------------------------- databases the commands only read


@pytest.mark.parametrize("args", [["list"], ["revoke", "mk_x"], ["delete", "mk_x"]])
def test_keys_commands_do_not_create_a_mistyped_database(tmp_path: Path, args: list[str]) -> None:
    """`keys list` with a typo in the path made an empty database and listed no keys."""
    typo = tmp_path / "typo.db"
    r = CliRunner().invoke(app, ["keys", *args, "--database-url", f"sqlite:///{typo}"])
    one_line_error(r, f"{typo} does not exist")
    assert not typo.exists() and not list(tmp_path.iterdir())


def test_keys_commands_read_a_database_that_exists(tmp_path: Path) -> None:
    """Guard: `keys create` makes the database; list and revoke then read it."""
    url = f"sqlite:///{tmp_path / 'moai.db'}"
    r = CliRunner().invoke(app, ["keys", "create", "--name", "ci", "--database-url", url])
    assert r.exit_code == 0, r.output
    key_id = r.output.split("created key ", 1)[1].split()[0]
    r = CliRunner().invoke(app, ["keys", "list", "--database-url", url])
    assert r.exit_code == 0 and key_id in r.output, r.output
    r = CliRunner().invoke(app, ["keys", "revoke", key_id, "--database-url", url])
    assert r.exit_code == 0 and f"revoked {key_id}" in r.output, r.output


# ---------------------------------------------------------------- plot formats


@pytest.mark.parametrize(("name", "magic"), [("r.pdf", b"%PDF"), ("r.svg", b"<?xml"), ("r.PNG", b"\x89PNG"),
                                             ("r", b"\x89PNG")])
def test_a_plot_is_written_in_the_format_its_name_asks_for(tmp_path: Path, name: str, magic: bytes) -> None:
    """`moai report --plot r.pdf` wrote PNG bytes under that name."""
    from moai.telemetry.report import Report, write_plot

    write_plot(Report(None, []), tmp_path / name)
    assert (tmp_path / name).read_bytes().startswith(magic)


def test_a_plot_format_matplotlib_cannot_write_is_one_line(tmp_path: Path) -> None:
    from moai.telemetry.report import Report, plot_format, write_plot

    with pytest.raises(ValueError, match=r"cannot write a plot as \.xyz; use one of .*\.pdf.*\.png.*\.svg") as e:
        write_plot(Report(None, []), tmp_path / "r.xyz")
    assert "\n" not in str(e.value) and not (tmp_path / "r.xyz").exists()
    assert plot_format("out/r.SVG") == "svg" and plot_format("r") == "png"


def test_report_writes_its_plots_in_the_format_asked_and_refuses_one_it_cannot(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'moai.db'}"
    from moai.telemetry.store import TelemetryStore

    TelemetryStore(db).close()
    r = CliRunner().invoke(app, ["report", "--database-url", db, "--plot", str(tmp_path / "r.pdf")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")
    r = CliRunner().invoke(app, ["report", "--database-url", db, "--plot", str(tmp_path / "r.xyz")])
    one_line_error(r, "cannot write a plot as .xyz")
    assert not (tmp_path / "r.xyz").exists()


def test_route_without_a_default_mix_asks_for_one(tmp_path: Path) -> None:
    path = tmp_path / "mix.yaml"
    path.write_text('models: {a: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}}\n'
                    "mixes: {foo: {strategy: route}}\n")
    r = CliRunner().invoke(app, ["route", "hello", "-c", str(path)])
    one_line_error(r, "has no mix named 'default'; pass --mix (mixes: foo)")
    r = CliRunner().invoke(app, ["route", "hello", "-c", str(path), "--mix", "foo", "--json"])
    assert r.exit_code == 0 and '"model": "a"' in r.output, r.output
