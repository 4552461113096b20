"""Write a seeded set of everyday arithmetic questions ("What is 17 * 23?") in the multitask question format.

The benchmark question sets ask multi-step word problems (GSM8K) answered without scratch work, which every
local model nearly always misses; on them the gate learns that no local model can do sums, and sends a plain
"What is 17 * 23?" to the fastest. These questions measure the sums people actually ask a chat model.

    .venv/bin/python scripts/arithmetic_questions.py --n 200 --seed 0 --out data/local-zoo/arithmetic.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

PHRASINGS = ("What is {a} {op} {b}?", "Calculate {a} {op} {b}.", "{a} {op} {b} = ?", "How much is {a} {word} {b}?")
WORDS = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}


def operands(rng: random.Random, op: str) -> tuple[int, int, int]:
    """Two operands and the exact result, from one-digit to three-digit sizes (the hardest products last)."""
    size = rng.choice((1, 2, 2, 3))
    if op == "+":
        a, b = rng.randint(1, 10**size * 5), rng.randint(1, 10**size * 5)
        return a, b, a + b
    if op == "-":
        a, b = sorted((rng.randint(1, 10**size * 5), rng.randint(1, 10**size * 5)), reverse=True)
        return a, b, a - b
    if op == "*":
        a, b = rng.randint(2, 10**min(size, 2) - 1 if size > 1 else 9), rng.randint(2, 10**size - 1)
        return a, b, a * b
    b = rng.randint(2, 9 if size == 1 else 25)
    q = rng.randint(2, 10**size - 1)
    return b * q, b, q


def questions(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        op = rng.choice(tuple(WORDS))
        a, b, result = operands(rng, op)
        text = rng.choice(PHRASINGS).format(a=a, b=b, op=op, word=WORDS[op])
        out.append({"query": text, "ground_truth": str(result), "metric": "GSM8K", "task_name": "arithmetic"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.write_text("".join(json.dumps(q) + "\n" for q in questions(args.n, args.seed)))
    print(f"{args.n} questions written to {args.out}")


if __name__ == "__main__":
    main()
