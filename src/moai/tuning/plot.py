"""The trade-off curve as a PNG: what every knob value gives, and which one was chosen (and why)."""

from __future__ import annotations

from pathlib import Path

from moai.tuning.offline import Result


def plot_result(res: Result, path: str | Path, title: str = "") -> Path:
    """Left: quality vs cost (or p95 latency for a latency target). Right: the target's quantity vs the knob."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = res.target.kind == "p95_latency_s"
    xs = [p.p95_latency_s if lat else p.cost_usd * 1000 for p in res.curve]
    ys = [p.quality for p in res.curve]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    ok = [p.feasible for p in res.curve]
    a.plot(xs, ys, "-", color="0.7", zorder=1)
    a.scatter([x for x, f in zip(xs, ok, strict=True) if f], [y for y, f in zip(ys, ok, strict=True) if f],
              s=14, color="tab:blue", label="meets target", zorder=2)
    a.scatter([x for x, f in zip(xs, ok, strict=True) if not f], [y for y, f in zip(ys, ok, strict=True) if not f],
              s=14, color="tab:red", alpha=0.5, label="misses target", zorder=2)
    c = res.chosen
    a.scatter([c.p95_latency_s if lat else c.cost_usd * 1000], [c.quality], marker="*", s=260, color="gold",
              edgecolor="black", zorder=3, label=f"chosen: {c.knob}={c.value:g}")
    a.set_xlabel("p95 latency (s)" if lat else "USD per 1000 requests")
    a.set_ylabel("mean quality")
    if not lat and min(xs) > 0:
        a.set_xscale("log")
    a.legend(fontsize=8, loc="lower right")
    a.grid(alpha=0.3)
    knob = [p.value for p in res.curve]
    b.plot(knob, [p.measured for p in res.curve], "-o", ms=3)
    b.axhline(res.target.value, color="tab:red", ls="--", label=f"target {res.target}")
    b.scatter([c.value], [c.measured], marker="*", s=260, color="gold", edgecolor="black", zorder=3)
    if c.knob.startswith("weights.") and any(v > 0 for v in knob):
        b.set_xscale("symlog", linthresh=min(v for v in knob if v > 0))
    b.set_xlabel(c.knob)
    b.set_ylabel(res.target.kind)
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.suptitle((title or f"tuning for {res.target}").replace("$", r"\$"))  # a "$" in a mix name is not math
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
