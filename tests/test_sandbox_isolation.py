"""Guarded programs run in bubblewrap: what a prompt-steered program could try against the gateway, tried.

Each attack runs as written and again after disabling the audit hook from Python (the closure rewrite below
needs no ctypes), since the hook is defence in depth and the namespaces are the boundary. Then: what happens
where bubblewrap cannot run, and programs kept off the event loop's shared executor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
from stub_openai import Script
from test_sandbox import hook_only, without_bwrap  # noqa: F401 - the sandbox tests' fixtures, used by name

import moai
from moai import sandbox
from moai.bench import code_harness, graders
from moai.sandbox import run_python
from moai.strategies import program_check

sys.path.insert(0, str(Path(__file__).parent / "strategies"))  # the strategy tests' scripted endpoints
from test_strategies import Fixed, run, setup  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="namespaces and /proc are Linux's")

# Rewrites the hook's closure and code so that it allows everything: no audit event covers any of it.
BYPASS = '''
import gc
__hook = [f for f in gc.get_objects() if type(f).__name__ == "function"
          and f.__qualname__.endswith("__moai_guard.<locals>.hook")][0]
for __n, __c in zip(__hook.__code__.co_freevars, __hook.__closure__):
    if __n == "banned": __c.cell_contents = ("zzz-nothing",)
    if __n == "inside": __c.cell_contents = lambda p: True
__bad = ("ctypes", "_ctypes", "_posixsubprocess")
__hook.__code__ = __hook.__code__.replace(
    co_consts=tuple(() if k == __bad else k for k in __hook.__code__.co_consts))
import subprocess, ctypes  # the hook allows both now
print("hook disabled")
'''


def _skip_without_bwrap() -> None:
    bwrap_status = getattr(sandbox, "bwrap_status", None)
    if bwrap_status is not None and bwrap_status()[0] is None:
        pytest.skip(f"bubblewrap cannot run here: {bwrap_status()[1]}")


def _armed(program: str, bypass: bool) -> str:
    return (BYPASS if bypass else "") + program + "\nprint('attack over')\n"


def attack(program: str, bypass: bool, timeout_s: float = 20) -> str:
    """Run ``program`` guarded (after disabling the hook when ``bypass``); its output, checked to have run."""
    _skip_without_bwrap()
    ok, out = run_python(_armed(program, bypass), timeout_s=timeout_s, guarded=True, tail_chars=20_000)
    assert "attack over" in out and (not bypass or "hook disabled" in out), out  # it ran; it was not stopped
    return out


def attack_from_gateway(program: str, bypass: bool, env: dict[str, str] | None = None) -> str:
    """``attack`` from a stand-in gateway process started with ``env`` added to its environment (as the real one
    is started with its upstream keys), whose pid replaces GATEWAY in the program; its output, checked that it
    survived and the program ran."""
    _skip_without_bwrap()
    gateway = ("import os\nfrom moai.sandbox import run_python\n"
               f"print(run_python({_armed(program, bypass)!r}.replace('GATEWAY', str(os.getpid())), 20, True, 9999))\n"
               "print('gateway alive')\n")
    src = str(Path(moai.__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", gateway], env={**os.environ, **(env or {}), "PYTHONPATH": src},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "gateway alive" in done.stdout, (done.returncode, done.stdout, done.stderr)
    assert "attack over" in done.stdout and (not bypass or "hook disabled" in done.stdout), done.stdout
    return done.stdout


@pytest.mark.parametrize("bypass", [False, True], ids=["hook", "hook-disabled"])
def test_the_gateways_environment_is_out_of_reach(bypass: bool) -> None:
    secret = "sk-" + secrets.token_hex(12)
    program = """
import os
for name in [str(os.getppid()), "GATEWAY", "1", *os.listdir("/proc")]:
    if name.isdigit():
        try:
            found = [e for e in open("/proc/%s/environ" % name, "rb").read().split(b"\\0") if b"MOAI_TEST" in e]
            print(name, found)
        except OSError as e:
            print(name, "refused:", e)
print([k for k in os.environ if "MOAI_TEST" in k])
"""
    out = attack_from_gateway(program, bypass, {"MOAI_TEST_UPSTREAM_KEY": secret})
    assert secret not in out and "MOAI_TEST_UPSTREAM_KEY" not in out, out


@pytest.mark.parametrize("bypass", [False, True], ids=["hook", "hook-disabled"])
def test_sqlite_cannot_write_files_outside_the_scratch_dir(tmp_path: Path, bypass: bool) -> None:
    victim = tmp_path / "telemetry.db"
    with sqlite3.connect(victim) as con:
        con.execute("create table api_keys(hash text)")
        con.execute("insert into api_keys values ('real')")
    con.close()
    before, stamp = victim.read_bytes(), victim.stat().st_mtime_ns
    program = f'''
import sqlite3
con = sqlite3.connect(":memory:")
for sql in ["ATTACH DATABASE {str(victim)!r} AS v", "INSERT INTO v.api_keys VALUES ('planted')",
            "CREATE TABLE v.more(x)", "ATTACH DATABASE {str(tmp_path / 'new.db')!r} AS n", "CREATE TABLE n.t(x)",
            "VACUUM INTO {str(tmp_path / 'copy.db')!r}"]:
    try:
        con.execute(sql)
        con.commit()
        print("done:", sql)
    except sqlite3.Error as e:
        print("refused:", sql, e)
'''
    attack(program, bypass)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["telemetry.db"]
    assert victim.read_bytes() == before and victim.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("bypass", [False, True], ids=["hook", "hook-disabled"])
def test_the_program_cannot_signal_the_gateway_or_its_neighbours(bypass: bool) -> None:
    """SIGKILL through pidfds (no audit event) to the gateway, its parent-of-record and a bystander."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        program = f'''
import os, signal
for pid in (os.getppid(), GATEWAY, {bystander.pid}):
    try:
        signal.pidfd_send_signal(os.pidfd_open(pid), signal.SIGKILL)
        print("killed", pid)
    except OSError as e:
        print("refused", pid, e)
    try:
        os.kill(pid, signal.SIGKILL)
        print("killed", pid)
    except (OSError, PermissionError) as e:
        print("refused", pid, e)
'''
        attack_from_gateway(program, bypass)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_the_network_is_unreachable_even_with_the_hook_disabled() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        program = f'''
import socket
for host in ("127.0.0.1", "localhost"):
    try:
        socket.create_connection((host, {port}), timeout=2).close()
        print("connected", host)
    except OSError as e:
        print("refused", host, e)
'''
        out = attack(program, bypass=True)
        assert "connected" not in out
        with pytest.raises(BlockingIOError):
            server.accept()


def test_nothing_outside_the_scratch_dir_changes_even_with_the_hook_disabled(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("x")
    os.utime(victim, (1_000_000, 1_000_000))
    out_dir = str(tmp_path)
    program = f'''
import os, subprocess
steps = [
    lambda: open({out_dir!r} + "/planted.txt", "w").write("x"),
    lambda: open({out_dir!r} + "/victim", "w").write("overwritten"),
    lambda: os.utime({out_dir!r} + "/victim", (0, 0)),
    lambda: os.makedirs({out_dir!r} + "/made/deeper"),
    lambda: os.symlink("/", {out_dir!r} + "/link"),
    lambda: subprocess.run(["/usr/bin/touch", {out_dir!r} + "/touched"], check=True),
]
for step in steps:
    try:
        step()
        print("done")
    except Exception as e:
        print("refused", type(e).__name__, e)
'''
    out = attack(program, bypass=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim"], out
    assert victim.read_text() == "x" and victim.stat().st_mtime == 1_000_000


def test_the_interpreter_and_the_system_are_read_only_even_with_the_hook_disabled() -> None:
    if not hasattr(sandbox, "bwrap_status"):
        pytest.skip("without bubblewrap this would write into the host's system directories")
    name = "moai-planted-" + secrets.token_hex(4)
    targets = [os.path.join(d, name) for d in (sys.base_prefix, "/usr", "/usr/lib", "/etc", "/")]
    program = f'''
import os
for path in {targets!r}:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT))
        print("created", path)
    except OSError as e:
        print("refused", path, e.strerror)
'''
    out = attack(program, bypass=True)
    assert "created" not in out and not any(os.path.exists(t) for t in targets)
    assert out.count("Read-only file system") == len(targets)


def _named(comm: str) -> list[int]:
    """Host processes whose name (``/proc/<pid>/comm``) is ``comm``."""
    found = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and Path(f"/proc/{name}/comm").read_text().strip() == comm:
                found.append(int(name))
        except OSError:
            continue
    return found


def test_a_detached_daemon_does_not_outlive_the_run() -> None:
    """Double fork, new session, stdio closed: outside the run's session, group, tree and pipe."""
    comm = "moai" + secrets.token_hex(5)
    program = f'''
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for fd in (0, 1, 2):
            os.close(fd)
        open("/proc/self/comm", "w").write({comm!r})
        time.sleep(30)
        os._exit(0)
    os._exit(0)
time.sleep(0.5)  # the daemon has named itself
'''
    attack(program, bypass=True)
    try:
        end = time.monotonic() + 3
        while _named(comm) and time.monotonic() < end:
            time.sleep(0.05)
        assert _named(comm) == []
    finally:
        for pid in _named(comm):  # the daemon this test started, if it got away
            os.kill(pid, signal.SIGKILL)


def test_guarded_programs_see_only_the_sandbox() -> None:
    program = '''
import os, sys
print(os.getpid(), sorted(p for p in os.listdir("/proc") if p.isdigit()), sorted(os.listdir("/")))
print(os.path.exists(os.path.expanduser("~") + "/prog.py"), sys.prefix == sys.base_prefix)
'''
    out = attack(program, bypass=False)
    first, second = out.splitlines()[:2]
    assert first.startswith("2 ['1', '2'] ")  # its own pid namespace: bwrap's init and the program
    assert "home" not in first and "work" not in first and "sys" not in first
    assert second == "True True"  # HOME is the scratch dir; the base interpreter, not the gateway's venv


# ------------------------------------------------------------------------------ where bubblewrap cannot run

def test_the_probe_says_why_bubblewrap_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    find = sandbox._find_bwrap
    monkeypatch.setattr(sandbox, "_find_bwrap", lambda: "/bin/false")
    assert sandbox._probe() == (None, "bwrap failed: exit status 1")
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(OSError, match="needs Linux"):
        find()


@pytest.mark.usefixtures("without_bwrap")
def test_guarded_programs_are_not_run_without_bubblewrap(caplog: pytest.LogCaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox._Probe, "said", set())
    with caplog.at_level(logging.INFO, logger="moai.sandbox"):
        for _ in range(2):
            with pytest.raises(sandbox.SandboxUnavailable, match="no sandbox: simulated"):
                run_python("print(1)", guarded=True)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]  # said once
    assert "MOAI_SANDBOX=process" in caplog.text
    assert run_python("print(1)") == (True, "1\n")  # unguarded (trusted) code is not affected


@pytest.mark.usefixtures("without_bwrap")
async def test_without_bubblewrap_the_program_check_is_skipped_with_a_note() -> None:
    mix = "  m: {strategy: critique, writer: w, critic: c, rounds: 1, check: python}\n"
    with ExitStack() as st:
        writer = Script(reply="2 + 2 = 4\n#### 4")
        critic = Script(replies=["```python\nprint(2 + 2)\n```", "Checked.\nVERDICT: APPROVED"])
        ex, summary = await run(setup(st, {"w": writer, "c": critic}, mix), Fixed(["w", "c"]))
    assert critic.calls == 2 and ex.answer.text.endswith("#### 4")  # the critic reviewed the draft in words
    notes = [r for r in summary["reason"] if "program check" in r]
    assert notes == ["program check skipped (no sandbox: simulated: user namespaces are disabled): "
                     "reviewed in words"]


@pytest.mark.usefixtures("hook_only")
def test_the_operator_may_accept_process_limits() -> None:
    ok, out = run_python("import os\nprint(os.getppid())", guarded=True)
    assert (ok, out) == (True, f"{os.getpid()}\n")  # the old sandbox: a child of the gateway, in its namespaces
    ok, out = run_python("import socket\nsocket.socket()", guarded=True)
    assert not ok and "PermissionError" in out  # still behind the audit hook


@pytest.mark.usefixtures("without_bwrap")
def test_grading_falls_back_to_process_limits_with_one_warning(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(code_harness, "_warned", [])
    tests = "['assert add_one(1) == 2']"
    for _ in range(2):
        assert graders.grade_mbpp("def add_one(x):\n    return x + 1", tests) == 1.0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "bubblewrap" in ln]
    assert warnings == ["warning: bubblewrap cannot run (simulated: user namespaces are disabled); "
                        "grading code with process limits only"]


# ------------------------------------------------------------------------------ concurrency

async def test_program_checks_leave_the_default_executor_free() -> None:
    """Session lookups and key checks share the loop's default executor: checks must not hold it."""
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
    slow = "```python\nimport time\ntime.sleep(1.5)\nprint(4)\n```"
    checks = [asyncio.ensure_future(program_check.run_program(slow)) for _ in range(3)]
    await asyncio.sleep(0.3)
    assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 0.5) == 42
    runs = await asyncio.gather(*checks)
    assert [r.printed for r in runs] == [4, 4, 4], [(r.detail, r.skipped) for r in runs]


def test_a_program_does_not_wait_for_the_processs_fork_hooks() -> None:
    """A loop thread busy in a call makes the Python API's at-fork hook wait for it: starting a program must not
    go through such hooks (they would eat its time limit: 1.5 s programs timed out at 5 s)."""
    script = (
        "import os, time\n"
        "from moai.sandbox import run_python\n"
        "os.register_at_fork(before=lambda: time.sleep(3))\n"
        "start = time.monotonic()\n"
        "print(run_python('print(4)', timeout_s=2), run_python('print(5)', timeout_s=2, guarded=True, "
        "allow_process=True), round(time.monotonic() - start, 1))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("(True, '4\\n') (True, '5\\n') "), done.stdout
    assert float(done.stdout.split()[-1]) < 3, done.stdout


async def test_at_most_max_running_programs_run_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "MAX_RUNNING", 2)
    lock, running, peak = threading.Lock(), [0], [0]

    def fake(program: str, *args: object) -> tuple[bool, str]:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return True, "7\n"

    monkeypatch.setattr(sandbox, "run_python", fake)
    results = await asyncio.gather(*(sandbox.run_python_async("print(7)", guarded=True) for _ in range(6)))
    assert results == [(True, "7\n")] * 6 and peak[0] == 2
    # a check that finds every slot busy for its time limit is skipped, not queued without end
    slow = asyncio.gather(*(sandbox.run_python_async("x") for _ in range(2)))
    await asyncio.sleep(0.05)
    busy = await program_check.run_program("```python\nprint(1)\n```", timeout_s=0.1)
    assert busy.skipped and "busy" in busy.detail
    assert program_check.verdict("#### 1", busy).note.startswith("program check skipped (the sandbox is busy")
    await slow
