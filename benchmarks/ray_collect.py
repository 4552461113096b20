"""Speed-up of `collect_with_ray` with 1 vs 2 Ray worker nodes against a stub endpoint with a fixed delay.

A head node with no CPUs schedules; each worker node has 1 CPU, so one pair runs per worker at a time and
the ideal speed-up is the number of workers. Run: .venv/bin/python benchmarks/ray_collect.py [--pairs 40]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from stub_openai import Script, StubServer, free_port  # noqa: E402

from moai.bench import collect as col  # noqa: E402
from moai.catalog import ModelCard  # noqa: E402
from moai.scale import collect_with_ray  # noqa: E402

RAY = str(Path(sys.executable).parent / "ray")


def run(workers: int, pairs: int, delay: float) -> float:
    import os

    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"  # a throwaway loopback cluster (see tests/test_ray.py)
    port = free_port()
    addr = f"127.0.0.1:{port}"
    subprocess.run([RAY, "start", "--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, capture_output=True)
    try:
        for _ in range(workers):
            subprocess.run([RAY, "start", "--address", addr, "--num-cpus", "1", "--disable-usage-stats"],
                           check=True, capture_output=True)
        with StubServer(Script(reply="16", delay_s=delay)) as stub, tempfile.TemporaryDirectory() as d:
            cards = [ModelCard(name=n, provider="openai_compat", endpoint=stub.url) for n in ("a", "b")]
            qs = [col.parse_question({"question": f"{i}+{16 - i}?", "answer": "#### 16"}, "bench", i, "x")
                  for i in range(pairs // 2)]
            warm = [col.parse_question({"question": "warm", "answer": "#### 16"}, "warm", 0, "x")]
            collect_with_ray(warm, cards, Path(d) / "warm.jsonl", address=addr, concurrency_per_provider=8)
            t0 = time.perf_counter()
            s = collect_with_ray(qs, cards, Path(d) / "r.jsonl", address=addr, concurrency_per_provider=8)
            dt = time.perf_counter() - t0
            assert s.graded == pairs, s
        ray.shutdown()
        return dt
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--delay", type=float, default=0.2)
    a = ap.parse_args()
    t1 = run(1, a.pairs, a.delay)
    t2 = run(2, a.pairs, a.delay)
    print(f"{a.pairs} pairs, stub delay {a.delay}s: 1 worker {t1:.2f}s ({a.pairs / t1:.1f} pairs/s), "
          f"2 workers {t2:.2f}s ({a.pairs / t2:.1f} pairs/s), speed-up {t1 / t2:.2f}x "
          f"(ideal 2x; serial floor {a.pairs * a.delay:.1f}s / {a.pairs * a.delay / 2:.1f}s)")


if __name__ == "__main__":
    main()
