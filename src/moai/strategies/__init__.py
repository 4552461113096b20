"""Strategies: each turns a request into a plan; one executor runs them all."""

from __future__ import annotations

from collections.abc import Callable

from moai.strategies.context import RequestContext
from moai.strategies.plan import Plan

PlanBuilder = Callable[[RequestContext], Plan]


def builder(strategy: str) -> PlanBuilder:
    """The plan builder for a strategy name (imported lazily, one module per strategy)."""
    from importlib import import_module

    try:
        module = import_module(f"moai.strategies.{strategy}")
    except ModuleNotFoundError:
        raise ValueError(f"strategy {strategy!r} is not available") from None
    return module.plan
