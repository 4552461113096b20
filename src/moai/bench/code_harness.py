"""The harness that runs a code answer with its tests in the guarded sandbox (``moai.sandbox``) and says whether
every test passed.

A program passes only when the grading harness itself got to the end of the tests. The harness runs the
answer, then the tests, and only then reads a one-off token from a pipe the parent filled (it is in no code
constant and no file) and prints it; exiting early, failing tests, exit hooks (``atexit``) and ``os._exit``
never reach it, and a failure closes the pipe before anything else runs. Test lines ``assert a == b`` compare
by value when either side is a plain builtin value (numbers, strings, bytes, None, and lists, tuples, dicts
and sets of them, subclasses read as their builtin base): an object of the answer's own making never equals
one, whatever its ``__eq__`` says. Tracing (``sys.settrace``, ``sys.setprofile``), which can jump over test
lines, is refused and switched off before the tests.

Limits, stated plainly: the answer runs in the same interpreter as its tests, so grading adversarial code
in-process cannot be made sound. A program written to attack the grader can still find the pipe among its
open files, rewrite the harness's functions through ``gc``, or fake comparisons other than ``==``
(``abs(f(x) - y) < 1e-6``, ``assert f(x)``). Graded records measure models; they are not a security boundary.
"""

from __future__ import annotations

import ast
import secrets
import sys

from moai import sandbox
from moai.sandbox import run_python

_warned: list[str] = []


def _warn_without_bwrap() -> None:
    """One line on stderr, once, when code is graded with process limits only (no bubblewrap here)."""
    bwrap, why = sandbox.bwrap_status()
    if bwrap is None and not _warned:
        _warned.append(why)
        print(f"warning: bubblewrap cannot run ({why}); grading code with process limits only", file=sys.stderr)


_SAME = "__moai_same__"  # test code calls this constant; the harness puts its equality check in its place


class _ExactEquality(ast.NodeTransformer):
    """``assert a == b`` becomes ``assert '__moai_same__'(a, b)``, bound to the harness's check when it runs."""

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        test = node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
            call = ast.Call(func=ast.Constant(_SAME), args=[test.left, test.comparators[0]], keywords=[])
            node.test = ast.copy_location(call, test)
        return node


def exact_tests(tests: str) -> str:
    """Test code whose ``assert a == b`` lines compare by value (see the module's docstring); unparsable code
    is returned as it is (it fails when run)."""
    try:
        tree = ast.parse(tests)
        rewritten = ast.unparse(ast.fix_missing_locations(_ExactEquality().visit(tree)))
        ast.parse(rewritten)  # what unparse wrote must read back, or the tests run as given
        return rewritten
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return tests


# Runs an answer and then its tests in one interpreter; the last line calls it. Everything it relies on later is
# taken before the answer runs (the answer may replace ``os`` functions, builtins, ``sys.stdout``), and the
# tests are compiled first, their '__moai_same__' calls bound to ``same`` as a code constant, which no name the
# answer can rebind reaches.
_HARNESS = f'''\
def __moai_exact():
    kind, subclass, length, foreign = type, issubclass, len, object()
    leaves = (bool, int, float, complex, str, bytes, type(None))
    bases = ((int, int.__int__), (float, float.__float__), (complex, complex.__complex__), (str, str.__str__),
             (bytes, bytes.__bytes__))
    views = (type({{}}.keys()), type({{}}.items()))
    make_tuple, make_set, make_frozenset = tuple, set, frozenset
    list_iter, tuple_iter, set_iter, frozenset_iter = list.__iter__, tuple.__iter__, set.__iter__, frozenset.__iter__
    dict_items, dict_len, set_len, frozenset_len = dict.items, dict.__len__, set.__len__, frozenset.__len__

    def one_of(t, types):  # by identity: ``t in types`` would ask a metaclass's __eq__
        for each in types:
            if t is each:
                return True
        return False

    def plain(value, depth):
        t = kind(value)
        if one_of(t, leaves):
            return value
        if depth > 100:
            raise ValueError("too deep")
        for base, as_base in bases:
            if subclass(t, base):
                return as_base(value)
        if subclass(t, list):
            return [plain(v, depth + 1) for v in list_iter(value)]
        if subclass(t, tuple):
            return make_tuple([plain(v, depth + 1) for v in tuple_iter(value)])
        if subclass(t, dict):
            out = {{plain(k, depth + 1): plain(v, depth + 1) for k, v in dict_items(value)}}
            if length(out) != dict_len(value):
                raise ValueError("keys collide")
            return out
        if subclass(t, (set, frozenset)) or one_of(t, views):
            items = [plain(v, depth + 1) for v in (set_iter(value) if subclass(t, set) else frozenset_iter(value)
                                                   if subclass(t, frozenset) else value)]
            out = make_frozenset(items) if subclass(t, frozenset) else make_set(items)
            if not one_of(t, views) and length(out) != (set_len(value) if subclass(t, set) else frozenset_len(value)):
                raise ValueError("items collide")
            return out
        raise TypeError("not a plain value")

    def same(actual, expected):
        """actual == expected, by value whenever either side is a plain builtin value."""
        try:
            a = plain(actual, 0)
        except Exception:
            a = foreign
        try:
            b = plain(expected, 0)
        except Exception:
            b = foreign
        if a is foreign and b is foreign:
            return actual == expected
        return a is not foreign and b is not foreign and a == b

    return same


def __moai_grade(answer, tests):
    import os, sys, warnings
    read, write, close, exit_now, refused = os.read, os.write, os.close, os._exit, PermissionError
    settrace, setprofile, code_type, same = sys.settrace, sys.setprofile, type(__moai_exact.__code__), __moai_exact()
    run, scope = exec, globals()
    token = os.dup(0)  # the pipe holding the token, left unread until the tests are over
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    close(null)

    def bind(code):
        return code.replace(co_consts=tuple(
            same if kind is str and c == {_SAME!r} else bind(c) if kind is code_type else c
            for c, kind in ((c, type(c)) for c in code.co_consts)))

    def untraced(event, args):
        if event in ("sys.settrace", "sys.setprofile") or event.startswith("sys.monitoring"):
            raise refused("grading: tracing is not allowed")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # calling a str constant draws a SyntaxWarning
            checks = bind(compile(tests, "<tests>", "exec"))
        program = compile(answer, "<answer>", "exec")
        sys.addaudithook(untraced)
        run(program, scope)
        try:  # refused while the hook holds; clears a tracer if the answer got around it
            settrace(None)
            setprofile(None)
        except refused:
            pass
        run(checks, scope)
    except:  # noqa: E722 - bare: no name the answer could have rebound
        close(token)
        raise
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except:  # noqa: E722
            pass
    write(1, b"\\n" + read(token, 256) + b"\\n")
    exit_now(0)
'''


def run_tests(code: str, tests: str, timeout_s: float = 10.0) -> bool:
    """Run code, then its tests, in the guarded sandbox; True only when the harness saw every test pass.

    The token that marks success reaches the program on its standard input, which the harness sets aside
    before the code runs and reads only after the last test (see the module's docstring for what this
    does and does not rule out); ``assert a == b`` lines compare by value (``exact_tests``).
    """
    token = secrets.token_hex(16)
    program = _HARNESS + f"\n__moai_grade({code!r}, {exact_tests(tests)!r})\n"
    _warn_without_bwrap()
    ok, out = run_python(program, timeout_s, guarded=True, allow_process=True, stdin=token.encode())
    return ok and token in out.splitlines()
