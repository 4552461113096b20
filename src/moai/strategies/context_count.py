"""Where a local model's own count of a prompt replaces the estimate before routing: the estimate alone cannot tell
whether a prompt fits a local model's context when it is near it (``undecided``); the context check then reads that
model's count (``counted_eligible``; the count itself: ``providers.local_tokens``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moai.catalog import ModelCard
from moai.config import Config, Mix
from moai.providers.local_tokens import FRAMING_TOKENS
from moai.strategies.context import eligible

# Where a local model's own count replaces the estimate (``counted_eligible``). A byte-level tokenizer spends at most
# a token a byte, and the estimate counts a quarter token an ASCII byte and a token a character of 2-4 bytes: a prompt
# is never more than UNDER times the estimate, plus its chat template's framing (SmolLM2's adds a 30-token system
# prompt). Measured on SmolLM2 and Qwen2.5: digits 4.0, base64 3.2, emoji 3.0, Thai 1.9 times the estimate; English
# prose 0.7, runs of spaces or Russian on Qwen 0.25-0.35. Counting takes ~0.75 ms a 1,000 ASCII characters, so it is
# asked only where the estimate cannot tell: a prompt up to UNDER times what it seems may not fit, one down to 1/OVER
# of it may (below that, the rare prompt it would let in costs every long one a count of more than twice the context).
UNDER, OVER = 4, 2
FRAMING = 64  # tokens a chat template may add to a request, besides FRAMING_EACH a message
FRAMING_EACH = FRAMING_TOKENS  # the bound a count without the file's own template adds a message


def undecided(card: ModelCard, estimate: int, answer_tokens: int, messages: int = 1) -> bool:
    """Whether ``card`` is a local model whose context the estimate cannot tell the prompt fits or not (with the
    answer asked, or alone as the context check falls back to): its own tokenizer is to count it."""
    if card.provider != "local" or card.deployments:
        return False
    most = estimate * UNDER + FRAMING + FRAMING_EACH * messages
    return any(estimate / OVER + room <= card.context < most + room for room in {answer_tokens, 0}
               if room < card.context)


def counted_eligible(config: Config, mix: Mix, estimate: int, counted: Callable[[ModelCard], int | None],
                     answer_tokens: int = 0, **kw: Any) -> tuple[list[ModelCard], dict[str, str]]:
    """``eligible`` with the prompt of each model ``counted`` gives a count for (a local model's own tokenizer) at
    that count, the others at the ``estimate``; a model the count leaves out says so, with the count."""
    pool = config.pool(mix)
    counts = {c.name: n for c in pool if (n := counted(c)) is not None}
    if not counts:
        return eligible(config, mix, estimate, answer_tokens=answer_tokens, **kw)
    rest = [c.name for c in pool if c.name not in counts]
    kept, excluded = (eligible(config, mix.model_copy(update={"models": rest}), estimate,
                               answer_tokens=answer_tokens, **kw) if rest else ([], {}))
    for name, n in counts.items():
        one, out = eligible(config, mix.model_copy(update={"models": [name]}), n, answer_tokens=answer_tokens, **kw)
        kept += one
        if "exceeds context" in out.get(name, ""):
            asked = f" + max_tokens {answer_tokens}" if answer_tokens else ""
            out[name] = f"prompt {n} tokens by its own tokenizer{asked} exceeds context {config.models[name].context}"
        excluded.update(out)
    order = {c.name: i for i, c in enumerate(pool)}
    return (sorted(kept, key=lambda c: order[c.name]),
            dict(sorted(excluded.items(), key=lambda item: order.get(item[0], len(order)))))
