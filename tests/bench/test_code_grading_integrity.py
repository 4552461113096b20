"""Wrong answers written to fool code grading score 0; right answers, however they shape their values, still pass.

The success token must stay out of the answer's reach (its code constants, its file, exit hooks), equality in
the tests must not be decided by the answer's own objects, and a trace function must not skip the tests.
"""

from __future__ import annotations

import pytest

from moai.bench import code_harness
from moai.bench import graders as g

FENCE = "```python\n{}\n```"
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 1) == 0"]
HE_PROMPT = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n'
HE_TEST = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(5, 7) == 12\n"


def _both(code: str) -> tuple[float, float]:
    """The MBPP and the HumanEval grade of an answer defining ``add``."""
    return g.grade_mbpp(FENCE.format(code), ADD_TESTS), g.grade_humaneval(FENCE.format(code), HE_PROMPT, HE_TEST)


def test_the_right_answer_passes() -> None:
    assert _both("def add(a, b):\n    return a + b") == (1.0, 1.0)


def test_the_token_is_neither_in_the_program_nor_in_its_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python folds 'ab' + 'cd' into one constant, and the program's file is readable: the token must be in neither."""
    token = "0123456789abcdef" * 2
    monkeypatch.setattr(code_harness.secrets, "token_hex", lambda n=16: token)
    seen: list[tuple[str, bytes | None]] = []

    def spy(program: str, *args: object, stdin: bytes | None = None, **kwargs: object) -> tuple[bool, str]:
        seen.append((program, stdin))
        return False, ""

    monkeypatch.setattr(code_harness, "run_python", spy)
    g.grade_mbpp("def add(a, b):\n    return a + b", ADD_TESTS)
    [(program, stdin)] = seen
    assert token[:16] not in program and token[16:] not in program
    assert stdin is not None and token.encode() in stdin


@pytest.mark.parametrize("code", [
    # the token's constant, fished out of the module's own code object, then an exit before the tests
    "import sys, os, re\n"
    "_h = [c for c in sys._getframe().f_code.co_consts if isinstance(c, str) and re.fullmatch('[0-9a-f]{32}', c)]\n"
    "print(_h[-1], flush=True)\nos._exit(0)",
    # every 32-hex-digit string in every code object the interpreter holds
    "import gc, os, re\n"
    "for o in gc.get_objects():\n"
    "    for c in getattr(getattr(o, '__code__', None), 'co_consts', ()) or ():\n"
    "        if isinstance(c, str):\n"
    "            for h in re.findall('[0-9a-f]{32}', c):\n"
    "                print(h, flush=True)\n"
    "os._exit(0)",
    # the token's line, read back from the program's file
    "import os\nexec(open(__file__).read().strip().splitlines()[-1])\nos._exit(0)",
    "import os, re\nprint(*re.findall('[0-9a-f]{16}', open(__file__).read()), sep='\\n', flush=True)\nos._exit(0)",
], ids=["co_consts", "gc-code-objects", "file-last-line", "file-hex"])
def test_an_answer_cannot_print_the_token_itself(code: str) -> None:
    assert _both(code) == (0.0, 0.0)


@pytest.mark.parametrize("hook", [
    "exec(open(__file__).read().strip().splitlines()[-1])",
    # the standard input and every other open file, searched for something that looks like a token
    "import re\n"
    "    for fd in range(64):\n"
    "        try:\n"
    "            print(*re.findall(r'[0-9a-f]{32}', os.read(fd, 256).decode()), sep='\\n', flush=True)\n"
    "        except (OSError, ValueError):\n"
    "            pass",
], ids=["file", "open-files"])
def test_failed_tests_stay_failed_whatever_exit_hooks_do(hook: str) -> None:
    code = ("import atexit, os\n"
            f"def _f():\n    {hook}\n    os._exit(0)\n"
            "atexit.register(_f)\n"
            "def add(a, b):\n    return a - b")
    assert _both(code) == (0.0, 0.0)


@pytest.mark.parametrize("value", [
    "_E()",
    "_I(0)",
    "[_E()][0]",
    "_Spoof()",
    "_Meta()",
], ids=["always-equal", "int-subclass", "from-a-list", "fake-class", "metaclass-equal-to-int"])
def test_an_object_equal_to_everything_does_not_pass(value: str) -> None:
    code = ("class _E:\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n    __hash__ = None\n"
            "class _I(int):\n    __eq__ = lambda s, o: True\n    __hash__ = int.__hash__\n"
            "class _Spoof(_E):\n    __class__ = property(lambda s: int)\n"
            "class _M(type):\n    __eq__ = lambda s, o: True\n    __hash__ = type.__hash__\n"
            "class _Meta(_E, metaclass=_M):\n    pass\n"
            f"def add(a, b):\n    return {value}")
    assert _both(code) == (0.0, 0.0)


def test_a_container_of_always_equal_objects_does_not_pass() -> None:
    code = "class _E:\n    __eq__ = lambda s, o: True\ndef pair(x):\n    return [_E(), (_E(), {'k': _E()})]"
    assert g.grade_mbpp(code, ["assert pair(1) == [1, (2, {'k': 3})]"]) == 0.0
    assert g.grade_mbpp(code.replace("[_E(), (_E(), {'k': _E()})]", "[1, (2, {'k': 3})]"),
                        ["assert pair(1) == [1, (2, {'k': 3})]"]) == 1.0


def test_a_trace_function_cannot_skip_the_tests() -> None:
    code = ("import sys, linecache\n"
            "def _t(frame, event, arg):\n"
            "    if frame.f_code.co_name in ('<module>', 'check'):\n"
            "        line = lambda n: linecache.getline(frame.f_code.co_filename, n)\n"
            "        if event == 'line' and line(frame.f_lineno).lstrip().startswith('assert'):\n"
            "            n = frame.f_lineno\n"
            "            while line(n).lstrip().startswith('assert') or not line(n).strip():\n"
            "                n += 1\n"
            "            frame.f_lineno = n\n"
            "    return _t\n"
            "sys._getframe().f_trace = _t\nsys.settrace(_t)\n"
            "def add(a, b):\n    return a - b")
    assert _both(code) == (0.0, 0.0)


@pytest.mark.parametrize("code", [
    "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None",
    "import os\nos.close = lambda fd: None\nos.read = lambda *a: b''",
    "__moai_same__ = lambda a, b: True",
    "import sys\nsys.settrace = sys.setprofile = lambda f: None",
], ids=["builtins", "os", "the-check's-name", "sys"])
def test_replacing_what_the_grading_uses_does_not_pass(code: str) -> None:
    assert _both(code + "\ndef add(a, b):\n    return 0") == (0.0, 0.0)


@pytest.mark.parametrize("code, test", [
    ("from collections import Counter\ndef f(x):\n    return Counter(x)", "assert f('aab') == {'a': 2, 'b': 1}"),
    ("from collections import namedtuple\nP = namedtuple('P', 'a b')\ndef f(x):\n    return P(x, x)",
     "assert f(1) == (1, 1)"),
    ("def f(x):\n    return x / 2", "assert f(4) == 2"),
    ("import enum\nclass C(enum.IntEnum):\n    A = 1\ndef f(x):\n    return C.A", "assert f(0) == 1"),
    ("def f(x):\n    return {1: 2}.keys()", "assert f(0) == {1}"),
    ("def f(x):\n    return set(x)", "assert f([1]) == frozenset([1])"),
    ("class S(str):\n    pass\ndef f(x):\n    return S('ab')", "assert f(1) == 'ab'"),
    ("from dataclasses import dataclass\n@dataclass\nclass P:\n    a: int\ndef f(x):\n    return P(x)",
     "assert f(1) == P(1)"),
    ("import typing\ndef f(x: 'int') -> 'bool':\n    return typing.get_type_hints(f)['x'] is int",
     "assert f(1) == True"),
    ("def f(x):\n    return x\nif __name__ == '__main__':\n    print(f(2))", "assert f(1) == 1"),
], ids=["Counter", "namedtuple", "float-for-int", "IntEnum", "dict-keys", "set-frozenset", "str-subclass",
        "dataclass", "type-hints", "main-block"])
def test_right_answers_pass_whatever_builtin_shape_their_values_take(code: str, test: str) -> None:
    assert g.grade_mbpp(FENCE.format(code), [test]) == 1.0


def test_exact_tests_rewrites_single_equality_asserts_only() -> None:
    tests = ("def check(candidate):\n    assert candidate(1) == 2, 'one'\n    assert abs(candidate(2) - 3) < 1e-6\n"
             "    assert 1 == candidate(0) == 1\n    x = candidate(1) == 2\nassert f(1) == [1]\n")
    out = code_harness.exact_tests(tests)
    assert "'__moai_same__'(candidate(1), 2), 'one'" in out
    assert "'__moai_same__'(f(1), [1])" in out
    assert out.count("__moai_same__") == 2  # not the chained comparison, not a plain expression
    assert code_harness.exact_tests("assert f(1) ==") == "assert f(1) =="
