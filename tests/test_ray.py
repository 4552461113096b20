"""Ray scale-out for real: a local cluster (head + one worker process) collecting from a stub endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from stub_openai import Script, StubServer, free_port

pytestmark = pytest.mark.integration

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ray>=2.9'): Ray tests need it")

from moai.bench import collect as col  # noqa: E402
from moai.catalog import ModelCard  # noqa: E402
from moai.config import parse_config  # noqa: E402
from moai.scale import collect_files_with_ray, collect_with_ray, train_with_ray  # noqa: E402

RAY = str(Path(sys.executable).parent / "ray")


def _ray_cli(*args: str) -> None:
    r = subprocess.run([RAY, *args], capture_output=True, text=True, timeout=60)
    if r.returncode:
        raise RuntimeError(f"ray {' '.join(args)} failed: {r.stderr[-2000:]}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """`ray start --head` with 1 CPU plus one worker node with 1 CPU; always stopped afterwards."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    # a token left in ~/.ray by an earlier local ray.init() makes the head demand it from the worker: this
    # throwaway loopback cluster runs without token authentication
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_AUTH_MODE", "disabled")
    try:
        _ray_cli("start", "--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard=false",
                 "--disable-usage-stats")
        _ray_cli("start", "--address", address, "--num-cpus", "1", "--disable-usage-stats")
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=60)
        mp.undo()


def _questions(n: int) -> list[col.Question]:
    return [col.parse_question({"question": f"What is {i} + {16 - i}?", "answer": f"{i} + {16 - i} = 16\n#### 16"},
                               "ray-test", i, f"q:{i}") for i in range(n)]


def test_collect_on_a_two_node_cluster_streams_a_resumable_journal(cluster: str, tmp_path: Path) -> None:
    with StubServer(Script(reply="16", delay_s=0.05)) as stub:
        cards = [ModelCard(name=n, provider="openai_compat", endpoint=stub.url, price={"input_per_mtok": 1.0,
                                                                                   "output_per_mtok": 2.0})
                 for n in ("alpha", "beta")]
        out = tmp_path / "records.jsonl"
        qs = _questions(6)
        s = collect_with_ray(qs[:4], cards, out, address=cluster, concurrency_per_provider=2)
        assert (s.graded, s.failed, s.skipped) == (8, 0, 0)
        # resume through the files + config entry point that `moai bench collect --ray` calls
        qfile = tmp_path / "ray-test.jsonl"
        qfile.write_text("".join(json.dumps({"question": f"What is {i} + {16 - i}?", "answer": "#### 16"}) + "\n"
                                 for i in range(6)))
        cfg = parse_config(f"""models:
  alpha: {{provider: openai_compat, endpoint: "{stub.url}", price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
  beta: {{provider: openai_compat, endpoint: "{stub.url}", price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
mixes:
  m: {{strategy: route}}
""")
        started: list[col.Summary] = []
        s2 = collect_files_with_ray([qfile], cfg, out, concurrency=2, on_start=started.append, address=cluster)
        assert (s2.graded, s2.skipped) == (4, 8) and started[0].skipped == 8
        assert stub.script.calls == 12  # nothing asked twice
    journal = col.read_journal(col.journal_path(out))
    assert len(journal) == 12 and {e.score for e in journal} == {1.0}
    records = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert len(records) == 6
    assert all(set(r["scores"]) == {"alpha", "beta"} and r["cost_usd"]["alpha"] > 0 for r in records)
    # the same format as `moai bench collect`: the records rebuild identically from the journal
    assert records == col.build_records(journal)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 2


def test_train_on_cluster_gives_a_working_gate(cluster: str) -> None:
    from moai.bench.datasets import RoutingRecord
    from moai.gate.train import TrainConfig

    recs = [RoutingRecord(id=str(i), prompt=f"question number {i} about {'code' if i % 2 else 'history'}",
                          scores={"strong": 1.0, "weak": float(i % 2)}, benchmark="t") for i in range(40)]
    from moai.gate.store import train_gate

    cfg = TrainConfig(epochs=2, w_factor=0.5, tfidf_features=500)
    t0 = time.time()
    gate = train_with_ray(recs, cfg, address=cluster, chunk_size=16)
    assert time.time() - t0 < 60
    queries = ["question number 99 about code", "question number 98 about history"]
    q = gate.quality_matrix(queries, ["strong", "weak"])
    assert q.shape == (2, 2) and q[0, 0] > 0.5 and q[0, 1] > q[1, 1]
    # the factor model, the domain head and each model's regression were separate cluster tasks
    assert gate.meta["trained_on"] == "ray" and gate.meta["ray_fit_tasks"] == 4
    # and they fit exactly what the one-process trainer fits
    here = train_gate(recs, cfg)
    np.testing.assert_allclose(q, here.quality_matrix(queries, ["strong", "weak"]), rtol=1e-5, atol=1e-6)


def test_concurrency_per_provider_is_a_real_bound(cluster: str, tmp_path: Path) -> None:
    """With a bound of 1, two worker nodes still call one endpoint strictly one at a time."""
    delay = 0.3
    with StubServer(Script(reply="16", delay_s=delay)) as stub:
        card = ModelCard(name="solo", provider="openai_compat", endpoint=stub.url)
        t0 = time.perf_counter()
        s = collect_with_ray(_questions(4), [card], tmp_path / "r.jsonl", address=cluster, concurrency_per_provider=1)
        assert s.graded == 4
        assert time.perf_counter() - t0 >= 4 * delay  # serial: it cannot be faster than one call after another


def test_ray_flag_without_address_trains_on_a_local_instance(tmp_path: Path) -> None:
    """`moai gate train ... --ray` (no value) starts a local Ray, as `--ray local` does."""
    from moai.cli import with_optional_values

    assert with_optional_values(["gate", "train", "--ray", "--out", "x"]) == ["gate", "train", "--ray", "local",
                                                                                "--out", "x"]
    assert with_optional_values(["bench", "collect", "--ray", "h:6379"]) == ["bench", "collect", "--ray", "h:6379"]
    data = tmp_path / "r.jsonl"
    data.write_text("\n".join(json.dumps({"id": str(i), "prompt": f"question {i} about {'code' if i % 2 else 'art'}",
                                          "scores": {"strong": 1.0, "weak": float(i % 2)}}) for i in range(30)) + "\n")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "MOAI_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([str(Path(sys.executable).parent / "moai"), "gate", "train", "--data", str(data), "--out",
                        str(tmp_path / "g"), "--ray"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "g" / "gate.json").read_text())["trained_on"] == "ray"
