"""Limits that hold for a guarded program as a whole, not just per process: its disk, its process count, and what
it can import. Most need bubblewrap; where it cannot run they are skipped, and the process fallback is checked
to keep working."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from test_sandbox import hook_only, without_bwrap  # noqa: F401 - the sandbox tests' fixtures, used by name

from moai import sandbox
from moai.sandbox import run_python

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="bubblewrap and rlimits are Linux's")

CAP = getattr(sandbox, "MAX_PROCESSES", 64)
SCRATCH = getattr(sandbox, "SCRATCH_BYTES", 64 << 20)

# Turns the audit hook's ban list into nothing, so os.fork runs: the limits must hold without the hook.
NO_HOOK = '''
import gc
__hook = [f for f in gc.get_objects() if type(f).__name__ == "function"
          and f.__qualname__.endswith("__moai_guard.<locals>.hook")][0]
for __n, __c in zip(__hook.__code__.co_freevars, __hook.__closure__):
    if __n == "banned":
        __c.cell_contents = ("zzz-nothing",)
'''


def _needs_bwrap() -> None:
    bwrap, why = sandbox.bwrap_status()
    if bwrap is None:
        pytest.skip(f"bubblewrap cannot run here: {why}")


def test_scratch_writes_stop_at_the_cap_instead_of_filling_the_disk() -> None:
    _needs_bwrap()
    program = '''
import errno
written = 0
try:
    for i in range(12):  # 96 MiB in 8 MiB files, each under the 16 MiB file-size limit
        with open("f%d" % i, "wb") as f:
            for _ in range(8):
                f.write(b"x" * (1 << 20))
                written += 1
except OSError as e:
    print("refused", errno.errorcode[e.errno])
print("written", written)
'''
    ok, out = run_python(program, timeout_s=30, guarded=True)
    assert ok and "refused ENOSPC" in out, out
    assert int(out.split("written")[1]) <= SCRATCH >> 20


def test_home_and_tmpdir_are_the_capped_scratch_dir() -> None:
    _needs_bwrap()
    program = '''
import os
for path in (os.getcwd(), os.environ["HOME"], os.environ["TMPDIR"]):
    st = os.statvfs(path)
    print(path == os.getcwd(), st.f_blocks * st.f_frsize)
'''
    ok, out = run_python(program, timeout_s=10, guarded=True)
    assert ok, out
    lines = [ln.split() for ln in out.splitlines()]
    assert len(lines) == 3 and all(same == "True" and int(size) <= SCRATCH for same, size in lines), out


def test_the_program_file_is_read_only() -> None:
    _needs_bwrap()
    program = '''
try:
    open(__file__, "a").write("# changed")
    print("changed")
except OSError as e:
    print("refused", e.strerror)
open("mine.txt", "w").write("x")  # the rest of the scratch dir stays writable
print(open("mine.txt").read())
'''
    assert run_python(program, timeout_s=10, guarded=True) == (True, "refused Read-only file system\nx\n")


def _world_reachable(path: Path) -> bool:
    """Whether any user can reach ``path``: every directory above it searchable, the file itself readable."""
    for parent in path.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


def _guarded_from_an_unprivileged_gateway(program: str) -> str:
    """Output of ``program`` run guarded by a gateway of an unprivileged user. The kernel never applies
    RLIMIT_NPROC to uid 0, and uid 0 outside bubblewrap's user namespace is uid 0 inside, so when these tests
    run as root the gateway is a stand-in process run as ``nobody`` by the system's Python."""
    bwrap, why = sandbox.bwrap_status()
    if bwrap is None:
        pytest.skip(f"bubblewrap cannot run here: {why}")
    if os.geteuid() != 0:
        return run_python(program, timeout_s=30, guarded=True, tail_chars=4000)[1]
    import pwd

    python = shutil.which("python3", path="/usr/bin:/bin")
    module = Path(sandbox.__file__).resolve()
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no unprivileged user to run the gateway as")
    if python is None or not all(_world_reachable(Path(p)) for p in (python, module, bwrap)):
        pytest.skip("no system Python, sandbox module and bwrap that an unprivileged user can reach")
    gateway = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('moai_sandbox', sys.argv[1])\n"
        "sandbox = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(sandbox)\n"
        "print(sandbox.run_python(sys.argv[2], timeout_s=30, guarded=True, tail_chars=4000)[1])\n"
    )
    done = subprocess.run([python, "-I", "-c", gateway, str(module), program], capture_output=True, text=True,
                          env={"PATH": f"{os.path.dirname(bwrap)}:/usr/bin:/bin"}, cwd="/", timeout=60,
                          user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("start", [
    "threading.Thread(target=time.sleep, args=(5,), daemon=True).start()",
    "pid = os.fork()\n        if pid == 0:\n            time.sleep(5)\n            os._exit(0)",
], ids=["threads", "processes"])
def test_a_program_in_bubblewrap_cannot_start_processes_without_end(start: str) -> None:
    program = NO_HOOK + f'''
import os, threading, time
threading.stack_size(1 << 16)
started = 0
try:
    for _ in range(150):
        {start}
        started += 1
except (OSError, RuntimeError) as e:
    print("refused", type(e).__name__)
print("started", started)
'''
    out = _guarded_from_an_unprivileged_gateway(program)
    assert "refused" in out, out
    assert 10 < int(out.split("started")[1].split()[0]) < CAP, out


def test_root_is_told_that_the_process_cap_does_not_hold(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    _needs_bwrap()
    monkeypatch.setattr(sandbox._Probe, "said", set())
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with caplog.at_level(logging.INFO, logger="moai.sandbox"):
        sandbox.isolation()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with caplog.at_level(logging.INFO, logger="moai.sandbox"):
        sandbox.isolation()
        sandbox.isolation()
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "runs as root" in warned[0] and str(CAP) in warned[0]


def _site_packages_module(purelib: str) -> str | None:
    """A top-level package installed in ``purelib``, if any."""
    try:
        names = sorted(os.listdir(purelib))
    except OSError:
        return None
    return next((n for n in names if n.isidentifier() and os.path.isfile(os.path.join(purelib, n, "__init__.py"))),
                None)


@pytest.mark.parametrize("mode", ["bwrap", "process"])
def test_guarded_programs_import_only_the_standard_library(mode: str, request: pytest.FixtureRequest) -> None:
    if mode == "bwrap":
        _needs_bwrap()
        base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
        installed = _site_packages_module(sysconfig.get_path("purelib", vars=base))
    else:
        request.getfixturevalue("hook_only")
        installed = "pytest"  # in the environment running these tests, whose interpreter the fallback uses
    program = f'''
import sys
print([p for p in sys.path if "-packages" in p])
try:
    import {installed or "json"}
    print("imported")
except ImportError:
    print("not importable")
import json, math, fractions
print(math.comb(5, 2))
'''
    ok, out = run_python(program, timeout_s=10, guarded=True)
    assert ok, out
    assert out.splitlines()[0] == "[]", out
    assert out.splitlines()[1] == ("not importable" if installed else "imported") and out.endswith("10\n"), out


@pytest.mark.parametrize("mode", ["bwrap", "process"])
def test_exit_and_quit_still_end_a_guarded_program(mode: str, request: pytest.FixtureRequest) -> None:
    if mode == "bwrap":
        _needs_bwrap()
    else:
        request.getfixturevalue("hook_only")
    assert run_python("print(1)\nexit()\nprint(2)", timeout_s=10, guarded=True) == (True, "1\n")
    assert run_python("print(1)\nquit(3)", timeout_s=10, guarded=True) == (False, "1\n")


@pytest.mark.parametrize("guarded", [False, True])
def test_a_program_reads_what_it_is_given_on_stdin(guarded: bool) -> None:
    ok, out = run_python("import sys\nprint(sys.stdin.read().upper())", timeout_s=10, guarded=guarded,
                         allow_process=True, stdin=b"token\n")
    assert (ok, out) == (True, "TOKEN\n\n")
    assert run_python("print(input())", timeout_s=10, guarded=guarded, allow_process=True)[0] is False


@pytest.mark.usefixtures("hook_only")
def test_the_process_fallback_counts_no_processes_but_still_runs() -> None:
    """Outside a user namespace RLIMIT_NPROC would count every process of the gateway's user: not set there."""
    program = ("import threading, time\nthreading.stack_size(1 << 16)\n"
               "for _ in range(80):\n    threading.Thread(target=time.sleep, args=(0.5,), daemon=True).start()\n"
               "open('here.txt', 'w').write('1')\nprint(open('here.txt').read())")
    assert run_python(program, timeout_s=10, guarded=True) == (True, "1\n")
