"""Redaction time for a request that carries many distinct sensitive values (an address book pasted into a prompt)
under `sensitive_data: redact`: the privacy check, then the rewrite of the call sent to a cloud model.

Run: `.venv/bin/python benchmarks/redaction.py [--sizes 500,1000,2000,4000,8000] [--kinds email,card,iban] [--chain]`.
The rewrite must grow with the text and the values, not with their product: 8,000 values should cost about
sixteen times 500, not 256 times. `--chain` times chains of values instead, in 32 KB of "a": 60 passwords
`aaaa…ab` of lengths 5 to 64 that share ever longer prefixes and are not written there (found in time linear in
the text), and 60 passwords `aaaaa` to `a`×64, each a prefix of the next and written at every offset (every value a
candidate at every offset: time grows with those candidates), each against a search for each value in turn (every
occurrence as written, then its percent-encoded forms, as `KnownValues.spans` finds them).
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from moai.providers.base import ChatParams
from moai.strategies.known_values import KnownValues, encoded_forms, encoded_pattern
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


def one_by_one(mapping: dict[str, str], text: str) -> int:
    """A search for each value in turn: every occurrence as written (`str.find` after each), then those of its
    percent-encoded forms; the number found."""
    found = 0
    for token, value in mapping.items():
        at = text.find(value)
        while at != -1:
            found += 1
            at = text.find(value, at + len(value))
        for form in encoded_forms(token[1:].rsplit("_", 1)[0], value):
            found += sum(1 for _ in encoded_pattern(form).finditer(text))
    return found


def chain() -> None:
    """The search for two chains of values in 32 KB of "a", the index's and one value after another."""
    table = Table("values", "written in the text", "text KB", "search s", "one by one s")
    text = "a" * 32768
    for written, mapping in ((False, {f"[PASSWORD_{k}]": "a" * (k - 1) + "b" for k in range(5, 65)}),
                             (True, {f"[PASSWORD_{k}]": "a" * k for k in range(5, 65)})):
        known = KnownValues()
        known.sync(mapping)
        start = time.perf_counter()
        known.spans(mapping, text, [])
        search = time.perf_counter() - start
        start = time.perf_counter()
        one_by_one(mapping, text)
        table.add_row(str(len(mapping)), "every offset" if written else "none", "32", f"{search:.3f}",
                      f"{time.perf_counter() - start:.3f}")
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
