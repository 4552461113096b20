"""What the tests of the endpoints translated to the chat path (Responses, Messages) share: a real moai server
over one stub upstream per script, one route mix per upstream, and its database read back."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from servers import MoaiServer, start_moai, stop
from stub_openai import Script, StubServer


@contextmanager
def served(scripts: dict[str, Script], mixes: dict[str, str], folder: Path, card: str = "") -> Iterator[MoaiServer]:
    """moai serving each mix (name -> the model it routes to) over stubs speaking ``scripts``; ``card``: more
    fields of every model's card."""
    with ExitStack() as stack:
        urls = {name: stack.enter_context(StubServer(s)).url for name, s in scripts.items()}
        models = "".join(f'  {n}: {{provider: openai_compat, endpoint: "{u}", privacy: private, max_retries: 0, '
                         f'supports_tools: true, {card}price: {{input_per_mtok: 1, output_per_mtok: 2}}}}\n'
                         for n, u in urls.items())
        cfg = "models:\n" + models + "mixes:\n" + "".join(
            f"  {mix}: {{strategy: route, models: [{model}], fallbacks: []}}\n" for mix, model in mixes.items())
        server = start_moai(cfg, folder)
        try:
            yield server
        finally:
            stop(server.proc)


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


def recorded(db: Path, request_id: str) -> list[tuple[Any, ...]]:
    """The request's row, waited for (a stream's record is written as it ends)."""
    deadline = time.time() + 10
    while True:
        found = rows(db, "select mix, model, status, prompt_tokens, completion_tokens from requests where id=?",
                     request_id)
        if found or time.time() > deadline:
            return found
        time.sleep(0.1)
