"""The tuning result as a rich table: the chosen point on the tuning records and on the held-out ones."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from moai.tuning.offline import Point, Result


def table(res: Result, held: Point | None, mix: str, n_tune: int, n_held: int) -> Table:
    c = res.chosen
    # a mix name is text, not rich markup
    t = Table(title=Text(f"mix {mix}: {c.knob} = {c.value:g} for {res.target}", style="table.title"))
    for col in ("records", "n", "quality", "USD / 1k req", "mean latency s", "p95 latency s", "CO2 g / 1k req",
                res.target.kind, "met"):
        t.add_column(col, justify="right")
    rows = [("tuning", n_tune, c)] + ([("held-out", n_held, held)] if held is not None else [])
    for name, n, p in rows:
        t.add_row(name, str(n), f"{p.quality:.3f}", f"{p.cost_usd * 1000:.4g}", f"{p.mean_latency_s:.2f}",
                  f"{p.p95_latency_s:.2f}", f"{p.co2_g * 1000:.4g}", f"{p.measured:.4g}",
                  "yes" if p.feasible else "no")
    t.caption = (f"reference: most expensive model ${res.reference.max_model_cost * 1000:.4g}/1k, "
                 f"best single model quality {res.reference.best_quality:.3f}")
    return t
