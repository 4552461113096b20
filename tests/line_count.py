"""Shared by the tests of work that must grow linearly: lines of Python run, counted rather than timed."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any


def lines_run(call: Callable[[], Any], *modules: ModuleType) -> int:
    """How many lines of `modules` run during `call`: their work in Python, counted, not timed."""
    files = {m.__file__ for m in modules}
    count = 0

    def local(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return local

    def calls(frame: Any, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename in files else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        call()
    finally:
        sys.settrace(previous)
    return count
