"""Running model-written Python: a separate interpreter with a time limit, no environment, capped resources.

Used to grade code answers (MBPP, HumanEval) and by the ``critique`` strategy's program check, where a
model writes a program that recomputes an answer. ``guarded`` programs also run behind an audit hook that
refuses network access, new processes, native code (ctypes) and writes or deletions outside their scratch
directory: code a model wrote from a user's prompt may have been steered by that prompt. It is defence in
depth on top of the process limits, not a boundary against native-code exploits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

# Prepended to guarded programs. Audit hooks cannot be removed once added (PEP 578).
_GUARD = '''\
def __moai_guard():
    import os, sys
    home = os.path.realpath(os.getcwd())
    banned = ("socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.system",
              "os.kill", "os.remove", "os.rmdir", "os.rename", "os.chmod", "os.chown", "os.truncate",
              "os.link", "os.symlink", "shutil.", "ctypes.", "pty.", "webbrowser.", "urllib.", "http.")

    def inside(path):
        try:
            return os.path.realpath(os.fsdecode(path)).startswith(home + os.sep)
        except (TypeError, ValueError):
            return False

    def hook(event, args):
        if event == "import" and args[0] in ("ctypes", "_ctypes", "_posixsubprocess"):
            raise PermissionError("sandbox: import " + args[0] + " is not allowed")
        if event.startswith(banned):
            raise PermissionError("sandbox: " + event + " is not allowed")
        if event == "open" and not isinstance(args[0], int):
            mode, flags = args[1] or "r", args[2] or 0
            writes = any(c in str(mode) for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            if writes and not inside(args[0]):
                raise PermissionError("sandbox: writing outside the scratch directory is not allowed")

    sys.addaudithook(hook)


__moai_guard()
del __moai_guard
'''


def _limit_resources() -> None:  # pragma: no cover - runs in the child
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
    os.setsid()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError, AttributeError):
        proc.kill()


def run_python(program: str, timeout_s: float = 10.0, guarded: bool = False,
               tail_chars: int = 500) -> tuple[bool, str]:
    """Run a program in a fresh isolated interpreter; (exit status 0, the last ``tail_chars`` of its output).

    The child gets an empty scratch directory, no environment (no keys, no proxies), isolated mode
    (no user site, no PYTHON* variables), 2 GiB of memory and its own session so a timeout kills
    everything it spawned.
    """
    with tempfile.TemporaryDirectory(prefix="moai-code-") as tmp:
        path = os.path.join(tmp, "prog.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(_GUARD + program if guarded else program)
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
        preexec = _limit_resources if sys.platform != "win32" else None
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", path], cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=preexec,
            )
        except OSError as e:
            return False, f"could not start python: {e}"
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            return False, f"timed out after {timeout_s:g}s"
        tail = out.decode("utf-8", "replace")[-tail_chars:]
        return proc.returncode == 0, tail
