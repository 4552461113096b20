"""Shared fixtures: real servers on 127.0.0.1 (llama.cpp's and moai's), started and stopped here."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from moai import local_models

sys.path.insert(0, str(Path(__file__).parent))
from servers import ROOT, MoaiServer, spawn, start_moai, stop, wait_http  # noqa: E402
from stub_openai import free_port  # noqa: E402


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
