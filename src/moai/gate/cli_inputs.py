"""What the ``moai gate`` commands take in: the --data files (each read once), model names matched to the
ones the records and the gate know, and errors the user can fix, printed as one line with exit code 2.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer


class CliError(Exception):
    """An error meant for the user: printed as one line."""


@contextmanager
def reported_errors() -> Iterator[None]:
    from moai.bench.datasets import RecordError
    from moai.gate.encoder import EncoderUnavailable
    from moai.gate.store import GateLoadError

    try:
        yield
    except (CliError, RecordError, GateLoadError, EncoderUnavailable, ValueError, KeyError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        typer.echo(f"error: {msg}", err=True)
        raise typer.Exit(2) from None


def close_matches(name: str, known: Iterable[str]) -> list[str]:
    """The known names that look like ``name`` (case aside), best first: what a misspelt name probably meant."""
    import difflib

    by_key: dict[str, str] = {}
    for k in sorted(set(known)):
        by_key.setdefault(k.strip().casefold(), k)
    return [by_key[k] for k in difflib.get_close_matches(name.strip().casefold(), list(by_key), n=3, cutoff=0.6)]


def some(names: Iterable[str], k: int = 8) -> str:
    """Up to ``k`` quoted names, and how many more: a warning stays one readable line."""
    ordered = sorted(names)
    more = f" and {len(ordered) - k} more" if len(ordered) > k else ""
    return ", ".join(map(repr, ordered[:k])) + more


def warn_untrained(g: Any, names: list[str], known: Iterable[str] = ()) -> None:
    """A model the gate never saw still gets an estimate (a prior from its name's family and size), which a
    misspelt name gets too: say so instead of scoring it silently, with the trained or ``known`` names it is
    close to."""
    from moai.gate.quality import canonical

    trained = set(g.head.models)
    unseen = [n for n in names if canonical(n) not in trained]
    if unseen:
        pool = trained | set(known)
        hints = [f"{n!r} ~ {', '.join(map(repr, c))}" for n in unseen
                 if (c := [m for m in close_matches(n, pool) if m != n])]
        close = f" (close: {'; '.join(hints)})" if hints else ""
        typer.echo(f"warning: not among the gate's {len(trained)} trained models: {', '.join(map(repr, unseen))}; "
                   f"their quality is a prior from the name (family, size), not learnt: check the spelling{close}",
                   err=True)


def resolve_models(given: list[str], record_names: Iterable[str], gate_names: Iterable[str], flag: str) -> list[str]:
    """``given`` as the records (first) or the gate spell those models, each once.

    A name written exactly as the records or the gate write it is kept; otherwise the one known name equal to
    it but for case (and surrounding spaces) replaces it, so 'GPT-4,gpt-4' is one candidate, not two with the
    same estimate, and a decision names the model as the records do. Two known names equal to it but for case
    are a CliError: there is no telling which was meant. A name known to neither is kept as given (the gate has
    a prior for unseen models; ``warn_untrained`` names it)."""
    tiers = [list(dict.fromkeys(record_names)), list(dict.fromkeys(gate_names))]
    exact = {n for tier in tiers for n in tier}
    out: list[str] = []
    seen: set[str] = set()
    for name in given:
        if name not in exact:
            key = name.strip().casefold()
            for tier in tiers:
                hits = [k for k in tier if k.strip().casefold() == key]
                if len(hits) > 1:
                    raise CliError(f"{flag}: {name!r} matches {some(hits)} but none exactly: name one as written")
                if hits:
                    name = hits[0]
                    break
        if name.strip().casefold() not in seen:
            seen.add(name.strip().casefold())
            out.append(name)
    return out


def data_files(data: list[Path], ctx: typer.Context) -> list[Path]:
    """Every --data file in order, each once: repeated --data, and `--data a b c` (shell globs)."""
    return _distinct_files([*data, *(Path(a) for a in ctx.args)])


def _distinct_files(paths: list[Path]) -> list[Path]:
    """Each --data file once, in order: the same file given twice (the same path, another path to it, a symbolic
    or hard link) would be read twice and count each of its records twice. One warning per repeated file."""
    keep: list[Path] = []
    first: dict[Any, int] = {}
    again: dict[int, list[Path]] = {}
    for p in paths:
        try:
            st = p.stat()
            key: Any = (st.st_dev, st.st_ino)
        except OSError:  # missing or unreadable: loading it names the problem
            key = os.path.realpath(p)
        if key in first:
            again.setdefault(first[key], []).append(p)
        else:
            first[key] = len(keep)
            keep.append(p)
    for i, more in again.items():
        times = "twice" if len(more) == 1 else f"{len(more) + 1} times"
        other = list(dict.fromkeys(str(p) for p in more if str(p) != str(keep[i])))
        also = f" (also as {', '.join(other)})" if other else ""
        typer.echo(f"warning: --data {keep[i]} was given {times}{also}: it is read once", err=True)
    return keep


def load(paths: Any, need_scores: bool = True) -> list[Any]:
    """``load_records``, plus a one-line warning when an id repeats (kept: public sets have a few)."""
    from moai.bench.datasets import duplicate_warning, load_records

    recs = load_records(paths, need_scores=need_scores, check_scale=True)
    dup = duplicate_warning(recs)
    if dup:
        typer.echo(f"warning: {dup}", err=True)
    return recs
