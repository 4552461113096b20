"""First-token latency and generation speed: llama.cpp's server called directly vs through moai.

Starts llama.cpp's OpenAI-compatible server with a local GGUF model on 127.0.0.1, then moai twice — once
proxying to that server (openai_compat provider), once with the model in-process (local provider) — and
streams the same prompts through each with the official openai client.

    .venv/bin/python benchmarks/server_vs_llama.py [--model smollm2-135m] [--n 8] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai
from rich.console import Console
from rich.table import Table

from moai import local_models

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import free_port, wait_http  # noqa: E402

PROMPTS = [
    "Write a haiku about the sea.",
    "Explain what a hash table is in two sentences.",
    "List three uses of copper.",
    "What is the capital of Japan, and why is it important?",
]


def measure(base_url: str, model: str, n: int, max_tokens: int) -> dict[str, float]:
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=300)
    ttfts, speeds = [], []
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4)  # warm
    for i in range(n):
        t0 = time.perf_counter()
        first = None
        pieces = 0
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], max_tokens=max_tokens,
            temperature=0, stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces += 1
                if first is None:
                    first = time.perf_counter()
        end = time.perf_counter()
        assert first is not None
        ttfts.append((first - t0) * 1000)
        if pieces > 1:
            speeds.append((pieces - 1) / (end - first))
    return {"ttft_p50_ms": statistics.median(ttfts), "ttft_mean_ms": statistics.fmean(ttfts),
            "tok_s": statistics.median(speeds) if speeds else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    path = local_models.pull(args.model)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    tmp = Path(tempfile.mkdtemp(prefix="moai-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        lport = free_port()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--host", "127.0.0.1", "--port",
             str(lport), "--n_ctx", "2048", "--n_threads", str(args.threads), "--model_alias", "m"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        llama = f"http://127.0.0.1:{lport}/v1"
        wait_http(llama + "/models", timeout=120)
        rows = [("llama.cpp server, direct", measure(llama, "m", args.n, args.max_tokens))]
        for label, card in (
            ("moai → llama.cpp server (openai_compat)",
             f"{{provider: openai_compat, endpoint: '{llama}', model: m, privacy: local, context: 2048}}"),
            ("moai, model in-process (local)",
             f"{{provider: local, package: {args.model}, privacy: local, context: 2048, threads: {args.threads}}}"),
        ):
            cfg = tmp / f"{len(rows)}.yaml"
            cfg.write_text(f"models:\n  m: {card}\nmixes:\n  default: {{strategy: route}}\n")
            port = free_port()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "moai.cli", "serve", "--config", str(cfg), "--port", str(port),
                 "--database-url", f"sqlite:///{tmp / f'{port}.db'}", "--log-level", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=120)
            rows.append((label, measure(f"http://127.0.0.1:{port}/v1", "moai/default", args.n, args.max_tokens)))
            procs[-1].terminate()
            procs[-1].wait()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
    t = Table(title=f"{args.model}: streaming, {args.n} requests × ≤{args.max_tokens} tokens, {args.threads} threads")
    for col in ("path", "first token p50 (ms)", "first token mean (ms)", "tokens/s (p50)"):
        t.add_column(col)
    for label, r in rows:
        t.add_row(label, f"{r['ttft_p50_ms']:.1f}", f"{r['ttft_mean_ms']:.1f}", f"{r['tok_s']:.1f}")
    Console().print(t)


if __name__ == "__main__":
    main()
