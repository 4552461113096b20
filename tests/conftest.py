"""Shared fixtures: real servers on 127.0.0.1 (llama.cpp's and moai's), started and stopped here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from moai import local_models

sys.path.insert(0, str(Path(__file__).parent))
from stub_openai import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server with its output in a log file (a full pipe would block it)."""
    with log.open("wb") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 90,
              log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            out = log.read_text(errors="replace")[-2000:] if log else ""
            raise RuntimeError(f"server exited early ({proc.returncode}): {out}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    path = local_models.pull("smollm2-135m")
    return path


@pytest.fixture(scope="session")
def llama_server(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's own OpenAI-compatible server with SmolLM2, on loopback; yields its /v1 URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm_path), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "2048", "--n_threads", "1", "--model_alias", "smollm2"]
    log = tmp_path_factory.mktemp("llama") / "server.log"
    proc = spawn(cmd, log, {"OMP_WAIT_POLICY": "PASSIVE"})
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", proc, log=log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(proc)


class MoaiServer:
    def __init__(self, url: str, db: Path, proc: subprocess.Popen[bytes]) -> None:
        self.url, self.db, self.proc = url, db, proc

    @property
    def base(self) -> str:
        return self.url.removesuffix("/v1")


def start_moai(config_text: str, tmp: Path, env: dict[str, str] | None = None,
               database_url: str | None = None) -> MoaiServer:
    cfg = tmp / "mix.yaml"
    cfg.write_text(config_text)
    db = tmp / "moai.db"
    port = free_port()
    cmd = [sys.executable, "-m", "moai.cli", "serve", "--config", str(cfg), "--port", str(port),
           "--database-url", database_url or f"sqlite:///{db}", "--log-level", "warning"]
    log = tmp / "moai.log"
    proc = spawn(cmd, log, env)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, log=log)
    return MoaiServer(f"http://127.0.0.1:{port}/v1", db, proc)


@pytest.fixture(scope="session")
def moai_over_llama(llama_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoaiServer]:
    """moai's server whose only model is llama.cpp's server, through the openai_compat provider."""
    tmp = tmp_path_factory.mktemp("moai")
    text = f"""
models:
  smol:
    provider: openai_compat
    endpoint: {llama_server}
    model: smollm2
    privacy: private
    params_b: 0.135
    context: 2048
mixes:
  default:
    strategy: route
    max_tokens: 32
"""
    server = start_moai(text, tmp)
    try:
        yield server
    finally:
        stop(server.proc)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL on loopback, started (and installed if needed) by the project's own script."""
    import tempfile

    data = tempfile.mkdtemp(prefix="moai-pg-")
    port = free_port()
    script = ROOT / "scripts" / "postgres.sh"
    url = subprocess.run(["bash", str(script), "start", data, str(port)], check=True, capture_output=True,
                         text=True).stdout.strip().splitlines()[-1]
    try:
        yield url
    finally:
        subprocess.run(["bash", str(script), "stop", data], check=False, capture_output=True)
        subprocess.run(["rm", "-rf", data], check=False)


@pytest.fixture
def fresh_postgres(postgres_url: str) -> Iterator[str]:
    """An empty database on the shared server, per test."""
    import uuid

    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        admin.dispose()
