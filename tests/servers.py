"""Helpers for tests that run real servers on 127.0.0.1 (imported by tests as ``servers``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from stub_openai import free_port

__all__ = ["ROOT", "SHARED", "MoaiServer", "free_port", "spawn", "start_moai", "stop", "wait_http"]

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


class MoaiServer:
    def __init__(self, url: str, db: Path, proc: subprocess.Popen[bytes]) -> None:
        self.url, self.db, self.proc = url, db, proc

    @property
    def base(self) -> str:
        return self.url.removesuffix("/v1")


def start_moai(config_text: str, tmp: Path, env: dict[str, str] | None = None,
               database_url: str | None = None, args: tuple[str, ...] = ()) -> MoaiServer:
    cfg = tmp / "mix.yaml"
    cfg.write_text(config_text)
    db = tmp / "moai.db"
    port = free_port()
    cmd = [sys.executable, "-m", "moai.cli", "serve", "--config", str(cfg), "--port", str(port),
           "--database-url", database_url or f"sqlite:///{db}", "--log-level", "warning", *args]
    log = tmp / "moai.log"
    proc = spawn(cmd, log, env)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, log=log)
    return MoaiServer(f"http://127.0.0.1:{port}/v1", db, proc)
