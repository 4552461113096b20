"""Which scale a routing record's scores are on: shared/data/MANIFEST.md allows "0/1 correctness, a 0-1 metric,
or a 1-10 judge score".

The scale is read per record, within its benchmark, not once per benchmark: a benchmark that mixes 0/1 and
1-10 records would otherwise map every correct 0/1 answer to 0 ((1 - 1) / 9), and a small judge benchmark whose
scores are all 1 would read as perfect. A score above 1 is a judge's; a 0 or a fraction is not (a judge gives
1 at least); a record scoring exactly 1 for every model could be either and takes its benchmark's majority.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from moai.bench.datasets import RoutingRecord

log = logging.getLogger("moai.bench.scales")
_EPS = 1e-9
_warned: set[tuple[str, int, int]] = set()  # one warning per mixed benchmark, however often its matrix is built


def row_scale(values: Iterable[float]) -> bool | None:
    """True: the 1-10 judge scale; False: 0/1 or a 0-1 metric; None: nothing tells (every score is 1, or none).

    A score above 1 decides for the judge scale even beside a 0: clipped to 0 later, as before."""
    unit = False
    for v in values:
        if not math.isfinite(v):
            continue
        if v > 1.0 + _EPS:
            return True
        if v < 1.0 - _EPS:
            unit = True
    return False if unit else None


def judge_rows(rows: Sequence[Iterable[float]], label: str = "the scores") -> np.ndarray:
    """Per row (one record's scores; every row from one benchmark): whether it is on the 1-10 judge scale.

    Rows that tell nothing take the majority scale of the rows that do (0-1 on a tie, or with none). A benchmark
    with rows on both scales is warned about once, naming ``label``."""
    seen = [row_scale(r) for r in rows]
    n_judge = sum(s is True for s in seen)
    n_unit = sum(s is False for s in seen)
    majority = n_judge > n_unit
    if n_judge and n_unit and (label, n_unit, n_judge) not in _warned:
        _warned.add((label, n_unit, n_judge))
        n_amb = len(seen) - n_judge - n_unit
        amb = f"; records scoring 1 for every model ({n_amb}) read as {'1-10' if majority else '0-1'}" if n_amb else ""
        log.warning(f"warning: {label} mixes score scales (0/1 or 0-1: {n_unit} records, 1-10 judge: {n_judge}); "
                    f"each record is rescaled from its own scale{amb}")
    return np.array([majority if s is None else s for s in seen], dtype=bool)


def record_scales(records: Sequence[RoutingRecord]) -> np.ndarray:
    """Per record: whether its scores are on the 1-10 judge scale, decided within its benchmark (its
    ``benchmark`` field, else its file), from all of its models' scores."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r.benchmark or r.source, []).append(i)
    judge = np.zeros(len(records), dtype=bool)
    for key, rows in groups.items():
        label = f"benchmark {key!r}" if records[rows[0]].benchmark else (key or "the records")
        judge[rows] = judge_rows([records[i].scores.values() for i in rows], label)
    return judge
