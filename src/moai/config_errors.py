"""The errors of mix instructions: the one a user reads, and the one a validator raises to name the field at fault."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad mix instructions; the message is one line: ``file:line: field: problem``."""


class FieldProblem(ValueError):
    """A cross-field error that knows its YAML path, so names containing dots still find their line."""

    def __init__(self, loc: tuple[int | str, ...], problem: str) -> None:
        super().__init__(f"{'.'.join(str(p) for p in loc)}: {problem}")
        self.loc = loc
        self.problem = problem
