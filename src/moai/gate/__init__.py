"""The gate: query features -> per-model expected quality -> a decision under weights and constraints.

``Gate`` is imported lazily so that ``import moai.gate.<module>`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Gate", "Decision", "Weights", "Constraints"]


def __getattr__(name: str) -> Any:
    if name == "Gate":
        from moai.gate.store import Gate

        return Gate
    if name in ("Decision", "Weights", "Constraints"):
        from moai.gate import policy

        return getattr(policy, name)
    raise AttributeError(name)
