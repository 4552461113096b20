"""Gate vs baselines on shared/data/routing, cross-validated; prints the comparison table, writes PNGs.

    .venv/bin/python benchmarks/gate_compare.py [--folds 5] [--out benchmarks/out] [--data DIR]

One training per fold: every evaluated set (RouteLLM MMLU/GSM8K, RouterBench x3, LLMRouter, RouterArena, the
last scored both on cost and as a pair, APGR of gemini-2.0-flash over claude-3-haiku) is split into k folds
grouped by prompt; fold f of every set is the test set, everything else (plus AlpacaEval) is training data,
after dropping training records that contain a test prompt (GSM8K questions reappear inside LLMRouter). The
gate and every baseline see the same training records.
Out of domain: MT-Bench has no per-question labels here. With ``--mt-bench JUDGEMENTS`` (RouteLLM's
routellm/evals/mt_bench/judgements.jsonl) every router is trained on all the records and routes
gpt-4-1106-preview vs Mixtral-8x7B on MT-Bench's 72 first turns, scored as RouteLLM scores them. Without it,
as a proxy, routers are trained without AlpacaEval and scored on it for the same pair; and with ``--loso``,
every set that scores both models is left out of training in turn and routed between them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from moai.bench.baselines import Router, all_baselines
from moai.bench.compare import GateRouter, cost_sweep, router_matrix
from moai.bench.datasets import RoutingRecord, load_records, model_names, score_matrix
from moai.bench.metrics import cost_report, pair_report, routellm_curve
from moai.bench.mt_bench import JudgementError, load_judgements, load_questions, mt_bench_set
from moai.bench.plots import plot_cost_curves, plot_pair_curves
from moai.gate.quality import canonical
from moai.gate.store import Gate
from moai.gate.train import TrainConfig

STRONG, WEAK = "gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"
# short name -> (set, strong, weak): RouteLLM's pair; RouterArena's two models, the better one named strong
PAIR_SETS = {"mmlu": ("routellm-mmlu", STRONG, WEAK), "gsm8k": ("routellm-gsm8k", STRONG, WEAK),
             "routerarena-pair": ("routerarena", "gemini-2.0-flash-001", "claude-3-haiku-20240307")}
# RouterArena: two models with real per-answer costs, where the better one (gemini-2.0-flash) is also the cheaper
MULTI_SETS = ["routerbench-arc_challenge", "routerbench-mbpp", "routerbench-winograde", "llmrouter", "routerarena"]
PUBLISHED = {"mmlu": "SW 0.603 / CPT50 35.4% / CPT80 71.6%", "gsm8k": "Causal-LLM 0.622 / 33.6% / 63.3%"}


def _norm(t: str) -> list[str]:
    return re.sub(r"[^a-z0-9]+", " ", t.lower()).split()


def shingle_index(records: Sequence[RoutingRecord], n: int = 8) -> dict[str, set[int]]:
    """n-word shingles -> records containing them (to find a test prompt inside a training prompt)."""
    idx: dict[str, set[int]] = defaultdict(set)
    for i, r in enumerate(records):
        w = _norm(r.prompt)
        for s in range(0, max(len(w) - n + 1, 1)):
            idx[" ".join(w[s : s + n])].add(i)
    return idx


WRAPPER_WORDS = 30  # instructions a data set may add after the question ("put your final answer in ...")


def same_question(test: str, other: str) -> bool:
    """Whether normalised text ``other`` asks the question ``test``: it contains it as its last part (a wrapper
    such as LLMRouter's "put your final answer in \\boxed{}" may follow) or mostly consists of it. A test
    question that is only one of ``other``'s few-shot examples does not count: RouterBench ARC's prompts
    all share five fixed examples that are LLMRouter questions, and counting those dropped every ARC
    training record whenever one of them was in the test fold."""
    at = other.find(test)
    if at < 0:
        return False
    return len(other[at + len(test):].split()) <= WRAPPER_WORDS or len(test) >= 0.5 * len(other)


def overlapping(test: Sequence[int], records: Sequence[RoutingRecord], idx: dict[str, set[int]]) -> set[int]:
    """Records that ask a test prompt's question, or whose question is the test prompt's (via 8-word shingles)."""
    words: dict[int, list[str]] = {}

    def norm(j: int) -> str:  # each record normalised once, however many test prompts it is a candidate for
        if j not in words:
            words[j] = _norm(records[j].prompt)
        return " ".join(words[j])

    out: set[int] = set()
    for i in test:
        text = norm(i)
        w = words[i]
        keys = [" ".join(w[s : s + 8]) for s in range(0, max(len(w) - 7, 1))]
        cands = min((idx.get(k, set()) for k in keys), key=len)
        out |= {j for j in cands if j != i and same_question(text, norm(j))}
        # the other way round: a shorter record that is this prompt's own question has its last shingle among
        # this prompt's last shingles (the wrapper's words, a shingle, and some slack)
        last = range(max(len(w) - WRAPPER_WORDS - 15, 0), max(len(w) - 7, 1))
        tail = {j for s in last for j in idx.get(" ".join(w[s : s + 8]), ())}
        out |= {j for j in tail if j != i and same_question(norm(j), text)}
    return out


def fold_of(r: RoutingRecord, k: int, seed: int) -> int:
    return int(hashlib.sha1(f"{seed}:{r.prompt}".encode()).hexdigest()[:8], 16) % k


def llmrouter_costs(records: Sequence[RoutingRecord], prices: dict[str, dict]) -> None:
    """LLMRouter has prices, not per-answer costs: USD = price * (prompt tokens + 256 output) / 1e6."""
    for r in records:
        if r.benchmark == "llmrouter" and not r.cost_usd:
            n = len(r.prompt) / 4 + 256
            r.cost_usd = {m: prices[m]["input_price"] * n / 1e6 for m in r.scores if m in prices}


def predicted_costs(in_set: Sequence[RoutingRecord], train: Sequence[RoutingRecord],
                    models: Sequence[str]) -> np.ndarray:
    """Mean USD per answer per model from the set's own training records, else from every training record
    that priced the model."""
    out = []
    for m in models:
        own = [r.cost_usd[m] for r in in_set if m in r.cost_usd]
        out.append(float(np.mean(own)) if own else
                   float(np.mean([r.cost_usd[m] for r in train if m in r.cost_usd] or [np.nan])))
    return np.array(out)


def make_routers(seed: int, cfg: TrainConfig) -> list[Router]:
    return [GateRouter(config=cfg), *all_baselines(seed)]


def fmt(vals: Sequence[float], pct: bool = False) -> str:
    """mean±sd over folds; "—" where no fold has a value (RouterArena: no budget under its best model's cost)."""
    a = np.array(vals, float)
    if not np.isfinite(a).any():
        return "—"
    return f"{a.mean():.1f}±{a.std():.1f}" if pct else f"{a.mean():.3f}±{a.std():.3f}"


def ood_alpaca(records: list[RoutingRecord], cfg: TrainConfig, seed: int, out: Path, only_gate: bool) -> None:
    """MT-Bench proxy: train without AlpacaEval, route gpt-4 vs Mixtral on its open-ended prompts.

    Labels: score = P(judge prefers the answer over gpt4_1106_preview's), so gpt-4's own is 0.5.
    Also writes the gate's strong-vs-weak scores for the 80 MT-Bench first turns (no labels here).
    """
    test_idx = [i for i, r in enumerate(records) if Path(r.source).stem == "alpacaeval2"]
    idx = shingle_index(records)
    drop = overlapping(test_idx, records, idx) | set(test_idx)
    train = [r for i, r in enumerate(records) if i not in drop]
    test = [records[i] for i in test_idx]
    y = score_matrix(test, ["gpt4_1106_preview", "Mixtral-8x7B-Instruct-v0.1_concise"])
    keep = np.isfinite(y).all(1)
    test = [r for r, k in zip(test, keep, strict=True) if k]
    y = y[keep]
    print(f"\n# Out of domain (MT-Bench proxy): trained without AlpacaEval ({len(train)} records), "
          f"routing gpt-4-1106-preview vs Mixtral-8x7B on {len(test)} AlpacaEval prompts")
    print(f"{'router':18s} {'APGR':>7s} {'CPT50 %':>8s} {'CPT80 %':>8s}")
    routers = make_routers(seed, cfg)[: 1 if only_gate else None]
    curves = {}
    for router in routers:
        router.fit(train)
        sc = router.score(test, STRONG, WEAK)
        rep = pair_report(sc, y[:, 0], y[:, 1])
        curves[router.name] = routellm_curve(sc, y[:, 0], y[:, 1])
        print(f"{router.name:18s} {rep.apgr:7.3f} {rep.cpt50:8.1f} {rep.cpt80:8.1f}", flush=True)
        if isinstance(router, GateRouter) and router.gate is not None:
            mt = Path(__file__).resolve().parents[2] / "shared/data/questions/mt-bench-questions.jsonl"
            if mt.is_file():
                qs = load_questions(mt)
                q = router.gate.quality_matrix([x["turns"][0] for x in qs], [STRONG, WEAK])
                with (out / "mt-bench-gate-scores.jsonl").open("w") as fh:
                    for x, row in zip(qs, q, strict=True):
                        fh.write(json.dumps({"question_id": x["question_id"], "score": float(row[0] - row[1])}) + "\n")
    rep0 = pair_report(np.zeros(len(y)), y[:, 0], y[:, 1])
    plot_pair_curves(curves, rep0.weak_acc, rep0.strong_acc, out / "ood-alpacaeval.png",
                     "AlpacaEval, out of domain", "mixtral", "gpt-4")


def ood_mt_bench(records: list[RoutingRecord], cfg: TrainConfig, seed: int, out: Path, only_gate: bool,
                 judgements: Path, questions: Path) -> None:
    """MT-Bench with its GPT-4 judgements: every router trained on all the records (none is MT-Bench)."""
    mt = mt_bench_set(load_questions(questions), load_judgements(judgements), STRONG, WEAK)
    test = [RoutingRecord(id=f"mt-bench-{q}", prompt=t, scores={}) for q, t in
            zip(mt.question_ids, mt.first_turns, strict=True)]
    y = mt.y
    print(f"\n# Out of domain: MT-Bench, {len(test)} questions routed by their first turn, trained on "
          f"{len(records)} records; mean judge score gpt-4 {y[:, 0].mean():.2f}, Mixtral {y[:, 1].mean():.2f} "
          "(published best: MF 0.802 / CPT50 13.4% / CPT80 31.3%)")
    print("APGR ± sd over 500 bootstrap resamples of the questions; 'vs gate': the gate's APGR minus the "
          "router's, on the same resamples (mean ± sd)")
    print(f"{'router':18s} {'APGR':>13s} {'vs gate':>14s} {'CPT50 %':>8s} {'CPT80 %':>8s}")
    boot = np.random.default_rng(seed).integers(0, len(y), size=(500, len(y)))

    def resampled(sc: np.ndarray) -> np.ndarray:
        return np.array([pair_report(sc[b], y[b, 0], y[b, 1]).apgr for b in boot])

    curves: dict = {}
    gate_boot: np.ndarray | None = None

    def row(name: str, sc: np.ndarray) -> None:
        nonlocal gate_boot
        rep, bs = pair_report(sc, y[:, 0], y[:, 1]), resampled(sc)
        gate_boot = bs if gate_boot is None else gate_boot
        d = gate_boot - bs
        vs = f"{d.mean():+.3f}±{d.std():.3f}" if name != "gate" else ""
        print(f"{name:18s} {f'{rep.apgr:.3f}±{bs.std():.3f}':>13s} {vs:>14s} {rep.cpt50:8.1f} {rep.cpt80:8.1f}",
              flush=True)

    for router in make_routers(seed, cfg)[: 1 if only_gate else None]:
        router.fit(records)
        sc = np.asarray(router.score(test, STRONG, WEAK), float)
        curves[router.name] = routellm_curve(sc, y[:, 0], y[:, 1])
        row(router.name, sc)
        if isinstance(router, GateRouter) and router.gate is not None:
            for part, q in gate_parts(router.gate, test).items():
                row(f"gate[{part}]", q[:, 0] - q[:, 1])
    rep0 = pair_report(np.zeros(len(y)), y[:, 0], y[:, 1])
    plot_pair_curves(curves, rep0.weak_acc, rep0.strong_acc, out / "mt-bench.png",
                     "MT-Bench, out of domain", "mixtral", "gpt-4", ylabel="mean judge score (1-10)", scale=0.01)


LOSO_SETS = ["routellm-mmlu", "routellm-gsm8k", "routerbench-arc_challenge", "routerbench-mbpp",
             "routerbench-winograde"]


def pair_labels(recs: Sequence[RoutingRecord]) -> np.ndarray:
    """(n, 2) scores of gpt-4-1106-preview and Mixtral-8x7B under whatever names the set gives them."""
    y = np.full((len(recs), 2), np.nan)
    want = {canonical(STRONG): 0, canonical(WEAK): 1}
    for i, r in enumerate(recs):
        for m, v in r.scores.items():
            if (j := want.get(canonical(m))) is not None:
                y[i, j] = v
    return y


def gate_parts(gate: Gate, recs: Sequence[RoutingRecord], strong: str = STRONG,
               weak: str = WEAK) -> dict[str, np.ndarray]:
    """Each of the gate's heads alone: (n, 2) quality of the strong and the weak model."""
    texts = [r.prompt for r in recs]
    E = gate.featurizer.embed(texts)
    X, S = gate.featurizer.transform(texts, E)
    js, jw = gate._ensure([strong, weak])
    return {part: q[:, [js, jw]] for part, q in gate.head.parts(X, S, E).items()}


def ood_sources(records: list[RoutingRecord], cfg: TrainConfig, seed: int, only_gate: bool) -> None:
    """Out of domain with labels: each set that scores both gpt-4 and Mixtral is left out of training in turn
    (with every record asking one of its questions) and routed between the two, as MT-Bench must be."""
    idx = shingle_index(records)
    table: dict[str, dict[str, float]] = {}  # router -> set -> APGR, routers in their usual order
    for s in LOSO_SETS:
        test_idx = [i for i, r in enumerate(records) if Path(r.source).stem == s]
        drop = overlapping(test_idx, records, idx) | set(test_idx)
        train = [r for i, r in enumerate(records) if i not in drop]
        test = [records[i] for i in test_idx]
        y = pair_labels(test)
        keep = np.isfinite(y).all(1)
        test, y = [r for r, k in zip(test, keep, strict=True) if k], y[keep]
        print(f"leave out {s}: train {len(train)}, test {len(test)}", file=sys.stderr, flush=True)
        for router in make_routers(seed, cfg)[: 1 if only_gate else None]:
            router.fit(train)
            table.setdefault(router.name, {})[s] = pair_report(router.score(test, STRONG, WEAK), y[:, 0], y[:, 1]).apgr
            if isinstance(router, GateRouter) and router.gate is not None:
                for part, q in gate_parts(router.gate, test).items():
                    table.setdefault(f"gate[{part}]", {})[s] = pair_report(q[:, 0] - q[:, 1], y[:, 0], y[:, 1]).apgr
    print("\n# Out of domain, leave one set out: APGR routing gpt-4-1106-preview vs Mixtral-8x7B on a set "
          "no record of which was trained on")
    print(f"{'router':18s} " + " ".join(f"{s.split('-', 1)[1][:11]:>11s}" for s in LOSO_SETS) + f" {'mean':>7s}")
    for n, by_set in table.items():
        row = [by_set[s] for s in LOSO_SETS]
        print(f"{n:18s} " + " ".join(f"{v:11.3f}" for v in row) + f" {np.mean(row):7.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/routing"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/out")
    ap.add_argument("--only-gate", action="store_true", help="skip baselines (quick method iteration)")
    ap.add_argument("--set", action="append", default=[], help="training setting KEY=VALUE (as moai gate train)")
    ap.add_argument("--ood-only", action="store_true", help="only the out-of-domain (MT-Bench proxy) part")
    ap.add_argument("--no-ood", action="store_true", help="skip the out-of-domain part")
    ap.add_argument("--mt-bench", type=Path, metavar="JUDGEMENTS",
                    help="only MT-Bench out of domain, scored by these judgements (RouteLLM's judgements.jsonl)")
    ap.add_argument("--mt-bench-questions", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared/data/questions/mt-bench-questions.jsonl")
    ap.add_argument("--loso", action="store_true",
                    help="only the leave-one-set-out part: gpt-4 vs Mixtral on each set, trained without it")
    args = ap.parse_args(argv)
    try:
        cfg = TrainConfig().override(args.set)
    except ValueError as e:
        ap.error(str(e))
    data = Path(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = load_records(sorted(data.glob("*.jsonl")))
    llmrouter_costs(records, json.loads((data / "llmrouter-models.json").read_text()))
    if args.mt_bench:
        try:
            ood_mt_bench(records, cfg, args.seed, out, args.only_gate, args.mt_bench, args.mt_bench_questions)
        except JudgementError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.loso:
        ood_sources(records, cfg, args.seed, args.only_gate)
        return 0
    if args.ood_only:
        ood_alpaca(records, cfg, args.seed, out, args.only_gate)
        return 0
    by_set: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_set[Path(r.source).stem].append(i)
    evaluated = list(dict.fromkeys([s for s, _, _ in PAIR_SETS.values()] + MULTI_SETS))
    idx = shingle_index(records)
    pair_res: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    cost_res: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    curves: dict[str, dict] = defaultdict(dict)  # "pair:<set>" for the pair view, the set name for the cost view
    t_start = time.time()
    for f in range(args.folds):
        test = {s: [i for i in by_set[s] if fold_of(records[i], args.folds, args.seed) == f] for s in evaluated}
        all_test = {i for v in test.values() for i in v}
        drop = overlapping(sorted(all_test), records, idx) | all_test
        train = [records[i] for i in range(len(records)) if i not in drop]
        print(f"fold {f}: train {len(train)} (dropped {len(drop) - len(all_test)} overlapping), "
              f"test {len(all_test)}", file=sys.stderr, flush=True)
        routers = make_routers(args.seed + f, cfg)
        if args.only_gate:
            routers = routers[:1]
        for router in routers:
            t0 = time.time()
            router.fit(train)
            name = router.name
            for s, strong, weak in PAIR_SETS.values():
                recs = [records[i] for i in test[s]]
                y = score_matrix(recs, [strong, weak])
                sc = router.score(recs, strong, weak)
                rep = pair_report(sc, y[:, 0], y[:, 1])
                for k in ("apgr", "cpt50", "cpt80"):
                    pair_res[s][f"{name}.{k}"].append(getattr(rep, k))
                if f == 0:
                    curves[f"pair:{s}"][name] = (routellm_curve(sc, y[:, 0], y[:, 1]), rep)
                if isinstance(router, GateRouter) and router.gate is not None:
                    for part, q in gate_parts(router.gate, recs, strong, weak).items():
                        rp = pair_report(q[:, 0] - q[:, 1], y[:, 0], y[:, 1])
                        pair_res[s][f"gate[{part}].apgr"].append(rp.apgr)
            for s in MULTI_SETS:
                recs = [records[i] for i in test[s]]
                tr = [r for r in train if Path(r.source).stem == s]
                models = model_names(recs)
                y, c = score_matrix(recs, models), np.full((len(recs), len(models)), np.nan)
                for a, r in enumerate(recs):
                    for b, m in enumerate(models):
                        c[a, b] = r.cost_usd.get(m, np.nan)
                ctr = predicted_costs(tr, train, models)
                q = router_matrix(router, recs, models)
                sw = cost_sweep(q, ctr, y, c)
                rep = cost_report(sw.costs, sw.quals, y, c, models)
                for k in ("auc", "q_at_25", "q_at_50", "q_at_100", "max_quality", "best_quality", "best_cost"):
                    cost_res[s][f"{name}.{k}"].append(getattr(rep, k))
                if f == 0:
                    singles = {m: (float(np.nanmean(c[:, j])), float(np.nanmean(y[:, j])))
                               for j, m in enumerate(models)}
                    curves[s][name] = ((sw.costs, sw.quals), singles)
            print(f"  {name}: {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    total = time.time() - t_start
    # ----------------------------------------------------------------- report
    names = [r.name for r in make_routers(0, cfg)][: 1 if args.only_gate else None]
    print(f"\n# Pair sets: strong vs weak, routed by share of strong calls; {args.folds}-fold CV, mean±sd over folds")
    for short, (s, strong, weak) in PAIR_SETS.items():
        res = pair_res[s]
        published = f"published best: {PUBLISHED[short]}" if short in PUBLISHED else "no published figure"
        print(f"\n## {short}: {strong} vs {weak}   ({published})")
        print(f"{'router':18s} {'APGR':>13s} {'CPT50 %':>11s} {'CPT80 %':>11s}")
        for n in names + sorted({k.split('.')[0] for k in res if k.startswith('gate[')}):
            if f"{n}.apgr" not in res:
                continue
            c50 = fmt(res[f"{n}.cpt50"], True) if f"{n}.cpt50" in res else ""
            c80 = fmt(res[f"{n}.cpt80"], True) if f"{n}.cpt80" in res else ""
            print(f"{n:18s} {fmt(res[f'{n}.apgr']):>13s} {c50:>11s} {c80:>11s}")
        pts = {n: v[0] for n, v in curves[f"pair:{s}"].items()}
        rep0 = next(iter(curves[f"pair:{s}"].values()))[1]
        plot_pair_curves(pts, rep0.weak_acc, rep0.strong_acc, out / f"{short}.png", f"{short} (fold 0)", weak, strong)
    print("\n# Many-model sets: quality vs mean cost (lambda sweep of quality - lambda * predicted cost)")
    for s in MULTI_SETS:
        res = cost_res[s]
        bq, bc = np.mean(res["gate.best_quality"]), np.mean(res["gate.best_cost"])
        print(f"\n## {s}   best single model: quality {bq:.3f} at ${bc:.6f}/query")
        heads = ("AUC(logcost)", "q@25%cost", "q@50%cost", "q@100%cost", "max q")
        print(f"{'router':18s} " + " ".join(f"{h:>13s}" for h in heads))
        for n in names:
            if f"{n}.auc" in res:
                print(f"{n:18s} " + " ".join(f"{fmt(res[f'{n}.{k}']):>13s}" for k in
                                             ("auc", "q_at_25", "q_at_50", "q_at_100", "max_quality")))
        first = curves[s]
        singles = next(iter(first.values()))[1]
        plot_cost_curves({n: v[0] for n, v in first.items()}, singles, out / f"{s}.png", f"{s} (fold 0)")
    print(f"\ncross-validation {total:.0f}s; plots in {out}/")
    if not args.no_ood:
        ood_alpaca(records, cfg, args.seed, out, args.only_gate)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
