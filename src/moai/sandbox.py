"""Running model-written Python: a separate interpreter with a time limit, no environment, capped resources.

Used to grade code answers (MBPP, HumanEval) and by the ``critique`` strategy's program check, where a
model writes a program that recomputes an answer. ``guarded`` programs also run behind an audit hook that
refuses network access, new processes, native code (ctypes) and changes to files or directories outside
their scratch directory: code a model wrote from a user's prompt may have been steered by that prompt. It
is defence in depth on top of the process limits, not a boundary against native-code exploits.

The parent never holds more than a bounded tail of the output, stops reading at the deadline, and then
kills everything the program started: its process group and session, its descendants, and any process
still holding its output pipe (a ``fork`` + ``setsid`` grandchild).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time

OUTPUT_LIMIT_BYTES = 16 << 20  # a program that prints more is stopped (a print loop, not an answer)

# Prepended to guarded programs. Audit hooks cannot be removed once added (PEP 578).
_GUARD = '''\
def __moai_guard():
    import os, sys
    home = os.path.realpath(os.getcwd())
    banned = ("socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.system",
              "os.kill", "os.remove", "os.rmdir", "os.rename", "os.chmod", "os.chown", "os.truncate",
              "os.link", "os.symlink", "os.setxattr", "os.removexattr", "os.chflags", "os.lchflags",
              "shutil.", "ctypes.", "pty.", "webbrowser.", "urllib.", "http.")

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
            writes = any(c in str(mode) for c in "wax+") or flags & (
                os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)  # O_RDONLY|O_TRUNC empties a file
            if (writes or os.path.isdir(args[0])) and not inside(args[0]):  # a directory fd is a dir_fd
                raise PermissionError("sandbox: writing outside the scratch directory is not allowed")
        if event in ("os.mkdir", "os.utime"):
            if args[-1] not in (None, -1) or not inside(args[0]):  # dir_fd: relative to who knows where
                raise PermissionError("sandbox: " + event + " outside the scratch directory is not allowed")
        if event == "sqlite3.connect" and args[0] not in (":memory:", b":memory:", "") and not inside(args[0]):
            raise PermissionError("sandbox: a database outside the scratch directory is not allowed")

    def refused(*args, **kwargs):
        raise PermissionError("sandbox: creating special files is not allowed")

    import posix
    for module in (os, posix):  # no audit event covers them: the functions themselves are replaced
        module.mkfifo = module.mknod = refused
    sys.addaudithook(hook)


__moai_guard()
del __moai_guard
'''


def _limit_resources() -> None:  # pragma: no cover - runs in the child
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
    os.setsid()


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _holds(pid: int, link: str) -> bool:
    """Whether process ``pid`` has ``link`` (``pipe:[inode]``) open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == link:
                return True
        except OSError:
            continue
    return False


def _strays(root: int, pipe_link: str | None) -> set[int]:
    """Processes of the program's run (Linux /proc): its session or group, its descendants, the pipe's holders."""
    me, found, parent = os.getpid(), set(), {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        ppid, pgrp, sid = int(fields[1]), int(fields[2]), int(fields[3])
        parent[pid] = ppid
        # a pipe holder that is our own child is a sibling run's child before its exec, not the program's
        held = pipe_link is not None and ppid != me and _holds(pid, pipe_link)
        if pid == root or pgrp == root or sid == root or held:
            found.add(pid)
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    todo = [*found, root]
    while todo:
        for kid in children.get(todo.pop(), ()):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


def _kill_all(proc: subprocess.Popen[bytes], pipe_link: str | None) -> None:
    """SIGKILL the program and everything it started (freezing them first, so none can fork away meanwhile)."""
    if sys.platform == "win32":  # pragma: no cover
        proc.kill()
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if os.path.isdir("/proc/self/fd"):
        frozen: set[int] = set()
        for _ in range(10):
            new = _strays(proc.pid, pipe_link) - frozen
            if not new:
                break
            for pid in new:
                _signal(pid, signal.SIGSTOP)
            frozen |= new
        for pid in frozen:
            _signal(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):  # stuck in the kernel: the OS reaps it later
        proc.wait(timeout=2)


def _read_output(proc: subprocess.Popen[bytes], deadline: float, keep: int) -> tuple[bytearray, str | None, bool]:
    """The last ``keep`` bytes the program wrote, why reading stopped early ('timeout', 'output') and whether EOF."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    tail, total = bytearray(), 0
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            exited = proc.poll() is not None
            reads = 64 if exited else 1  # the program is gone: drain what it left, stragglers' output bounded
            for _ in range(reads):
                left = deadline - time.monotonic()
                if left <= 0:
                    return tail, "timeout", False
                if not sel.select(0 if exited else min(left, 0.05)):
                    break
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:
                    return tail, None, True
                total += len(chunk)
                tail += chunk
                if len(tail) > keep:
                    del tail[:-keep]
                if total > OUTPUT_LIMIT_BYTES:
                    return tail, "output", False
            if exited:  # something it started still holds the pipe: not worth waiting for
                return tail, None, False


def run_python(program: str, timeout_s: float = 10.0, guarded: bool = False,
               tail_chars: int = 500) -> tuple[bool, str]:
    """Run a program in a fresh isolated interpreter; (exit status 0, the last ``tail_chars`` of its output).

    The child gets an empty scratch directory, no environment (no keys, no proxies), isolated mode
    (no user site, no PYTHON* variables), 2 GiB of memory and its own session. Its output is read as it
    comes, keeping only the tail (a program printing more than ``OUTPUT_LIMIT_BYTES`` is stopped); at the
    deadline everything it started is killed and the call returns, even if a detached grandchild still
    holds the pipe.
    """
    deadline = time.monotonic() + timeout_s
    with tempfile.TemporaryDirectory(prefix="moai-code-") as tmp:
        path = os.path.join(tmp, "prog.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(_GUARD + program if guarded else program)
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
        preexec = _limit_resources if sys.platform != "win32" else None
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", path], cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=preexec,
            )
        except OSError as e:
            return False, f"could not start python: {e}"
        assert proc.stdout is not None
        with proc.stdout:
            try:
                pipe_link = f"pipe:[{os.fstat(proc.stdout.fileno()).st_ino}]"
            except OSError:  # pragma: no cover
                pipe_link = None
            try:
                out, stopped, eof = _read_output(proc, deadline, 4 * tail_chars + 4)
                if stopped is None:
                    try:
                        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        stopped = "timeout"
            finally:
                _kill_all(proc, None if eof else pipe_link)
        if stopped == "timeout":
            return False, f"timed out after {timeout_s:g}s"
        if stopped == "output":
            return False, f"stopped: printed more than {OUTPUT_LIMIT_BYTES >> 20} MiB"
        return proc.returncode == 0, out.decode("utf-8", "replace")[-tail_chars:]
