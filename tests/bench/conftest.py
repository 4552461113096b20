"""The comparison benchmark is a script, not a package module: load it once for the tests that call its parts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="session")
def gate_compare() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gate_compare", Path(__file__).resolve().parents[2] / "benchmarks" / "gate_compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
