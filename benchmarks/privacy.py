"""Privacy detector figures on data/privacy/eval.jsonl: precision/recall per kind and overall, false-positive
rate on benign look-alikes, and latency per query.

Run: `.venv/bin/python benchmarks/privacy.py [--split dev|heldout..heldout9|all] [--errors] [--wild] [--rules-only]`.
`--rules-only` turns the learned second opinion off (`MOAI_PRIVACY_MODEL=off`), to see what it adds.
`--scale` prints only the scan time of long prompts instead: 10 KB, 300 KB, 1 MB and 4 MB of ordinary text
(stdlib docstrings and sources, the eval prompts joined, the repetitive texts a client may send), each seen for
the first time, and whether a password written at the very end of each is still found.
`--wild` also scans unlabelled benign text found on this machine (Python's stdlib docstrings for English,
the system's gettext catalogs for French/German/Spanish) and reports how often anything is flagged: an upper
bound on the false-positive rate outside the hand-written set (some hits are real maintainers' emails).
Goals (issue 7): recall >= 0.98 on sensitive prompts, FPR <= 5% on benign look-alikes, p50 <= 5 ms.
"""

from __future__ import annotations

import argparse
import ast
import gettext
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from moai.gate import privacy_scan
from moai.gate.privacy import KINDS, detect, detect_text

EVAL = Path(__file__).resolve().parent.parent / "data" / "privacy" / "eval.jsonl"
# Splits never used to change a rule nor to train the learned model: their figures are the honest ones
# (heldout7's misses were read at its first measure; heldout9 was measured only after the last change).
UNTUNED = ("heldout4", "heldout5", "heldout7", "heldout9")


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.3f}" if b else "-"


def load(split: str) -> list[dict[str, Any]]:
    """Rows of eval.jsonl in `split` ("all" for every split)."""
    rows = [json.loads(line) for line in EVAL.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if split == "all" or r.get("split", "dev") == split]


def run(rows: list[dict[str, Any]], repeats: int = 5) -> tuple[list[list[str]], list[float]]:
    """Predicted kinds per row, and per-query latency (median of `repeats` cold runs, after one warm-up).

    The per-text cache is cleared before every timed call: these are first-sight costs."""
    detect("warm-up: lazy patterns compile here, not in the timings")
    preds: list[list[str]] = []
    lat: list[float] = []
    for r in rows:
        times = []
        for _ in range(repeats):
            detect_text.cache_clear()
            t0 = time.perf_counter()
            rep = detect(r["text"])
            times.append(time.perf_counter() - t0)
        preds.append(rep.kinds)
        lat.append(statistics.median(times) * 1000)
    return preds, lat


def wild_half(text: str) -> str:
    """"train" or "test": half of the wild text teaches the learned model what ordinary text looks like
    (data/privacy/train_semantic.py); `--wild` measures on the other half only."""
    return "train" if hashlib.sha1(text.encode()).digest()[0] % 2 == 0 else "test"


def wild_texts() -> dict[str, list[str]]:
    """Benign text in the wild, per language; empty lists where this machine has none."""
    out: dict[str, list[str]] = {"en": [], "fr": [], "de": [], "es": []}
    stdlib = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    for f in stdlib.rglob("*.py"):
        if "test" in f.parts or "site-packages" in f.parts:
            continue
        try:
            tree = ast.parse(f.read_text(errors="ignore"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 40:
                    out["en"].append(doc)
    for lang in ("fr", "de", "es"):
        for mo in Path(f"/usr/share/locale/{lang}/LC_MESSAGES").glob("*.mo"):
            try:
                with mo.open("rb") as fh:
                    catalog = gettext.GNUTranslations(fh)._catalog  # type: ignore[attr-defined]
            except (OSError, UnicodeDecodeError, ValueError):
                continue
            out[lang].extend(v for v in catalog.values()
                             if isinstance(v, str) and len(v) > 15 and "Last-Translator" not in v)
    return out


def report_wild(con: Console) -> None:
    """Print how often benign unlabelled text gets flagged, per language."""
    t = Table(title="benign text in the wild (unlabelled, the half not trained on): share of texts flagged")
    for col in ("lang", "source", "texts", "flagged", "rate", "kinds"):
        t.add_column(col, justify="right")
    for lang, every in wild_texts().items():
        texts = [x for x in every if wild_half(x) == "test"]
        kinds: dict[str, int] = {}
        flagged = 0
        for text in texts:
            rep = detect(text)
            flagged += rep.sensitive
            for k in rep.kinds:
                kinds[k] = kinds.get(k, 0) + 1
        source = "stdlib docstrings" if lang == "en" else "gettext catalogs"
        rate = f"{flagged / len(texts):.4f}" if texts else "-"
        t.add_row(lang, source, str(len(texts)), str(flagged), rate,
                  ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    con.print(t)


SIZES = (10_000, 300_000, 1_000_000, 4_000_000)
END_SECRET = " PS: my password is Hunter2!x"


def scale_texts() -> dict[str, str]:
    """Long texts of each kind, 4 MB at least: the benign docstrings and sources of this machine's stdlib, the
    eval prompts joined (sensitive ones among them), and repetitive texts."""
    stdlib = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    sources = []
    for f in sorted(stdlib.glob("*.py")):
        sources.append(f.read_text(errors="ignore"))
        if sum(map(len, sources)) > SIZES[-1]:
            break
    texts = {"prose (stdlib docstrings)": "\n\n".join(wild_texts()["en"]), "code (stdlib sources)": "".join(sources),
             "prompts (eval set joined)": "\n".join(r["text"] for r in load("all")),
             "'hello world ' repeated": "hello world ", "'A' repeated": "A"}
    return {k: (v * (SIZES[-1] // max(1, len(v)) + 1))[:SIZES[-1]] for k, v in texts.items()}


def report_scale(con: Console) -> None:
    """Print the time `detect` takes on long texts (each seen for the first time: no cached result or index)."""
    detect("warm-up " * 1000)  # patterns compile and the scan's gates are read once per process: not timed
    t = Table(title="scan time of long prompts (ms, best of 3; first sight: no cached result, no cached index)")
    t.add_column("text")
    for n in SIZES:
        t.add_column(f"{n // 1000:,} KB" if n < 10**6 else f"{n // 10**6} MB", justify="right")
    t.add_column("ns/char at 4 MB", justify="right")
    t.add_column("password at the end found", justify="right")
    for name, text in scale_texts().items():
        row, found = [], []
        for n in SIZES:
            best = float("inf")
            for _ in range(3):
                detect_text.cache_clear()
                privacy_scan.clear()
                t0 = time.perf_counter()
                detect(text[:n])
                best = min(best, time.perf_counter() - t0)
            row.append(best)
            detect_text.cache_clear()
            found.append("secret" in detect(text[:n - len(END_SECRET)] + END_SECRET).kinds)
        t.add_row(name, *(f"{x * 1000:.0f}" for x in row), f"{row[-1] / SIZES[-1] * 1e9:.0f}",
                  "all sizes" if all(found) else ", ".join(f"{n}: {f}" for n, f in zip(SIZES, found, strict=True)))
    con.print(t)


def main() -> None:
    """Print the tables and whether the goals are met."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--split", default="all",
                    choices=["dev", *(f"heldout{n}" for n in ("", 2, 3, 4, 5, 6, 7, 8, 9)), "all"])
    ap.add_argument("--errors", action="store_true", help="list every misclassified prompt")
    ap.add_argument("--wild", action="store_true", help="also scan unlabelled benign text on this machine")
    ap.add_argument("--rules-only", action="store_true", help="without the learned second opinion")
    ap.add_argument("--scale", action="store_true", help="only the scan time of long prompts (10 KB to 4 MB)")
    args = ap.parse_args()
    if args.rules_only:
        os.environ["MOAI_PRIVACY_MODEL"] = "off"
    if args.scale:
        report_scale(Console())
        return
    rows = load(args.split)
    preds, lat = run(rows)
    con = Console()

    t = Table(title=f"privacy detector on {EVAL.name} (split={args.split}, {len(rows)} prompts)")
    for col in ("kind", "support", "TP", "FP", "FN", "precision", "recall"):
        t.add_column(col, justify="right" if col != "kind" else "left")
    for kind in KINDS:
        tp = sum(kind in p and kind in r["kinds"] for r, p in zip(rows, preds, strict=True))
        fp = sum(kind in p and kind not in r["kinds"] for r, p in zip(rows, preds, strict=True))
        fn = sum(kind not in p and kind in r["kinds"] for r, p in zip(rows, preds, strict=True))
        t.add_row(kind, str(tp + fn), str(tp), str(fp), str(fn), _ratio(tp, tp + fp), _ratio(tp, tp + fn))
    tp = sum(bool(p) and r["sensitive"] for r, p in zip(rows, preds, strict=True))
    fp = sum(bool(p) and not r["sensitive"] for r, p in zip(rows, preds, strict=True))
    fn = sum(not p and r["sensitive"] for r, p in zip(rows, preds, strict=True))
    t.add_row("[b]sensitive (any kind)[/b]", str(tp + fn), str(tp), str(fp), str(fn), _ratio(tp, tp + fp),
              _ratio(tp, tp + fn))
    con.print(t)

    t2 = Table(title="per language: recall on sensitive, false-positive rate on benign look-alikes")
    for col in ("lang", "sensitive", "recall", "benign", "FPR"):
        t2.add_column(col, justify="right")
    for lang in sorted({r["lang"] for r in rows}):
        sens = [bool(p) for r, p in zip(rows, preds, strict=True) if r["lang"] == lang and r["sensitive"]]
        ben = [bool(p) for r, p in zip(rows, preds, strict=True) if r["lang"] == lang and not r["sensitive"]]
        t2.add_row(lang, str(len(sens)), _ratio(sum(sens), len(sens)), str(len(ben)), _ratio(sum(ben), len(ben)))
    n_ben = sum(not r["sensitive"] for r in rows)
    t2.add_row("[b]all[/b]", str(tp + fn), _ratio(tp, tp + fn), str(n_ben), _ratio(fp, n_ben))
    con.print(t2)

    t3 = Table(title="per split (dev, heldout..heldout3, heldout6 and heldout8 were used to fix rules and train "
                     "the learned model; " + ", ".join(UNTUNED) + " never were)")
    for col in ("split", "sensitive", "recall", "benign", "FPR"):
        t3.add_column(col, justify="right")
    for split in sorted({r.get("split", "dev") for r in rows}, key=lambda x: (x != "dev", x)):
        pairs = [(r, bool(p)) for r, p in zip(rows, preds, strict=True) if r.get("split", "dev") == split]
        sens = [p for r, p in pairs if r["sensitive"]]
        ben = [p for r, p in pairs if not r["sensitive"]]
        t3.add_row(split, str(len(sens)), _ratio(sum(sens), len(sens)), str(len(ben)), _ratio(sum(ben), len(ben)))
    con.print(t3)

    q = statistics.quantiles(lat, n=100)
    con.print(f"latency per query (ms): p50 {statistics.median(lat):.3f}  p90 {q[89]:.3f}  p99 {q[98]:.3f}  "
              f"max {max(lat):.3f}  (mean length {statistics.mean(len(r['text']) for r in rows):.0f} chars)")
    chat = [{"role": "user" if i % 2 == 0 else "assistant", "content": r["text"]} for i, r in enumerate(rows[:40])]
    nxt = {"role": "user", "content": "And one more question on top of all that, please."}
    cold, warm = [], []
    for _ in range(5):
        detect_text.cache_clear()
        t0 = time.perf_counter()
        detect(chat)
        cold.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        detect([*chat, nxt])
        warm.append((time.perf_counter() - t0) * 1000)
    con.print(f"40-message chat ({sum(len(m['content']) for m in chat)} chars): {statistics.median(cold):.2f} ms "
              f"cold, {statistics.median(warm):.2f} ms for the next turn (history cached)")
    p50 = statistics.median(lat)
    for label, keep in (("tuned splits (dev, heldout..heldout3, heldout6, heldout8)",
                         lambda r: r.get("split", "dev") not in UNTUNED),
                        *((f"untuned {s} (honest estimate)", lambda r, s=s: r.get("split") == s) for s in UNTUNED),
                        ("all untuned splits together", lambda r: r.get("split") in UNTUNED)):
        sel = [(r, bool(p)) for r, p in zip(rows, preds, strict=True) if keep(r)]
        sens, ben = [p for r, p in sel if r["sensitive"]], [p for r, p in sel if not r["sensitive"]]
        if not sens or not ben:
            continue
        recall, fpr = sum(sens) / len(sens), sum(ben) / len(ben)
        ok = recall >= 0.98 and fpr <= 0.05 and p50 <= 5
        con.print(f"goals (recall >= 0.98, FPR <= 0.05, p50 <= 5 ms) on {label}: recall {recall:.3f}, "
                  f"FPR {fpr:.3f}, p50 {p50:.3f} ms -> {'[green]met' if ok else '[red]not met'}")
    if args.wild:
        report_wild(con)
    if args.errors:
        for r, p in zip(rows, preds, strict=True):
            if set(p) != set(r["kinds"]):
                con.print(f"[yellow]{r['id']}[/yellow] expected {r['kinds']} got {p}: {r['text'][:100]!r}")


if __name__ == "__main__":
    main()
