"""Automatic graders: turn a model's free-text answer into a 0–1 score against a gold answer.

Small models answer in every format imaginable ("The answer is $1,234.00", "**B**", "I think (C)",
"\\boxed{\\frac{3}{4}}"), so extraction is tolerant, but it never guesses: an answer we cannot find
scores 0. Code is graded by running it with its tests in the guarded sandbox (``moai.sandbox``: a separate
Python process with a time limit and capped output, in a scratch directory, with the environment stripped,
inside bubblewrap with no network, no view of the host's files or processes, and an audit hook besides), so
a bad program cannot hang or litter the run. Where bubblewrap cannot run, grading (run by the operator,
offline) falls back to the process limits and the audit hook, with a warning.

How a code answer is run and judged, and what that cannot rule out, is ``code_harness``'s.
"""

from __future__ import annotations

import ast
import re
import string
from collections import Counter
from collections.abc import Sequence

from moai.bench.code_harness import run_tests

# ------------------------------------------------------------------------------------------ numbers

_NUM = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_MIXED = r"-?\d+ +\d+ */ *\d+(?![\d.,/])"  # '2 1/2' (kept only when the fraction is proper)
_NUM_RE = re.compile(rf"(?<![\w.])(?:{_MIXED}|(?:{_NUM})(?:\s*/\s*\d+)?)")
_HEDGE_RE = re.compile(r"[\s,]*\bor\b[\s$€£]*")  # what stands between the two numbers of '70 or 72'
_MAX_DIGITS = 300  # no quantity is longer; past 308 digits a float cannot hold it, past 4,300 int() refuses


class _Hedged(Exception):
    """The answer names two different numbers ('70 or 72'): it states no single answer."""


def _mixed(s: str) -> float | None:
    """'2 1/2' -> 2.5, '-1 3/4' -> -1.75; None when it is not a mixed number with a proper fraction."""
    m = re.fullmatch(r"(-?)(\d+) +(\d+) */ *(\d+)", s)
    if m is None or max(len(g) for g in m.groups()) > _MAX_DIGITS or int(m.group(3)) >= int(m.group(4)):
        return None
    value = int(m.group(2)) + int(m.group(3)) / int(m.group(4))
    return -value if m.group(1) else value


def parse_number(text: str) -> float | None:
    """A number from a short answer string: '$1,234.00', '-5', '72.0', '3/4', '\\frac{3}{4}', '50%'."""
    s = text.strip()
    s = re.sub(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1)/(\2)", s)
    s = re.sub(r"\\(?:left|right|!|,|;|\s)|\\text\{[^{}]*\}|\\mathrm\{[^{}]*\}|\$|\\%|%|\\\$", "", s)
    s = s.replace("−", "-").replace("{", "").replace("}", "").strip().rstrip(".")
    s = re.sub(r"^\((.*)\)$", r"\1", s)
    if (mixed := _mixed(s)) is not None:
        return mixed
    # atomic numbers: a long run of digits is split only one way, not tried at every cut
    m = re.fullmatch(r"\(?\s*(-?(?>[\d,]*\.?\d+))\s*\)?\s*/\s*\(?\s*(-?(?>[\d,]*\.?\d+))\s*\)?", s)
    try:
        if m:
            num, den = (float(g.replace(",", "")) for g in m.groups())
            return num / den if den else None
        m = re.search(_NUM, s)
        if m is None or not re.fullmatch(rf"[^\d]*(?>{_NUM})[^\d]*", s):
            return None
        return float(m.group(0).replace(",", ""))
    except ValueError:
        return None


def numbers_equal(a: float | None, b: float | None, rel: float = 1e-6) -> bool:
    """Equal up to rounding noise ('72' == '72.0' == '72.00')."""
    if a is None or b is None:
        return False
    return abs(a - b) <= rel * max(1.0, abs(a), abs(b))


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), with nested braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def extract_number(text: str) -> float | None:
    """The final numeric answer of a worked solution.

    Order of trust: after '####', inside \\boxed{}, after 'answer is'/'Answer:', then the last number.
    An answer hedged between two numbers ('70 or 72') is no answer.
    """
    try:
        for pattern in (r"####\s*(.+)", r"(?:final answer|answer)\s*(?:is|:|=)(?:\s*:)?\s*(.+)"):
            hits = re.findall(pattern, text, flags=re.IGNORECASE)
            if hits:
                value = _first_number(hits[-1])
                if value is not None:
                    return value
        boxed = last_boxed(text)
        if boxed is not None:
            value = parse_number(boxed)
            if value is None:
                value = _first_number(boxed)
            if value is not None:
                return value
        return _last_number(text)
    except _Hedged:
        return None


def _clean_latex(text: str) -> str:
    text = re.sub(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2", text)
    text = text.replace("\\$", "$").replace("\\%", "%").replace("\\,", "").replace("**", "").replace("\u2212", "-")
    # a minus written before the currency sign keeps its number negative: '-$5', '-$1,234.50' -> '-5', ...
    return re.sub(r"(?<![\w.)])-[$€£]\s*(?=\.?\d)", "-", text)


def _numbers(text: str) -> list[tuple[float | None, int, int]]:
    """The numbers in (cleaned) text with their spans; an improper '3 5/4' counts as 3 and 5/4."""
    out: list[tuple[float | None, int, int]] = []
    for m in _NUM_RE.finditer(text):
        if re.fullmatch(_MIXED, m.group(0)) and _mixed(m.group(0)) is None:
            out += [(parse_number(p.group(0)), m.start() + p.start(), m.start() + p.end())
                    for p in re.finditer(rf"(?:{_NUM})(?: */ *\d+)?", m.group(0))]
        else:
            out.append((parse_number(m.group(0)), m.start(), m.end()))
    return out


def _pick(text: str, nums: list[tuple[float | None, int, int]], i: int) -> float | None:
    """Number ``i`` of ``nums``, unless it is one side of a hedge between two different numbers."""
    value, start, end = nums[i]
    for j in (i - 1, i + 1):
        if not 0 <= j < len(nums):
            continue
        between = text[nums[j][2] : start] if j < i else text[end : nums[j][1]]
        if _HEDGE_RE.fullmatch(between) and not numbers_equal(value, nums[j][0]):
            raise _Hedged
    return value


def _first_number(text: str) -> float | None:
    line = _clean_latex(text.split("\n")[0])
    nums = _numbers(line)
    return _pick(line, nums, 0) if nums else None


def _last_number(text: str) -> float | None:
    text = _clean_latex(text)
    nums = _numbers(text)
    return _pick(text, nums, len(nums) - 1) if nums else None


def gsm8k_gold(answer: str) -> str:
    """GSM8K's gold is the text after '#### ' (the worked solution comes before it)."""
    return answer.split("####")[-1].strip()


def grade_number(response: str, gold: str | float) -> float:
    """1.0 when the response's final number equals the gold number."""
    g = gold if isinstance(gold, float | int) else parse_number(gsm8k_gold(str(gold)))
    return float(numbers_equal(extract_number(response), None if g is None else float(g)))


# ------------------------------------------------------------------------------------- MATH answers


def _normalise_math(s: str) -> str:
    """Canonical form of a MATH answer (after Hendrycks et al.'s is_equiv, abridged)."""
    s = s.strip().strip("$").strip()
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:left|right|displaystyle|!|,|;|:)", "", s)
    s = s.replace("dfrac", "frac").replace("tfrac", "frac").replace("^\\circ", "").replace("^{\\circ}", "")
    s = s.replace("\\$", "").replace("\\%", "").replace("%", "").replace(" ", "")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", s)
    s = s.rstrip(".")
    if re.fullmatch(r"[a-z]\s*=.*", s):
        s = s.split("=", 1)[1]
    s = re.sub(r"(?<!\d)(\d+)\.0+$", r"\1", s)  # whole runs only: no retry from each digit
    return s


def math_gold(ground_truth: str) -> str:
    """The MATH gold answer: the solution's last \\boxed{}, or the string itself (MGSM gives a number)."""
    boxed = last_boxed(ground_truth)
    return boxed if boxed is not None else ground_truth.strip()


def grade_math(response: str, ground_truth: str) -> float:
    """MATH / MGSM: compare the last \\boxed{} (else the stated final answer) with the gold, symbolically-ish."""
    gold = math_gold(ground_truth)
    pred = last_boxed(response)
    if pred is None:
        hits = re.findall(r"(?:final answer|answer)\s*(?:is|:)(?:\s*:)?\s*\$?([^\n$]+)", response, flags=re.I)
        pred = hits[-1].strip().rstrip(".") if hits else None
    if pred is None:
        n = extract_number(response)
        return float(numbers_equal(n, parse_number(gold)))
    if _normalise_math(pred) == _normalise_math(gold):
        return 1.0
    return float(numbers_equal(parse_number(pred), parse_number(gold)))


# --------------------------------------------------------------------------------- multiple choice

LETTERS = "ABCDEFGHIJ"


def extract_letter(text: str, n_choices: int = 4, choices: Sequence[str] | None = None) -> str | None:
    """The chosen option letter: 'B', 'b', '**B**', '(C)', 'Answer: D', 'The answer is B.', 'B) text'.

    Order of trust: an explicit 'answer is X' (the last one), the reply's first character, 'option X',
    '(X)', 'X.', then a lone capital. Option lines the reply merely echoes ('A. Paris' / 'B. London') are
    no answer, and an answer naming two letters ('the answer is B and C') is ungradable: None. When no
    letter is found, an answer that repeats exactly one option's text picks that option.
    """
    valid = LETTERS[:n_choices]
    t = text.strip().replace("*", "")
    # a stated letter: '(b)', 'B', or a lower-case 'b' that ends the phrase ('the answer is a bit ...' is no 'A')
    letter = rf"(?:\(([{valid}{valid.lower()}])\)|([{valid}])(?![\w])|([{valid.lower()}])(?=[ \t]*(?:[.,;:!?)\n]|$)))"
    said = r"(?i:answer\s*(?:is|:|=)(?:\s*:)?\s*(?:option\s*)?|answer\s+(?:option\s*)?)"
    stated = list(re.finditer(said + letter, t))
    if stated:
        last, pick = stated[-1], lambda m: next(g for g in m.groups() if g).upper()
        more = re.match(rf"\s*(?i:,|and|&|/|or)\s*(?i:option\s*)?{letter}", t[last.end() :])
        if more and pick(more) != pick(last):
            return None  # 'the answer is B and C': two answers are no answer
        return pick(last)
    echoed = {m.group(1) for m in re.finditer(rf"^\s*\(?([{valid}])[.)]\s+\S", t, flags=re.M)}
    if len(echoed) > 1:  # the reply repeats the option list: its option letters say nothing
        t = re.sub(rf"^\s*\(?[{valid}][.)]\s+\S.*$", "", t, flags=re.M).strip()
    patterns = [
        (rf"^\(?([{valid}])\)?(?:[.):]|\s*$|\s*\n)", re.I),  # the letter alone, or first with '.', ')' or ':'
        (rf"(?:option|choice)\s*\(?([{valid}])\)?(?![\w])", re.I),
        (rf"\(([{valid}])\)", 0),
        (rf"(?<![\w'])([{valid}])[.)](?:\s|$)", 0),
        (rf"(?<![\w'])([{valid}])(?![\w'])", 0),
    ]
    for i, (pattern, flags) in enumerate(patterns):
        hits = re.findall(pattern, t, flags=flags)
        if hits:
            if i == len(patterns) - 1 and len(set(hits)) > 1:
                break  # several bare capitals ('A' as an article, ...): ambiguous
            return hits[-1].upper() if i == 1 else hits[0].upper()
    if choices:
        low = t.lower().strip(" .")
        picked = [k for k, c in enumerate(choices) if c and (low == c.lower().strip() or c.lower() in low)]
        if len(picked) == 1:
            return LETTERS[picked[0]]
    return None


def grade_letter(response: str, gold: str, n_choices: int = 4, choices: Sequence[str] | None = None) -> float:
    """1.0 when the chosen letter is the gold letter."""
    return float(extract_letter(response, n_choices, choices) == gold.strip().upper())


# ------------------------------------------------------------------------------------ text metrics


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(pred: str, gold: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(gold))


def f1_score(pred: str, gold: str) -> float:
    """SQuAD token F1 between a short answer and the gold answer."""
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if not p or not g:
        return float(p == g)
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def short_answer(text: str) -> str:
    """The answer part of a chatty reply: first line, without 'The answer is' and the like."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^\s*(?:\*\*)?(?:final\s+)?answer(?:\*\*)?\s*[:\-]\s*", "", line, flags=re.I)
    line = re.sub(r"^\s*the answer is\s*", "", line, flags=re.I)
    return line.replace("**", "").strip()


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def commongen_coverage(response: str, concepts: str | Sequence[str]) -> float:
    """Share of the given concept words that the generated sentence uses (any inflection)."""
    items = [c.strip().lower() for c in (concepts.split(",") if isinstance(concepts, str) else concepts)]
    items = [c for c in items if c]
    if not items:
        return 0.0
    words = {_stem(w) for w in re.findall(r"[a-z]+", response.lower())}
    return sum(_stem(c) in words for c in items) / len(items)


# ---------------------------------------------------------------------------------------- code


_LANG_RE = re.compile(r"[ \t]*(\w*)")


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of each ``` block; an unclosed one runs to the end. Scanned with find, so a reply of
    many backticks costs linear time."""
    blocks, i = [], 0
    while (i := text.find("```", i)) != -1:
        nl = text.find("\n", i + 3)
        if nl == -1:
            break
        lang = _LANG_RE.match(text, i + 3).group(1)  # type: ignore[union-attr]  # always matches, stops at nl
        end = text.find("```", nl + 1)
        blocks.append((lang, text[nl + 1 : end if end != -1 else len(text)]))
        i = end + 3 if end != -1 else len(text)
    return blocks


def extract_code(text: str) -> str:
    """The Python in a reply: the fenced blocks joined (python-tagged first), else the whole reply."""
    py = [code for lang, code in _fenced_blocks(text) if lang.lower() in ("python", "py", "python3", "")]
    return "\n".join(py).strip("\n") if py else text.strip("\n")


def parse_tests(tests: str | Sequence[str] | None) -> list[str]:
    """MBPP tests arrive as a list or as its repr string: "['assert f(1)==2', ...]"; anything else holds none."""
    if isinstance(tests, str):
        try:
            value = ast.literal_eval(tests)
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):  # plain lines of code
            return [ln for ln in tests.splitlines() if ln.strip()]
        tests = value if isinstance(value, list | tuple) else [value]
    if not isinstance(tests, list | tuple):  # null, a number, an object: no tests to run
        return []
    return [str(t) for t in tests if str(t).strip()]  # a blank test would pass any code


def grade_mbpp(response: str, tests: str | Sequence[str], timeout_s: float = 10.0) -> float:
    """1.0 when the reply's code passes every MBPP assert."""
    return float(run_tests(extract_code(response) + "\n", "\n".join(parse_tests(tests)) + "\n", timeout_s))


def humaneval_entry_point(prompt: str) -> str | None:
    """The function HumanEval tests: the last top-level ``def`` in the prompt."""
    names = re.findall(r"^def\s+(\w+)\s*\(", prompt, flags=re.M)
    return names[-1] if names else None


def grade_humaneval(response: str, prompt: str, test: str, timeout_s: float = 10.0) -> float:
    """1.0 when the completed function passes HumanEval's ``check(candidate)``.

    A reply that (re)defines the whole function is appended after the prompt, so its definition wins
    and the prompt's imports and helpers stay available; a bare body is appended to the prompt as is.
    """
    entry = humaneval_entry_point(prompt)
    if entry is None:
        return 0.0
    code = extract_code(response)
    if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, flags=re.M):
        program = prompt + "\n    pass\n\n" + code
    else:
        program = prompt + code
    return float(run_tests(program + "\n", test + f"\n\ncheck({entry})\n", timeout_s))
