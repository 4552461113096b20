"""Redaction time for a request that carries many distinct sensitive values (an address book pasted into a prompt)
under `sensitive_data: redact`: the privacy check, then the rewrite of the call sent to a cloud model.

Run: `.venv/bin/python benchmarks/redaction.py [--sizes 500,1000,2000,4000,8000] [--kinds email,card,iban] [--chain]`.
The rewrite must grow with the text and the values, not with their product: 8,000 values should cost about
sixteen times 500, not 256 times. `--chain` times values that are prefixes of one another instead (60 passwords
`aaaa…ab` of lengths 5 to 64 in 32 KB of "a"), against a search for each in turn: no slower than that.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from moai.providers.base import ChatParams
from moai.strategies.known_values import KnownValues
from moai.strategies.privacy_guard import privacy_guard

DOMAINS = ["fastmail.com", "orange.fr", "gmx.de", "proton.me", "web.de", "free.fr", "posteo.net"]


def luhn_card(i: int) -> str:
    """A distinct card number that passes the Luhn check, grouped by four."""
    body = f"453914{i:09d}"
    total = sum((2 * int(d) - 9 * (2 * int(d) > 9)) if k % 2 == 0 else int(d) for k, d in enumerate(reversed(body)))
    digits = body + str(-total % 10)
    return " ".join(digits[j:j + 4] for j in range(0, 16, 4))


def iban(i: int) -> str:
    """A distinct German IBAN with a valid checksum, grouped by four."""
    bban = f"50010517{i:010d}"
    num = int("".join(str(int(c, 36)) for c in bban + "DE00"))
    chars = f"DE{98 - num % 97:02d}{bban}"
    return " ".join(chars[j:j + 4] for j in range(0, len(chars), 4))


def values(kind: str, n: int) -> list[str]:
    if kind == "email":
        return [f"p{i}.n{i % 97}@{DOMAINS[i % len(DOMAINS)]}" for i in range(n)]
    return [luhn_card(i) for i in range(n)] if kind == "card" else [iban(i) for i in range(n)]


def chain() -> None:
    """The search for a chain of values each a prefix of the next, in a text that holds none of them."""
    table = Table("values", "text KB", "search s", "one by one s")
    mapping = {f"[PASSWORD_{k}]": "a" * (k - 1) + "b" for k in range(5, 65)}
    text = "a" * 32768
    known = KnownValues()
    known.sync(mapping)
    start = time.perf_counter()
    known.spans(mapping, text, [])
    search = time.perf_counter() - start
    start = time.perf_counter()
    for value in mapping.values():
        text.find(value)
    table.add_row(str(len(mapping)), "32", f"{search:.3f}", f"{time.perf_counter() - start:.3f}")
    Console().print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="500,1000,2000,4000,8000")
    ap.add_argument("--kinds", default="email,card,iban")
    ap.add_argument("--chain", action="store_true", help="time a chain of values that are prefixes of one another")
    args = ap.parse_args()
    if args.chain:
        chain()
        return
    table = Table("values", "kind", "prompt KB", "privacy check s", "rewrite for the cloud s", "left in clear")
    for kind in args.kinds.split(","):
        for n in (int(x) for x in args.sizes.split(",")):
            vals = values(kind, n)
            messages = [{"role": "user", "content": " ".join(f"contact: {v};" for v in vals)}]
            start = time.perf_counter()
            guard = privacy_guard(messages, "redact", None)
            checked = time.perf_counter() - start
            assert guard.redactor is not None
            start = time.perf_counter()
            sent = guard.redactor.apply(ChatParams(messages=messages), "cloud")
            rewrite = time.perf_counter() - start
            text = sent.messages[0]["content"]
            table.add_row(str(n), kind, f"{len(messages[0]['content']) / 1024:.0f}", f"{checked:.2f}",
                          f"{rewrite:.3f}", str(sum(v in text for v in vals)))
    Console().print(table)


if __name__ == "__main__":
    main()
