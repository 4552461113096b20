"""The sandbox's own limits: bounded output, a deadline that holds, nothing left running, the guard's reach."""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import pytest

from moai import sandbox
from moai.sandbox import run_python

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process-tree checks read /proc")


@pytest.fixture
def without_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a host where bubblewrap cannot run (user namespaces disabled), the operator not opted in."""
    monkeypatch.setattr(sandbox._Probe, "result", (None, "simulated: user namespaces are disabled"))
    monkeypatch.delenv(sandbox.ISOLATION_ENV, raising=False)


@pytest.fixture
def hook_only(without_bwrap: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guarded programs behind the audit hook and process limits alone (``MOAI_SANDBOX=process``)."""
    monkeypatch.setenv(sandbox.ISOLATION_ENV, "process")


def _gone(pid: int, wait_s: float = 2.0) -> bool:
    """The process no longer runs (it is gone, or a zombie nobody has reaped yet)."""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _spawns(pidfile: Path, detach: str, then: str) -> str:
    """A program whose forked child runs ``detach``, records its pid and sleeps; the parent waits for the pid
    file, then runs ``then``."""
    return (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        f"    {detach}\n"
        f"    open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "    time.sleep(10)\n"
        "    os._exit(0)\n"
        f"while not os.path.exists({str(pidfile)!r}):\n"
        "    time.sleep(0.01)\n"
        f"{then}\n"
    )


def test_endless_output_is_stopped_without_filling_the_parents_memory() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    ok, out = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", timeout_s=5.0)
    assert not ok and "printed more than" in out
    assert time.monotonic() - start < 3.0  # stopped at the output cap, not at the deadline
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100


def test_a_slow_endless_printer_stops_at_the_deadline() -> None:
    start = time.monotonic()
    ok, out = run_python("import time\nwhile True:\n    print('y' * 100)\n    time.sleep(0.001)\n", timeout_s=1.0)
    assert (ok, out) == (False, "timed out after 1s")
    assert time.monotonic() - start < 2.5


def test_long_output_keeps_its_tail() -> None:
    ok, out = run_python("for i in range(200000):\n    print(i)\n", timeout_s=10.0, tail_chars=14)
    assert ok and out == "199998\n199999\n"
    ok, out = run_python("print('é' * 1000)", tail_chars=4)
    assert ok and out == "ééé\n"


def test_a_detached_grandchild_does_not_hold_the_deadline(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    ok, out = run_python(_spawns(pidfile, "os.setsid()", "while True:\n    pass"), timeout_s=1.5)
    assert (ok, out) == (False, "timed out after 1.5s")
    assert time.monotonic() - start < 3.0
    assert _gone(int(pidfile.read_text()))


def test_a_program_that_leaves_a_detached_grandchild_returns_when_it_exits(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    ok, out = run_python(_spawns(pidfile, "os.setsid()", "print('done')"), timeout_s=5.0)
    assert (ok, out) == (True, "done\n")
    assert time.monotonic() - start < 3.0
    assert _gone(int(pidfile.read_text()))


def test_nothing_the_program_started_outlives_it(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    # another process group, output closed: the pipe reaches EOF, but the process is still in the session
    program = _spawns(pidfile, "os.setpgid(0, 0); os.close(1); os.close(2)", "print('done')")
    assert run_python(program, timeout_s=5.0) == (True, "done\n")
    assert _gone(int(pidfile.read_text()))


def test_output_limit_is_reported_as_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "OUTPUT_LIMIT_BYTES", 1 << 20)
    ok, out = run_python("print('z' * (2 << 20))\n", timeout_s=5.0)
    assert not ok and out == "stopped: printed more than 1 MiB"


@pytest.mark.parametrize("program, blocked", [
    ("import os\nos.mkdir({out!r} + '/made')", "os.mkdir"),
    ("import os\nos.makedirs({out!r} + '/made/deeper')", "os.mkdir"),
    ("import os\nos.utime({out!r} + '/victim', (0, 0))", "os.utime"),
    ("import os\nfd = os.open({out!r} + '/victim', os.O_RDONLY)\nos.utime(fd, (0, 0))", "os.utime"),
    ("import os\nfd = os.open({out!r}, os.O_RDONLY)\nos.mkdir('made', dir_fd=fd)", "writing outside"),
    ("import os\nfd = os.open({out!r}, os.O_RDONLY)\nos.open('made', os.O_WRONLY | os.O_CREAT, dir_fd=fd)",
     "writing outside"),
    ("import os\nos.setxattr({out!r} + '/victim', 'user.moai', b'1')", "os.setxattr"),
    ("import os\nos.close(os.open({out!r} + '/victim', os.O_RDONLY | os.O_TRUNC))", "writing outside"),
    ("import sqlite3\nsqlite3.connect({out!r} + '/made.db').execute('create table t(x)')", "a database outside"),
    ("import os\nos.mkfifo({out!r} + '/made')", "special files"),
    ("import sys\nsys.modules['posix'].mknod({out!r} + '/made')", "special files"),
])
def test_guarded_programs_cannot_change_directories_or_times_outside(tmp_path: Path, program: str, blocked: str,
                                                                       hook_only: None) -> None:
    """The audit hook on its own (in bubblewrap these paths do not even exist: test_sandbox_isolation)."""
    victim = tmp_path / "victim"
    victim.write_text("x")
    os.utime(victim, (1_000_000, 1_000_000))
    ok, out = run_python(program.format(out=str(tmp_path)), timeout_s=10, guarded=True)
    assert not ok and "PermissionError" in out and blocked in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim"]
    assert victim.stat().st_mtime == 1_000_000


def test_guarded_programs_may_make_directories_inside_their_scratch_dir() -> None:
    prog = ("import os\nos.makedirs('a/b')\nos.utime('a')\nopen('a/b/f', 'w').write('1')\n"
            "os.chdir('a')\nprint(open('b/f').read(), sorted(os.listdir('.')))")
    assert run_python(prog, timeout_s=10, guarded=True) == (True, "1 ['b']\n")
