"""Finding the values a request already revealed wherever a later call writes them: in time that grows with the text.

A request may carry thousands of values (an address book pasted into the prompt), and every call to an untrusted
model is searched for all of them (`redaction.Redactor`). One search per value costs values × text: 4,571 emails in
64 KB held the event loop for 4 s. Here the values sit in tries that a text is walked through, from each offset,
or whose heads a few Aho-Corasick automata find where a walk could read long chains of values (see `_Trie`).
"""

from __future__ import annotations

import functools
import re
from array import array
from collections.abc import Iterator, Mapping, Sequence
from itertools import islice
from typing import NamedTuple
from urllib.parse import quote, quote_plus

import ahocorasick

from moai.gate import privacy_scan as scan
from moai.gate.privacy import splice as splice  # one splice for `redact` and `Redactor`: the same replacements

# Labels whose values are compared as written (see `value_key`), and how an email may be spelled out.
_EXACT_FORMS = frozenset({"SECRET", "PASSWORD", "ADDRESS"})
_AT_CORE = r"@|＠|[\[(<{]\s*at\s*[\])>}]|\s(?:at|chez|bei|arroba|arobase)\s"
_DOT_CORE = r"\.|．|[\[(<{]\s*dot\s*[\])>}]|\s(?:dot|point|punkt|punto)\s"
_AT = r"\s*(?:" + _AT_CORE + r")\s*"
_DOT = r"\s*(?:" + _DOT_CORE + r")\s*"


# ---------------------------------------------------------------- finding the known values in a text
#
# A request may carry thousands of values (an address book pasted into the prompt), and every call to an
# untrusted model is searched for all of them. One search per value costs values × text: 4,571 emails in
# 64 KB held the event loop for 4 s. So the values are kept in two tries. One is read over the text
# case-folded (`_fold`): it holds every value as written, and every email as its words with a spelled-out "@"
# or "." between them (`_AT`, `_DOT`). The other is read over the text's letters and digits alone, from the
# start of each run of them: it holds the letters and digits of each card, IBAN or id, whose separators may be
# anything. Each is walked from each offset, or each run's start; where values share ever longer prefixes a
# walk would read the text's length times the longest chain of them (60 passwords "aaaa…ab" of lengths 5 to 64
# took 0.46 s in 32 KB of "a"), and the head of each path (a value, an email's first word) is found by
# Aho-Corasick automata (pyahocorasick) instead; only an email's spelled-out rest is walked from there.
# A trie only says where a value may be: each candidate is then checked as the value's own pattern
# (`KnownValues.form`) would match it there, so the replacements are those of one search per value, found in
# time that grows with the text, the values and the candidates, not their product. The candidates are many
# only where a chain of values, each a prefix of the next, is written at every offset: each value is one at
# each offset (60 such passwords in 32 KB of "a": about 1 s, against 0.01 s for a search value by value).

# Characters that re.IGNORECASE takes for one another beyond what `str.lower` maps together (Python's
# `re._casefix`): folded to one of them, so that a walk through a folded text misses no spelling that a
# pattern compiled with re.I matches (checked against `re` itself by the tests).
_CASE_CLASSES: dict[int, str] = str.maketrans({
    "\u0131": "i", "\u017f": "s", "\u00b5": "\u03bc", "\u0345": "\u03b9", "\u1fbe": "\u03b9",
    "\u1fd3": "\u0390", "\u1fe3": "\u03b0", "\u03d0": "\u03b2", "\u03f5": "\u03b5", "\u03d1": "\u03b8",
    "\u03f0": "\u03ba", "\u03d6": "\u03c0", "\u03f1": "\u03c1", "\u03c2": "\u03c3", "\u03d5": "\u03c6",
    "\u1c80": "\u0432", "\u1c81": "\u0434", "\u1c82": "\u043e", "\u1c83": "\u0441", "\u1c84": "\u0442",
    "\u1c85": "\u0442", "\u1c86": "\u044a", "\u1c87": "\u0463", "\u1c88": "\ua64b", "\u1e9b": "\u1e61",
    "\ufb05": "\ufb06",
})
# Folded letters that re.I also matches with a character that is no letter or digit (U+0345, a combining
# iota, is a separator to `[\W_]`): a card or id holding one is searched with its own pattern instead.
_NOT_ONLY_LETTERS = "\u03b9"
_RUN = re.compile(r"[^\W_]+")
_NOT_RUN = re.compile(r"[\W_]+")
_SPACES = re.compile(r"\s*")
_AT_RX = re.compile(_AT_CORE, re.I)
_DOT_RX = re.compile(_DOT_CORE, re.I)
_SEP_RX = (_AT_RX, _DOT_RX)  # a spelled-out "@" (0) and "." (1)
_SEP_START = "@\uff20.\uff0e[(<{"  # what a spelled-out separator may start with, but for spaces
_MAX_WORDS = 64  # an email of more words than this (dots) is searched with its own pattern
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")  # a percent-encoded byte: its hex digits in either case
_WALK_STEPS = 16  # nodes per offset of a text that a walk through a trie may read, or automata read it (`_Trie`)
_BUILD_COST = 10  # characters walked through a trie in the time a head is built into an automaton (`_Trie`)


def encoded_forms(label: str, value: str) -> list[str]:
    """A value as a link or a form writes it, where a trusted model may have put it (`?email=jane.roe%40x.fr`):
    percent-encoded (`quote`, a space as %20), encoded for a query (`quote_plus`, a space as "+") and, for an
    email, with only its "@" as %40; each once, those that differ from the value as written."""
    forms = [quote(value, safe="", errors="surrogatepass"), quote_plus(value, safe="", errors="surrogatepass")]
    if label == "EMAIL":
        forms.append(value.replace("@", "%40"))
    return [f for f in dict.fromkeys(forms) if f != value]


def encoded_pattern(form: str) -> re.Pattern[str]:
    """`form` as written, but for the hex digits of each %xx, read in either case (%2B and %2b are one byte)."""
    pieces = _ESCAPE.split(form)  # text, hex digits, text, ...
    return re.compile("".join(
        re.escape(piece) if k % 2 == 0 else "%" + "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c
                                                           for c in piece)
        for k, piece in enumerate(pieces)))


def _fold(text: str) -> str:
    """`text` in lower case with the classes above folded: one character for one, so offsets stay valid."""
    if text.isascii():
        return text.lower()
    return scan.translate(text.replace("\u0130", "i").lower(), _CASE_CLASSES)  # "İ".lower() is two characters


@functools.lru_cache(maxsize=8192)
def _same_char(written: str, char: str) -> bool:
    """Whether a pattern of `char` with re.I matches `written` (asked of `re` itself: its case rules)."""
    return re.fullmatch(re.escape(char), written, re.I) is not None


def _same(text: str, at: int, word: str) -> bool:
    """Whether `text` holds `word` at `at` as re.I reads it (what the word's pattern would match there)."""
    seg = text[at:at + len(word)]
    if seg == word:
        return True
    if len(seg) != len(word):
        return False
    if seg.isascii() and word.isascii():
        return seg.lower() == word.lower()
    return all(a == b or _same_char(a, b) for a, b in zip(seg, word, strict=True))


def _sep_ends(text: str, at: int, core: re.Pattern[str]) -> Iterator[int]:
    """Where `\\s*(?:core)\\s*` (a spelled-out "@" or ".") may end when it starts at `at`, in the order the
    regex engine tries them: the leading spaces greedy, the one alternative that matches after them, the
    trailing spaces greedy (no two alternatives of `core` match at the same place)."""
    spaces = _SPACES.match(text, at).end()  # type: ignore[union-attr]
    for q in range(spaces, at - 1, -1):
        m = core.match(text, q)
        if m:
            yield from range(_SPACES.match(text, m.end()).end(), m.end() - 1, -1)  # type: ignore[union-attr]


def _spelled_end(text: str, at: int, words: Sequence[str], cores: Sequence[re.Pattern[str]]) -> int | None:
    """The end of what an email's pattern (`KnownValues.form`: its words, each "@" and "." spelled out in any
    way) matches at `at`, or None: the same backtracking, on a few candidates instead of the whole text."""
    def rest(k: int, pos: int) -> int | None:
        if not _same(text, pos, words[k]):
            return None
        pos += len(words[k])
        if k == len(cores):
            return pos
        for q in _sep_ends(text, pos, cores[k]):
            end = rest(k + 1, q)
            if end is not None:
                return end
        return None
    return rest(0, at)


def _run_end(text: str, starts: Sequence[int], offsets: Sequence[int], r: int, chars: str) -> int | None:
    """The end of what `chars`' separator-tolerant pattern matches from the start of run `r` of letters and
    digits, or None. It starts and ends a run (the pattern's look-arounds) and reads whole runs, at most 3
    separators apart, so nothing is left to backtrack: each run must spell the next of `chars`."""
    k = 0
    while True:
        a, size = starts[r], offsets[r + 1] - offsets[r]
        if k + size > len(chars) or not _same(text, a, chars[k:k + size]):
            return None
        k += size
        if k == len(chars):
            return a + size
        r += 1
        if r == len(starts) or starts[r] - a - size > 3:
            return None


class _Entry(NamedTuple):
    """One way a known value may be written: as it is ("exact"), percent-encoded ("encoded": `chars` is the
    form, see `encoded_forms`), an email with its "@" and "." spelled out in any way ("spelled": its words,
    and 0 for "@" or 1 for "." between them), the letters and digits of a card, IBAN or id with any
    separators ("runs": `chars`), or searched with its own pattern ("slow").

    For a spelled email, `chars` is set when no word but the first starts with a space: then where the email
    is written as it is, its pattern matches just that (each separator's spaces are none, "@" or "." is its
    first alternative), and the match needs no check."""

    kind: str
    token: str
    original: str
    words: tuple[str, ...] = ()
    seps: tuple[int, ...] = ()
    chars: str = ""


class _Trie:
    """A radix trie in flat tables of plain values: node n's edges by first character (`edges[n]`: character
    -> child), the label of the edge into each node (`label`), the spelled-out "@" and "." edges (`seps`:
    node -> child, one table each), and the entries whose path ends at a node (`first`, then `after`: entry
    -> the next one at the same node, or -1). No object per node: the garbage collector walks every tracked
    object on a full collection, and a request's values may make a million nodes.

    A text is walked through the trie from each offset (`_trie_hits`), at a cost of the nodes read from it: a
    few for most values, but each value of a chain whose values are prefixes of one another ("aaaaa",
    "aaaaaa", …), or that share ever longer prefixes ("aaaab", "aaaaab", …), is a node of its own, read again
    from every offset of a text that holds the chain. So where a walk could read more than `_WALK_STEPS`
    nodes (`below`, kept as paths are added: the most nodes under each node through string edges), the head
    of each path (its leading string) is found by Aho-Corasick automata instead (`automata`; the value of a
    key is the node its head ends at, in `heads`), without walking. Values are added as a request goes on, and
    an automaton cannot grow once built: new heads make a new, small one, merged with the last ones while they
    are no more than twice its size, so each head is built into one O(log heads) times, and a text is read by
    each of them (about log2 of the heads added one by one: a dozen). The automata also read the texts once
    these are long enough to pay for them (`automata_pay`): a walk reads a character in Python, an automaton
    in C, but building 50,000 random values (a trie 7 nodes deep) into automata took 0.2–0.5 s and 30 MB
    more, for a first 32 KB text that a walk reads in 0.1 s.
    """

    def __init__(self) -> None:
        self.edges: list[dict[str, int]] = [{}]
        self.label = [""]
        self.seps: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self.first: dict[int, int] = {}
        self.after: list[int] = []
        self.entries: list[_Entry] = []
        self.below = array("i", [0])  # per node, the most nodes a walk reads from it through string edges
        self.read = 0  # the characters of the texts read through it
        self.heads: dict[str, int] = {}  # head -> the node it ends at
        self._levels: list[tuple[ahocorasick.Automaton, list[str]]] = []
        self._pending: list[str] = []  # heads in no automaton yet

    def deep(self) -> bool:
        """Whether a walk from one offset may read more than `_WALK_STEPS` nodes (see above)."""
        return self.below[0] > _WALK_STEPS

    def automata_pay(self) -> bool:
        """Whether the automata should read the texts: the trie is deep, or the texts read through it are long
        enough that building its heads costs less than walking them (a head's building takes about as long as
        walking `_BUILD_COST` characters; a walk of a character costs some 15 times the automata's read)."""
        return self.deep() or self.read > _BUILD_COST * len(self.heads)

    def automata(self) -> list[ahocorasick.Automaton]:
        """The automata that together hold every head, the new ones built in."""
        if self._pending:
            keys, self._pending = self._pending, []
            while self._levels and len(self._levels[-1][1]) <= 2 * len(keys):
                keys = self._levels.pop()[1] + keys
            automaton = ahocorasick.Automaton()
            for key in keys:
                automaton.add_word(key, (self.heads[key], len(key)))
            automaton.make_automaton()
            self._levels.append((automaton, keys))
        return [automaton for automaton, _ in self._levels]

    def _node(self, label: str) -> int:
        self.edges.append({})
        self.label.append(label)
        self.below.append(0)
        return len(self.label) - 1

    def insert(self, path: Sequence[str | int], entry: _Entry) -> None:
        """Add `entry` at the end of `path`: strings, and 0 or 1 for a spelled-out "@" or "."."""
        node = 0
        head: list[str] = []  # the strings before the first separator
        head_node = -1  # the node they end at
        trail = [0]  # the nodes the head passes, from the root
        for item in path:
            if isinstance(item, int):
                if head_node == -1:
                    head_node = node
                child = self.seps[item].get(node)
                if child is None:
                    child = self.seps[item][node] = self._node("")
                node = child
                continue
            if head_node == -1:
                head.append(item)
            i = 0
            while i < len(item):
                child = self.edges[node].get(item[i])
                if child is None:
                    child = self.edges[node][item[i]] = self._node(item[i:])
                    node = child
                    if head_node == -1:
                        trail.append(node)
                    break
                label = self.label[child]
                k = len(label)
                if not item.startswith(label, i):
                    k = 1
                    while k < len(label) and i + k < len(item) and label[k] == item[i + k]:
                        k += 1
                if k < len(label):  # split the edge where the path leaves it
                    middle = self.edges[node][item[i]] = self._node(label[:k])
                    self.label[child] = label[k:]
                    self.edges[middle][label[k]] = child
                    self.below[middle] = self.below[child] + 1
                    child = middle
                node, i = child, i + k
                if head_node == -1:
                    trail.append(node)
        below = self.below
        for up, down in zip(reversed(trail[:-1]), reversed(trail[1:]), strict=True):
            below[up] = max(below[up], below[down] + 1)
        key = "".join(head)
        if key and key not in self.heads:  # an empty head is never read in a text: nothing to find
            self.heads[key] = node if head_node == -1 else head_node
            self._pending.append(key)
        self.entries.append(entry)
        self.after.append(self.first.get(node, -1))
        self.first[node] = len(self.entries) - 1


def _trie_hits(text: str, trie: _Trie) -> dict[int, list[int]]:
    """For each entry of `trie` (by number), the offsets (in order) where its path is read in `text` folded:
    where its value may start. The trie is walked from each offset, or, where that could read a long chain
    (see `_Trie`), the automata find each head where it is written and only what follows a spelled-out
    separator is walked; a separator may end in several places, each followed."""
    folded = _fold(text)
    trie.read += len(folded)
    if not trie.automata_pay():
        top, label = trie.edges[0].get, trie.label
        return _follow(text, folded, trie, ((i, node, i + len(label[node])) for i, node in enumerate(map(top, folded))
                                            if node is not None and folded.startswith(label[node], i)), walk=True)
    return _follow(text, folded, trie, ((last + 1 - length, node, last + 1) for automaton in trie.automata()
                                        for last, (node, length) in automaton.iter(folded)), walk=False)


def _follow(text: str, folded: str, trie: _Trie, starts: Iterator[tuple[int, int, int]],
            walk: bool) -> dict[int, list[int]]:
    """The hits of `_trie_hits` from where paths start (offset, node, where the node's label ends), following
    edges (`walk`) or only spelled-out separators and what follows them (from a head an automaton found: a
    longer head is a key of its own)."""
    size = len(folded)
    edges, label, first, after, seps = trie.edges, trie.label, trie.first, trie.after, trie.seps
    hits: dict[int, list[int]] = {}
    ends: dict[tuple[int, int], tuple[int, ...]] = {}
    for i, node, pos in starts:
        todo: list[tuple[int, int]] = []
        follow = walk
        while True:
            e = first.get(node, -1)
            while e != -1:
                got = hits.setdefault(e, [])
                if not got or got[-1] != i:
                    got.append(i)
                e = after[e]
            if (node in seps[0] or node in seps[1]) and pos < size and (
                    text[pos] in _SEP_START or text[pos].isspace()):
                for sep, children in enumerate(seps):
                    if node in children:
                        if (sep, pos) not in ends:
                            ends[sep, pos] = tuple(set(_sep_ends(text, pos, _SEP_RX[sep])))
                        todo += [(children[node], end) for end in ends[sep, pos]]
            if pos < size and follow:
                child = edges[node].get(folded[pos])
                if child is not None and folded.startswith(label[child], pos):
                    node, pos = child, pos + len(label[child])
                    continue
            if not todo:
                break
            node, pos = todo.pop()
            follow = True
    return hits


class _Runs:
    """The runs of letters and digits of a text: where each starts, and its offset in `letters`, all of them
    folded and put end to end (`offsets` has one more item: the end)."""

    def __init__(self, text: str) -> None:
        self.starts, self.offsets = array("q"), array("q")
        at = 0
        for m in _RUN.finditer(text):
            self.starts.append(m.start())
            self.offsets.append(at)
            at += m.end() - m.start()
        self.offsets.append(at)
        self.letters = _fold(_NOT_RUN.sub("", text))

    def hits(self, trie: _Trie) -> dict[int, list[int]]:
        """For each entry of `trie` (by number), the runs (in order) from whose start its letters are read.

        A walk from each run's start reads at most the trie's depth (`_Trie.below`). The automata read every
        place of the letters instead, and report what starts inside a run as well, to be thrown away (a run
        of 32,000 "1"s and 60 ids of "1"s took 0.2 s so): they read them only where the trie is deep and its
        depth times the runs is more than the letters (many short runs)."""
        hits: dict[int, list[int]] = {}
        letters, size = self.letters, len(self.letters)
        first, after = trie.first, trie.after
        runs = len(self.offsets) - 1
        if trie.deep() and runs * trie.below[0] > size:
            run = {at: r for r, at in enumerate(self.offsets[:-1])}  # a run's offset in `letters` -> its number
            for automaton in trie.automata():
                for last, (node, length) in automaton.iter(letters):
                    r = run.get(last + 1 - length, -1)
                    if r != -1:
                        e = first.get(node, -1)
                        while e != -1:
                            hits.setdefault(e, []).append(r)
                            e = after[e]
            return hits
        edges, label = trie.edges, trie.label
        top = edges[0].get
        for r, at in enumerate(self.offsets[:-1]):
            node = top(letters[at]) if at < size else None
            while node is not None and letters.startswith(label[node], at):
                at += len(label[node])
                e = first.get(node, -1)
                while e != -1:
                    hits.setdefault(e, []).append(r)
                    e = after[e]
                node = edges[node].get(letters[at]) if at < size else None
        return hits


class _Known:
    """The values of a Redactor's mapping, in the tries above; `rank` is each placeholder's place in the
    mapping (values of one length are tried in that order) and `size` how many of its items were read.

    Their percent-encoded forms have a trie of their own (`encoded`, holding the first `encoded_size` items),
    filled on the first text that may hold one: every such form has a "%" or a "+", and most texts have neither,
    so most requests never pay for it (2 more paths per card or IBAN)."""

    def __init__(self) -> None:
        self.trie, self.runs, self.encoded = _Trie(), _Trie(), _Trie()
        self.slow: list[_Entry] = []  # forms searched with their own pattern (see `_NOT_ONLY_LETTERS`)
        self.rank: dict[str, int] = {}
        self.size = 0
        self.encoded_size = 0

    def add_encoded(self, token: str, original: str) -> None:
        """Index the next item's percent-encoded forms (none for an empty value, as for `add`)."""
        self.encoded_size += 1
        for form in encoded_forms(token[1:].rsplit("_", 1)[0], original) if original else ():
            self.encoded.insert([_fold(form)], _Entry("encoded", token, original, chars=form))

    def add(self, token: str, original: str) -> None:
        self.rank[token] = self.size
        self.size += 1
        if not original:
            return
        exact = _Entry("exact", token, original)
        label = token[1:].rsplit("_", 1)[0]
        if label == "EMAIL" and "@" in original:
            parts = re.split(r"([.@])", original)
            words, seps = tuple(parts[0::2]), tuple(int(s == ".") for s in parts[1::2])
            if all(words) and len(words) <= _MAX_WORDS:
                path: list[str | int] = [_fold(words[0])]
                for sep, word in zip(seps, words[1:], strict=True):
                    path += [sep, _fold(word)]
                plain = "" if any(w[0].isspace() for w in words[1:]) else original
                self.trie.insert(path, exact)  # as written, it is one of its spellings: no path of its own
                self.trie.insert(path, _Entry("spelled", token, original, words, seps, plain))
                return
            self.slow.append(_Entry("slow", token, original))
        elif label not in _EXACT_FORMS:
            chars = re.sub(r"[\W_]", "", original)
            if len(chars) >= 8:
                letters = _fold(chars)
                if any(c in letters for c in _NOT_ONLY_LETTERS):
                    self.slow.append(_Entry("slow", token, original))
                else:
                    self.runs.insert([letters], _Entry("runs", token, original, chars=chars))
        self.trie.insert([_fold(original)], exact)


def _last(mapping: Mapping[str, str], n: int) -> list[tuple[str, str]]:
    """The last `n` items of `mapping`, in order: the placeholders added since it was last read."""
    return list(islice(reversed(mapping.items()), n))[::-1]


class KnownValues:
    """A Redactor's values (placeholder -> original) as an index, kept up to date as placeholders are added, and
    the other forms a model may write each of them in."""

    def __init__(self) -> None:
        self._known = _Known()
        self._forms: dict[str, re.Pattern[str] | None] = {}  # placeholder -> pattern of its value's other forms
        self._encoded: dict[str, re.Pattern[str]] = {}  # percent-encoded form -> `encoded_pattern`

    def form(self, token: str, original: str) -> re.Pattern[str] | None:
        """A pattern for the other ways a model may write a known value: a card, IBAN or id with any
        separators ("4539/1488/…"), an email spelled out ("jane.roe [at] fastmail [dot] com")."""
        if token not in self._forms:
            label = token[1:].rsplit("_", 1)[0]
            pattern = None
            if label == "EMAIL" and "@" in original:
                parts = [re.escape(w) for w in re.split(r"([.@])", original)]
                pattern = "".join(_AT if w == "@" else _DOT if w == r"\." else w for w in parts)
            elif label not in _EXACT_FORMS:
                chars = re.sub(r"[\W_]", "", original)
                if len(chars) >= 8:
                    pattern = r"(?<![^\W_])" + r"[\W_]{0,3}".join(map(re.escape, chars)) + r"(?![^\W_])"
            self._forms[token] = re.compile(pattern, re.I) if pattern else None
        return self._forms[token]

    def sync(self, mapping: Mapping[str, str]) -> _Known:
        """The index of `mapping`'s values, brought up to date: placeholders are only ever added, so the new
        ones are the last items of the mapping."""
        if len(mapping) < self._known.size:
            self._known = _Known()
        new = len(mapping) - self._known.size
        for token, original in _last(mapping, new):
            self._known.add(token, original)
        return self._known

    def spans(self, mapping: Mapping[str, str], text: str,
              taken: Sequence[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
        """Where values found elsewhere in the request (a password recognised by its context there) are
        written in `text`, as written or in the other forms a trusted model may have rewritten them into
        (`form`), and do not overlap `taken` or each other. Longest value first, so a value containing
        another is replaced whole; for one value, where it is written as it is first, then percent-encoded
        (in the order of `encoded_forms`), then its other forms."""
        known = self.sync(mapping)
        if not text or not (known.trie.entries or known.runs.entries or known.slow):
            return []
        # per placeholder: (which forms go first, the entry's number, the entry, its candidates)
        found: dict[str, list[tuple[int, int, _Entry, list[int]]]] = {}
        for e, starts in _trie_hits(text, known.trie).items() if known.trie.entries else ():
            entry = known.trie.entries[e]
            found.setdefault(entry.token, []).append((0 if entry.kind == "exact" else 2, e, entry, starts))
        if "%" in text or "+" in text:  # what every percent-encoded form holds (see `_Known`)
            for token, original in _last(mapping, len(mapping) - known.encoded_size):
                known.add_encoded(token, original)
            for e, starts in _trie_hits(text, known.encoded).items() if known.encoded.entries else ():
                entry = known.encoded.entries[e]
                found.setdefault(entry.token, []).append((1, e, entry, starts))
        runs = _Runs(text) if known.runs.entries else None
        for e, starts in runs.hits(known.runs).items() if runs else ():
            found.setdefault(known.runs.entries[e].token, []).append((2, e, known.runs.entries[e], starts))
        for entry in known.slow:
            found.setdefault(entry.token, []).append((2, 0, entry, []))
        covered = bytearray(len(text))  # 1 where a span is taken
        cuts = None  # 1 at the offset of an empty span taken: a span across it overlaps it
        for start, end, _ in taken:  # (start <= end; an extra span may reach past the text: what of it is in)
            end = min(end, len(text))
            if end > start:
                covered[start:end] = b"\1" * (end - start)
            elif start < len(text):
                cuts = cuts or bytearray(len(text) + 1)
                cuts[start] = 1
        out: list[tuple[int, int, str]] = []
        for token in sorted(found, key=lambda t: (-len(found[t][0][2].original), known.rank[t])):
            spans: list[tuple[int, int]] = []
            for _, _, entry, starts in sorted(found[token], key=lambda p: p[:2]):
                spans += self._occurrences(text, entry, starts, runs)
            for at, end in spans:
                if covered.find(1, at, end) == -1 and (cuts is None or cuts.find(1, at + 1, end) == -1):
                    covered[at:end] = b"\1" * (end - at)
                    out.append((at, end, token))
        return out

    def _occurrences(self, text: str, entry: _Entry, starts: list[int], runs: _Runs | None) -> list[tuple[int, int]]:
        """The spans a search for `entry`'s value finds from the candidates a trie gave (`str.find` after each
        occurrence for the value as written, `finditer` of its pattern for its other forms)."""
        spans: list[tuple[int, int]] = []
        last = 0
        if entry.kind == "exact":
            for at in starts:
                if at >= last and text.startswith(entry.original, at):
                    last = at + len(entry.original)
                    spans.append((at, last))
        elif entry.kind == "encoded":
            pattern = self._encoded.get(entry.chars)
            if pattern is None:
                pattern = self._encoded[entry.chars] = encoded_pattern(entry.chars)
            for at in starts:
                if at >= last and pattern.match(text, at):
                    last = at + len(entry.chars)
                    spans.append((at, last))
        elif entry.kind == "spelled":
            cores = [_SEP_RX[sep] for sep in entry.seps]
            for at in starts:
                if at < last:
                    continue
                if entry.chars and text.startswith(entry.original, at):  # see `_Entry`
                    end: int | None = at + len(entry.original)
                else:
                    end = _spelled_end(text, at, entry.words, cores)
                if end is not None:
                    spans.append((at, end))
                    last = end
        elif entry.kind == "runs" and runs is not None:
            for r in starts:
                at = runs.starts[r]
                end = _run_end(text, runs.starts, runs.offsets, r, entry.chars) if at >= last else None
                if end is not None:
                    spans.append((at, end))
                    last = end
        else:
            form = self.form(entry.token, entry.original)
            spans = [m.span() for m in form.finditer(text)] if form is not None else []
        return spans
