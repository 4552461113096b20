"""Answers recorded in routing records, replayed as if the model had just produced them.

Offline experiments (gate studies, strategy comparisons) need the real models' answers without the
models: a replay card points at routing-record files, and this provider returns the recorded answer,
token counts and (optionally scaled) latency for the matching prompt.

The files are read with the routing-record loader (``moai.bench.datasets``): a bad line is refused when the
config loads (``config_checks.replay_records_problem``) as ``file:line: problem``, never a traceback on a request.
A provider reads its files once, on its first request (the config check's reading is reused while the files are
unchanged), and answers from that reading for the life of the process: a file rewritten later is read by the
next process (``moai serve`` restarted), so what is served is what the check passed.
"""

from __future__ import annotations

import asyncio
import stat
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moai.bench.datasets import RecordError, RoutingRecord, _parse, read_json_lines
from moai.catalog import ModelCard
from moai.providers.base import ChatParams, Delta, Provider, ProviderRequestError, ProviderUnavailable, Usage


@dataclass(frozen=True, slots=True)
class Recorded:
    """One prompt's record, with the answers each model gave (``responses``: {model: text})."""

    record: RoutingRecord
    responses: dict[str, str]


# what a set of files was when read: (resolved path, mtime in ns, size) each
Stamp = tuple[tuple[str, int, int], ...]
_READ: OrderedDict[Stamp, dict[str, Recorded] | RecordError] = OrderedDict()
_READ_KEPT = 4  # the config check's reading, kept for the provider of the same files (a few configs at most)
_READ_LOCK = threading.Lock()


def _stamp(files: Sequence[str]) -> Stamp:
    out: list[tuple[str, int, int]] = []
    for file in files:
        path = Path(file).expanduser()
        try:
            st = path.stat()
        except OSError:
            raise RecordError(path, 0, "no such file") from None
        if not stat.S_ISREG(st.st_mode):
            raise RecordError(path, 0, "is not a file")
        out.append((str(path.resolve()), st.st_mtime_ns, st.st_size))
    return tuple(out)


def _read(files: Sequence[str]) -> dict[str, Recorded]:
    """Each non-blank line checked as a routing record (an ``id`` may be left out: a replay finds a record by its
    prompt), plus ``responses`` as {model: text}; the first record of a prompt wins."""
    index: dict[str, Recorded] = {}
    for file in files:
        path = Path(file).expanduser()
        for ln, obj in read_json_lines(path, lambda ln, reason, path=path: RecordError(path, ln, reason)):
            if isinstance(obj, dict):  # a replay finds a record by its prompt: no id, or no scores, is fine
                if obj.get("id") is None:
                    obj = {**obj, "id": f"line {ln}"}
                if obj.get("scores", {}) is None:
                    obj = {**obj, "scores": {}}
            rec = _parse(obj, path, ln, need_scores=False)
            responses = obj.get("responses")
            responses = {} if responses is None else responses
            if not isinstance(responses, dict) or any(
                not isinstance(v, str) and v is not None for v in responses.values()
            ):
                raise RecordError(path, ln, f"record {rec.id!r}: 'responses' must be an object {{model: text}}")
            answers = {str(m): v for m, v in responses.items() if v is not None}
            index.setdefault(rec.prompt.strip(), Recorded(rec, answers))
    return index


def load_replay_index(files: Sequence[str]) -> dict[str, Recorded]:
    """The records of ``files`` by prompt; raises ``RecordError`` (``file:line: problem``) for a file that is not
    there or a line that is not a routing record. A reading (or its error) is kept while the files are unchanged, so
    the config check and the provider read a file once, and a bad file is not parsed again on each request."""
    key = _stamp(files)
    with _READ_LOCK:
        got = _READ.get(key)
        if got is None:
            try:
                got = _read(files)
            except RecordError as e:
                got = e
            _READ[key] = got
            while len(_READ) > _READ_KEPT:
                _READ.popitem(last=False)
        else:
            _READ.move_to_end(key)
    if isinstance(got, RecordError):
        raise got
    return got


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


class ReplayProvider(Provider):
    """Looks up ``prompt`` in the card's record files; answers with ``responses[model]``."""

    latency_scale: float = 0.0  # 0: answer at once; 1: sleep the recorded latency

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self._index: dict[str, Recorded] | None = None

    def _records(self) -> dict[str, Recorded]:
        """Read once and kept (see the module's docstring). Files missing or malformed (changed since the config
        check, or a config never checked) fail the call as the model unusable, in one line: a missing file may be
        put in place, a malformed one is read again only once it has changed."""
        if self._index is None:
            try:
                self._index = load_replay_index(self.card.records)
            except RecordError as e:
                problem = f"records file not found: {e.path}" if e.reason == "no such file" else f"bad records: {e}"
                raise ProviderUnavailable(self.name, problem, final=True) from None
        return self._index

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        prompt = _last_user_text(params.messages).strip()
        found = self._records().get(prompt)
        model = self.card.upstream_model
        answer = found.responses.get(model) if found else None
        if found is None or answer is None:
            raise ProviderRequestError(self.name, "no recorded answer for this prompt")
        tokens = found.record.tokens.get(model, {})
        latency_ms = found.record.latency_ms.get(model, 0)
        if self.latency_scale and latency_ms:
            await asyncio.sleep(latency_ms / 1000 * self.latency_scale)
        yield Delta(text=answer)
        usage = Usage(int(tokens.get("input", 0)), int(tokens.get("output", 0)))
        yield Delta(finish_reason="stop", usage=usage)
