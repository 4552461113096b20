"""The shape-based recognizers behind `moai.gate.privacy`, and the helpers all recognizers share.

Each recognizer takes one text and yields `Hit`s (kind, span, placeholder label, explanation). Here are the
kinds with a recognisable shape (cards, national ids, IBAN, secrets, contact details): regexes plus
validation, with checksums from python-stdnum (Luhn, IBAN mod-97, SSN, NIR, IdNr, DNI, NIE, codice fiscale),
vendor key formats from detect-secrets' plugins, and own rules for what no library covers (passwords given
in context or handed over with a login, secret-named keys in code, addresses) in EN/FR/DE/ES. The kinds
that need language rules (health, confidential) are in `privacy_context`.

Why rules and not an NER model: the gate runs on every request (budget: a few ms) and must work offline;
Presidio's analyzer wants a spaCy model download, so it is not used. Benign look-alikes are excluded on
purpose: published test card numbers and documentation IBANs, placeholder credentials
(`user:password@`) and vendors' `…EXAMPLE…` values, example-domain emails, fictional 555 phone numbers,
templates with `[placeholders]`, fiction and made-up example data, and general questions about a topic
(what is an SSN, symptoms of diabetes, how to write a performance review) are *not* sensitive.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from stdnum import iban as _iban
from stdnum import luhn as _luhn
from stdnum.de import idnr as _de_idnr
from stdnum.es import dni as _es_dni
from stdnum.es import nie as _es_nie
from stdnum.fr import nir as _fr_nir
from stdnum.it import codicefiscale as _it_cf
from stdnum.us import ssn as _us_ssn

from moai.gate import privacy_scan as scan
from moai.gate.privacy_scan import gated

KINDS: tuple[str, ...] = ("payment_card", "national_id", "iban", "secret", "contact", "health", "confidential")


@dataclass(frozen=True)
class Hit:
    """One recognizer match inside one text (offsets are into that text)."""

    kind: str
    start: int
    end: int
    label: str  # placeholder stem: EMAIL, IBAN, CARD, SSN, ...
    explanation: str


_I = re.IGNORECASE


def words(s: str) -> frozenset[str]:
    """A word set from a whitespace-separated string (long lexicons stay readable)."""
    return frozenset(s.split())


# ---------------------------------------------------------------- shared helpers

GENERIC_QUESTION = re.compile(
    r"^\s*[¿¡]?\s*(?:what|how|why|when|where|who|which|is it|are there|can you explain|explain|define|describe|"
    r"tell me about|dis-moi|raconte|erzähl|beschreib|cuéntame|háblame|"
    r"qu'est-ce|que (?:signifie|veut dire)|comment|pourquoi|quel(?:le)?s?|qui|où|"
    r"was (?:ist|sind|bedeutet)|wie|warum|welche[rs]?|wer|wo|"
    r"qué|cómo|por qué|cuál(?:es)?|quién|dónde|explica)\b", _I,
)
# GENERIC_QUESTION at a position of a text (`match(text, pos)`: its "^" holds only at the text's start).
_GENERIC_AT = re.compile(GENERIC_QUESTION.pattern.removeprefix("^"), GENERIC_QUESTION.flags)
# The asker speaking about themself or someone close: what turns a topic question into a disclosure.
FIRST_PERSON = gated(re.compile(
    r"\b(?:I|I'm|I've|my|me|j'ai|je|mon|ma|mes|ich|mein\w*|mir|mich|yo|mi|mis|me|tengo|estoy)\b", _I,
))
# Fiction, role-play and exercises: "in my novel the heroine has leukemia", "a villain reveals the password".
FICTION = gated(re.compile(
    # Bare "story", "histoire", "historia" (also a medical history) or "nouvelle" (also "new") are not enough.
    r"\b(?:novel|short story|screenplay|fiction\w*|villain|heroine|protagonist|role-?play|"
    r"(?:in|for) (?:my|a|the) (?:story|game|script)|(?:a|the|my) character|"
    r"roman|personnage|héroïne|protagoniste|dans (?:mon|un|le) (?:histoire|récit|scénario)|"
    r"drehbuch|romanfigur|hauptfigur|heldin|bösewicht|in (?:meiner|einer) geschichte|"
    r"novela|cuento|guion|personaje|protagonista|villano|heroína|en (?:mi|un|una) (?:relato|historia de ficción)|"
    # made-up example data: "fake employees", "données fictives", "erfundene Namen", "datos ficticios"
    r"made[- ]up|invented|fake (?:data|names?|people|employees?|patients?|customers?|records?)|"
    r"(?:dummy|mock|sample|synthetic|test) (?:data|records|dataset)|fictifs?|fictives?|inventée?s?|"
    r"erfunden\w*|fiktiv\w*|fictici[oa]s?|inventad[oa]s?)\b",
    _I,
))
# "[Employee Name]", "<Company>", "{{patient}}": a template to fill in, about nobody yet.
# (Markdown links, HTML tags and code subscripts have other shapes and do not count.)
_TEMPLATE_SLOT = re.compile(
    r"\[[A-Za-zÀ-ÿ][\w .'/-]{1,38}\](?!\()|<(?:[A-ZÀ-Ý][\w .'-]{1,30}|[a-z]+[ _][\w .'-]{1,30})>|"
    r"\{\{?\s*[A-Za-z][\w .-]{1,30}\}\}?"
)


def is_template(text: str) -> bool:
    """Two or more placeholders: the judgement calls count a template as benign, however HR-like its words.
    (Counting stops at two: a long text with many brackets is read once, and only as far as needed.)"""
    return scan.memo(text, is_template, lambda: next(islice(_TEMPLATE_SLOT.finditer(text), 1, None), None)
                     is not None)


# "Translate 'I have diabetes' into French": the quoted words are material to translate, about nobody, as
# long as nothing outside the quotes speaks of the asker ("... for my mother" does).
_TRANSLATE = gated(re.compile(
    r"\b(?:translat\w*|tradu\w*|übersetz\w*|into (?:english|french|german|spanish|italian|portuguese)|"
    r"(?:en|in|al) (?:anglais|français|allemand|espagnol|englisch|französisch|deutsch|spanisch|inglés|francés|"
    r"alemán|español))\b", _I,
))
_QUOTED = re.compile(
    r"'([^'\n]{3,300})'|\"([^\"\n]{3,300})\"|“([^”\n]{3,300})”|«([^»\n]{3,300})»|„([^“”\n]{3,300})[“”]"
)


def translated_quotes(text: str) -> list[tuple[int, int]]:
    """Spans of quoted passages the text asks to have translated (empty when it asks nothing of the kind)."""
    return scan.memo(text, translated_quotes, lambda: _translated_quotes(text))  # type: ignore[no-any-return]


def _translated_quotes(text: str) -> list[tuple[int, int]]:
    if not scan.search(_TRANSLATE, text):
        return []
    spans = [(m.start(), m.end()) for m in _QUOTED.finditer(text)]
    if not spans:
        return []
    # the text without the quoted passages (joined once: cutting them out one by one copied the text each time)
    rest = "".join(text[a:b] for a, b in zip([0] + [q for _, q in spans], [p for p, _ in spans] + [len(text)],
                                             strict=True))
    if FIRST_PERSON.search(rest) or not _TRANSLATE.search(rest):  # (read once: not worth an index of its own)
        return []
    return spans


_ABBREV = words("mr mrs ms dr sr sra st m mme mlle hr fr nr no vs etc ca bzw inc ltd av avda")
_ABBREV_LEN = max(map(len, _ABBREV))
_END = re.compile(r"[.!?]+|\n")
# The ends of sentences as `sentences` finds them, in one pattern: a line break; a whole run of [.!?] before a
# space or the end, unless it is a lone "." after a one-character word or an abbreviation (spelt in ASCII
# letters either case, as `str.lower` reads them: "ſt." is no "St."). It starts with the character it ends at,
# so `re` skips ahead to the next one, and reads the context only there.
_ENDS = re.compile(
    r"[\n.!?](?:(?<=\n)|(?<![.!?]{2})(?:[.!?]+|(?<=[!?])|(?<!\b\w\.)"
    + "".join(f"(?<!\\b{''.join(f'[{c.upper()}{c}]' for c in a)}\\.)" for a in sorted(_ABBREV))
    + r")(?![.!?])(?=\s|\Z))"
)


def _first_person_from(text: str, pos: int) -> bool:
    """`FIRST_PERSON.search(text[pos:])`, remembering where the last search found its match: an address on
    each line of a long text asked for the rest of the text each time."""
    if len(text) < scan.LONG:
        return FIRST_PERSON.search(text, pos) is not None
    last = scan.memo(text, _first_person_from, list)  # [searched from, match start or None]
    if not (last and last[0] <= pos and (last[1] is None or pos <= last[1])):
        m = scan.search(FIRST_PERSON, text, pos)
        last[:] = [pos, m.start() if m else None]
    return last[1] is not None


def near(rx: re.Pattern[str], text: str, start: int, end: int, window: int = 60) -> bool:
    """Whether `rx` matches within `window` characters of the span."""
    return scan.search(rx, text, max(0, start - window), min(len(text), end + window)) is not None


def _ends_sentence(text: str, m: re.Match[str]) -> bool:
    """Whether an `_END` match ends a sentence: a line break, or [.!?] before a space that does not follow an
    abbreviation or a single letter. The word before the dot is read back a few characters only (it never
    starts before the sentence: what ends a sentence is no word character), not re-read from the sentence's
    start, which made a long run of "Dr. Dr. ..." quadratic."""
    if m.group() == "\n":
        return True
    if m.end() < len(text) and not text[m.end()].isspace():
        return False
    if m.group() != ".":
        return True
    i = m.start()
    while i > 0 and m.start() - i <= _ABBREV_LEN and (text[i - 1].isalnum() or text[i - 1] == "_"):
        i -= 1
    word = text[i:m.start()]
    return not word or (m.start() - i > _ABBREV_LEN or (word.lower() not in _ABBREV and len(word) != 1))


def sentences(text: str) -> Iterator[tuple[int, int]]:
    """Sentence spans, not cut after abbreviations (M. Girard, Sr. Molina) or inside numbers (18.2)."""
    start = 0
    for m in _END.finditer(text):
        if _ends_sentence(text, m):
            yield start, m.end()
            start = m.end()
    if start < len(text):
        yield start, len(text)


def sentence_around(text: str, at: int, start: int = 0) -> tuple[int, int]:
    """The span `sentences` gives for the sentence holding position `at` (not inside a run of [.!?]), given a
    sentence start `start` <= `at`. Read around `at` (back in doubling steps), not from the text's start: a
    sentence's ends depend only on the characters around them."""
    width = 256
    lo = at
    while lo > start:
        lo = max(start, at - width)
        while lo > start and text[lo - 1] in ".!?":  # a run of [.!?] is read whole, as a full scan reads it
            lo -= 1
        end = None
        for m in _ENDS.finditer(text, lo):
            if m.start() >= at:
                break
            end = m.end()
        if end is not None:
            start = end
            break
        width *= 2
    m = _ENDS.search(text, at)
    return start, m.end() if m else len(text)


# ---------------------------------------------------------------- payment cards

_CARD = gated(re.compile(r"(?<![\w.-])(?:\d[ -]?){12,18}\d(?![\w-])"))
# Groups kept apart by something wider: "4539 - 1488 - 0343 - 6467", double spaces, dots, underscores, slashes.
# Only as a card is printed (a first group of 4, the same separator throughout), so that version
# numbers, dotted IPs (no group of 4) and number lists do not chain into one.
_CARD_GROUPED = gated(re.compile(
    r"(?<![\w.-])\d{4}(?P<sep>[ \t]{2,3}|[ \t]{0,2}[-._/][ \t]{0,2})\d{4,6}(?:(?P=sep)\d{1,6}){1,3}(?![\w-]|\.\d)"
))
# Numbers published by card networks and PSPs for testing: public, identify nobody.
_TEST_CARDS = frozenset({
    "4111111111111111", "4242424242424242", "4012888888881881", "4000056655665556", "4000000000000002",
    "4000000000009995", "4000002500003155", "4000000000000077", "4222222222222", "4012888888881",
    "5555555555554444", "5105105105105100", "5200828282828210", "2223003122003222", "5454545454545454",
    "378282246310005", "371449635398431", "378734493671000", "6011111111111117", "6011000990139424",
    "3056930009020004", "36227206271667", "3566002020360505", "3530111333300000", "6200000000000005",
    # Adyen, Braintree, Checkout.com, Worldpay, Authorize.net, Redsys, Mastercard's developer sandbox
    "4111111145551142", "5555341244441115", "370000000000002", "4005519200000004", "4009348888881881",
    "4012000033330026", "4012000077777777", "4217651111111119", "4500600000000061", "4543474002249996",
    "5436031030606378", "4444333322221111", "4007000000027", "4012888818888", "5424000000000015",
    "4548812049400004", "5425233430109903", "2222420000001113",
})


def _card_brand(d: str) -> str | None:
    """Issuer from the IIN prefix; None when the prefix belongs to no card network (not a card)."""
    n = len(d)
    if d[0] == "4" and n in (13, 16, 19):
        return "Visa"
    if n == 16 and (51 <= int(d[:2]) <= 55 or 2221 <= int(d[:4]) <= 2720):
        return "Mastercard"
    if n == 15 and d[:2] in ("34", "37"):
        return "American Express"
    if n in (16, 19) and (d.startswith("6011") or d.startswith("65") or 644 <= int(d[:3]) <= 649):
        return "Discover"
    if n in (16, 19) and 3528 <= int(d[:4]) <= 3589:
        return "JCB"
    if n in (14, 16) and (d[:2] in ("36", "38", "39") or 300 <= int(d[:3]) <= 305):
        return "Diners Club"
    if 16 <= n <= 19 and d.startswith("62"):
        return "UnionPay"
    if 12 <= n <= 19 and d[:2] in ("50", "56", "57", "58", "63", "67"):
        return "Maestro"
    return None


# A Luhn-valid number labelled as an order/tracking/reference number is that, unless cards are mentioned too.
_NOT_CARD = re.compile(
    r"\b(?:order|tracking|invoice|reference|ref|serial|imei|isbn|ticket|booking|commande|suivi|facture|"
    r"bestell\w*|sendungs\w*|rechnungs\w*|pedido|factura|seguimiento|referencia)\b", _I,
)
_CARD_CONTEXT = re.compile(
    r"\b(?:card|carte|karte|kreditkarte|tarjeta|visa|mastercard|amex|cvv|cvc|credit|debit|payment|paiement|"
    r"zahlung|pago|cb)\b", _I,
)


def find_cards(text: str) -> Iterator[Hit]:
    """Card numbers: issuer prefix + Luhn, minus published test cards and labelled order/ref numbers."""
    for m in [*scan.finditer(_CARD, text), *scan.finditer(_CARD_GROUPED, text)]:  # the same span twice: resolved later
        digits = re.sub(r"\D", "", m.group())
        if not 13 <= len(digits) <= 19 or digits in _TEST_CARDS:
            continue
        before = text[max(0, m.start() - 40):m.start()]
        if _NOT_CARD.search(before) and not near(_CARD_CONTEXT, text, m.start(), m.end()):
            continue
        brand = _card_brand(digits)
        if brand and _luhn.is_valid(digits):
            yield Hit("payment_card", m.start(), m.end(), "CARD",
                      f"{brand} card number ({len(digits)} digits, Luhn-valid)")


# ---------------------------------------------------------------- national ids

_SSN = gated(re.compile(r"(?<![\w.,+-])\d{3}([- ])\d{2}\1\d{4}(?![\w-])"))
_SSN_BARE = gated(re.compile(r"(?<![\w-])\d{9}(?![\w-])"))
_SSN_CONTEXT = re.compile(r"\b(?:ssn|social security|sécurité sociale|seguridad social|sozialversicherung)", _I)
_NIR = gated(re.compile(
    r"(?<![\w.,+-])[12] ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}(?![\w-])"
))
_DE_IDNR = gated(re.compile(r"(?<![\w.,+-])[1-9]\d ?\d{3} ?\d{3} ?\d{3}(?![\w-])"))
# German ID card serial: 9 characters as printed on the card, or 10 with the MRZ check digit.
# Only a serial with two digits or more counts (below), and a match is one whole token, so the gate may skip
# those with fewer without hiding another.
_DE_PA = gated(re.compile(r"(?<![\w-])[CFGHJKLMNPRTVWXYZ][CFGHJKLMNPRTVWXYZ0-9]{8}\d?(?![\w-])"), min_digits=2)
_DE_PA_CONTEXT = re.compile(
    r"\b(?:personalausweis|ausweis(?:nummer)?|id card|carte d'identité|documento de identidad)", _I
)
_ES_DNI = gated(re.compile(r"(?<![\w.,+-])\d{8}[- ]?[A-Za-z](?![\w-])"))
_ES_NIE = gated(re.compile(r"(?<![\w.,+-])[XYZxyz][- ]?\d{7}[- ]?[A-Za-z](?![\w-])"))
_UK_NINO = gated(re.compile(
    r"(?<![\w-])(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![\w-])"
))
_IT_CF = gated(re.compile(r"(?<![\w-])[A-Za-z]{6}\d{2}[A-Za-z]\d{2}[A-Za-z]\d{3}[A-Za-z](?![\w-])"))
# Famous example numbers printed in specimens and docs (Woolworth wallet card, etc.).
_EXAMPLE_IDS = frozenset({"078051120", "219099999", "123456789", "DE12345678"})


def _pa_valid(s: str) -> bool:
    """German ID card MRZ form: 9 characters + check digit, weights 7-3-1 (ICAO 9303)."""
    vals = [int(c) if c.isdigit() else ord(c) - 55 for c in s[:9]]
    return sum(v * (7, 3, 1)[i % 3] for i, v in enumerate(vals)) % 10 == int(s[9])


def find_national_ids(text: str) -> Iterator[Hit]:
    """SSN, NIR, Steuer-ID, Personalausweis, DNI/NIE, NINO, codice fiscale: each checked by its own rules."""
    for m in scan.finditer(_SSN, text):
        if _us_ssn.is_valid(m.group().replace(" ", "-")) and re.sub(r"\D", "", m.group()) not in _EXAMPLE_IDS:
            yield Hit("national_id", m.start(), m.end(), "SSN", "US social security number (valid area/group/serial)")
    for m in scan.finditer(_SSN_BARE, text):
        named = near(_SSN_CONTEXT, text, m.start(), m.end())
        if named and m.group() not in _EXAMPLE_IDS and _us_ssn.is_valid(m.group()):
            yield Hit("national_id", m.start(), m.end(), "SSN", "US social security number (unformatted, named as SSN)")
    for m in scan.finditer(_NIR, text):
        if _fr_nir.is_valid(m.group()):
            yield Hit("national_id", m.start(), m.end(), "NIR", "French social security number (NIR, key valid)")
    for m in scan.finditer(_DE_IDNR, text):
        if _de_idnr.is_valid(m.group()):
            yield Hit("national_id", m.start(), m.end(), "STEUER_ID", "German tax id (Steuer-IdNr, check digit valid)")
    for m in scan.finditer(_DE_PA, text):
        serial = m.group()
        if (sum(c.isdigit() for c in serial) >= 2 and serial[:9] not in ("T22000129", "L01X00T47")  # specimens
                and (len(serial) == 9 or _pa_valid(serial)) and near(_DE_PA_CONTEXT, text, m.start(), m.end())):
            yield Hit("national_id", m.start(), m.end(), "AUSWEIS", "German ID card number (check digit valid)")
    for m in scan.finditer(_ES_DNI, text):
        if _es_dni.is_valid(m.group().upper()) and m.group()[:8] != "12345678":
            yield Hit("national_id", m.start(), m.end(), "DNI", "Spanish DNI (check letter valid)")
    for m in scan.finditer(_ES_NIE, text):
        if _es_nie.is_valid(m.group().upper()):
            yield Hit("national_id", m.start(), m.end(), "NIE", "Spanish NIE (check letter valid)")
    for m in scan.finditer(_UK_NINO, text):
        if re.search(r"\d", m.group()) and m.group().replace(" ", "") not in ("QQ123456C", "AB123456C"):
            yield Hit("national_id", m.start(), m.end(), "NINO", "UK National Insurance number")
    for m in scan.finditer(_IT_CF, text):
        if _it_cf.is_valid(m.group().upper()):
            yield Hit("national_id", m.start(), m.end(), "CODICE_FISCALE",
                      "Italian codice fiscale (check letter valid)")


# ---------------------------------------------------------------- IBAN

# Characters may be kept apart by a space or two, a dash or a dot: bank portals print "DE44-5001-0517-…";
# the mod-97 checksum keeps what the looser shape lets in from counting.
_IBAN = gated(re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?:(?:[ \t]{1,2}|[-.])?[A-Z0-9]){11,32}", _I))
# IBANs printed in standards, bank docs and Wikipedia as the example: public, identify nobody.
_EXAMPLE_IBANS = frozenset({
    "DE89370400440532013000", "GB29NWBK60161331926819", "GB82WEST12345698765432", "FR1420041010050500013M02606",
    "FR7630006000011234567890189", "ES9121000418450200051332", "IT60X0542811101000000123456",
    "NL91ABNA0417164300", "BE68539007547034", "CH9300762011623852957", "AT611904300234573201",
})


def find_ibans(text: str) -> Iterator[Hit]:
    """IBANs whose country length and mod-97 (and national check, via stdnum) hold; doc examples excluded."""
    at = 0
    while m := scan.search(_IBAN, text, at):
        # The regex is greedy (it may swallow a following word like "BIC"): keep the longest valid prefix.
        pos = [m.start() + i for i, c in enumerate(m.group()) if c.isalnum()]
        chars = "".join(text[p] for p in pos).upper()
        at = m.start() + 1  # nothing valid from here: an IBAN may start inside what was swallowed
        for n in range(len(chars), 14, -1):
            if _iban.is_valid(chars[:n]):
                if chars[:n] not in _EXAMPLE_IBANS:
                    yield Hit("iban", m.start(), pos[n - 1] + 1, "IBAN", f"IBAN ({chars[:2]}, mod-97 checksum valid)")
                at = pos[n - 1] + 1
                break


# ---------------------------------------------------------------- secrets


def _vendor_patterns() -> list[tuple[re.Pattern[str], str]]:
    """Key formats from detect-secrets' plugins (kept up to date upstream), plus a few it lacks."""
    from detect_secrets.plugins import (
        aws,
        azure_storage_key,
        discord,
        github_token,
        gitlab_token,
        mailchimp,
        npm,
        openai,
        pypi_token,
        sendgrid,
        slack,
        square_oauth,
        stripe,
        telegram_token,
        twilio,
    )

    out: list[tuple[re.Pattern[str], str]] = [(aws.AWSKeyDetector.denylist[0], "AWS access key id")]
    for plugin in (azure_storage_key.AzureStorageKeyDetector, discord.DiscordBotTokenDetector,
                   github_token.GitHubTokenDetector, gitlab_token.GitLabTokenDetector, mailchimp.MailchimpDetector,
                   npm.NpmDetector, openai.OpenAIDetector, pypi_token.PypiTokenDetector, sendgrid.SendGridDetector,
                   slack.SlackDetector, square_oauth.SquareOAuthDetector, stripe.StripeDetector,
                   telegram_token.TelegramBotTokenDetector, twilio.TwilioKeyDetector):
        out.extend((rx, plugin.secret_type) for rx in plugin.denylist)
    extra = {
        r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}": "OpenAI API key",
        r"\bsk-ant-[A-Za-z0-9_-]{32,}": "Anthropic API key",
        r"\bAIza[0-9A-Za-z_-]{35}": "Google API key",
        r"\bhf_[A-Za-z0-9]{30,}": "Hugging Face token",
        r"\bgithub_pat_[A-Za-z0-9_]{40,}": "GitHub fine-grained token",
        r"\bxox[abposre]-[A-Za-z0-9-]{10,}": "Slack token",
        r"\b[rs]k_(?:live|test)_[0-9a-zA-Z]{24,}": "Stripe key",
        r"\bAKIA[0-9A-Z]{16}\b": "AWS access key id",
    }
    out.extend((re.compile(p), why) for p, why in extra.items())
    for rx, _ in out:
        gated(rx, **_VENDOR_GATES.get(rx.pattern, {}))  # type: ignore[arg-type]
    return out


def _npm_starts(ix: scan.Index) -> Iterator[int]:
    """The first "//" of each line holding "/:_authToken=": a match can start there if anywhere in the line
    (its `.+` takes any characters but a line break), and trying each "//" rescanned the line each time."""
    text = ix.text
    at = text.find("/:_authToken=")
    while at != -1:
        first = text.find("//", text.rfind("\n", 0, at) + 1, at)
        if first != -1:
            yield first
        at = text.find("/:_authToken=", at + 1)


def _discord_starts(ix: scan.Index) -> Iterator[int]:
    """24 to 26 characters before a "." that has another "." 7 characters on."""
    for m in _DOTTED.finditer(ix.text):
        yield from (m.start() - 24, m.start() - 25, m.start() - 26)


def _telegram_starts(ix: scan.Index) -> Iterator[int]:
    """8 to 10 characters before a ":" that follows a digit."""
    text = ix.text
    for m in _COLON_KEY.finditer(text):
        if m.start() and text[m.start() - 1].isdecimal():
            yield from (m.start() - 8, m.start() - 9, m.start() - 10)


_DOTTED = re.compile(r"\.(?=[\w-]{6}\.)")
_COLON_KEY = re.compile(r":(?=[0-9A-Za-z_-]{35})")
# Where the detect-secrets patterns that start with no fixed string can start, for these exact patterns (a
# changed pattern upstream is scanned in full, which is slower, never wrong).
_VENDOR_GATES: dict[str, dict[str, object]] = {
    r"[MNO][a-zA-Z\d_-]{23,25}\.[a-zA-Z\d_-]{6}\.[a-zA-Z\d_-]{27}": {"anchors_only": True, "extra": _discord_starts},
    r"[0-9a-z]{32}-us[0-9]{1,2}": {"anchors_only": True, "finds": [("-us", False, [-32])]},
    r"\/\/.+\/:_authToken=\s*((npm_.+)|([A-Fa-f0-9-]{36})).*": {"anchors_only": True, "extra": _npm_starts},
    r"\d{8,10}:[0-9A-Za-z_-]{35}": {"anchors_only": True, "extra": _telegram_starts},
}


_VENDOR: list[tuple[re.Pattern[str], str]] | None = None
_JWT = gated(re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"))
_PEM = gated(re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END [A-Z0-9 ]*-----)?", re.S))


def _conn_starts(ix: scan.Index) -> Iterator[int]:
    """A URL's scheme, 2 to 21 characters before its "://"."""
    text = ix.text
    at = text.find("://")
    while at != -1:
        yield from range(max(0, at - 21), at - 1)
        at = text.find("://", at + 1)


_CONN = gated(re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://([^\s:/@'\"]+):([^\s@'\"]+)@[\w.-]+"),
              anchors_only=True, extra=_conn_starts)
_PLACEHOLDER = re.compile(
    r"^(?:pass(?:word|wd)?|pwd|secret|changeme|xxx+|\*+|\.+|<[^>]*>|\{[^}]*\}|\$\{?[\w:-]+\}?|%[\w()]+s?|your[_-]?\w*|"
    r"mot_?de_?passe|passwort|contrase[ñn]a|\[[^\]]*\]|example|test|dummy|foo|bar)$",
    _I,
)
_PW_KEY = (
    r"(?:password|passwd|passcode|passphrase|pwd|pw(?=\s*[:=])|pin(?: code)?|mot de passe|mdp|code pin|passwort|"
    r"kennwort|zugangscode|contraseña|contrasena|"
    # Spanish "clave" is also "key": only "mi clave", "clave de acceso", "clave del wifi" ...
    r"(?:(?<=\bmi )|(?<=\btu )|(?<=\bsu ))clave|clave(?= (?:de acceso|secreta|del? (?:wifi|wi-fi|correo|banco|router|"
    r"email|red|m[oó]vil|tarjeta))))"
)
_PW_KEYS = gated(re.compile(r"(?<![^\W_])" + _PW_KEY, _I))  # where a key can start


def _words_before_key(text: str, at: int, tokens: int = 3) -> list[int]:
    """Where "my"/"the" can start before a password key at `at`: the last word of each of the `tokens`
    whitespace-separated [\\w-]+ tokens before it (`_PW` allows two words between "my" and the key)."""
    out: list[int] = []
    i = at
    for _ in range(tokens):
        j = i
        while j > 0 and text[j - 1].isspace():
            j -= 1
        end = j
        while j > 0 and (text[j - 1].isalnum() or text[j - 1] in "_-"):
            j -= 1
        if j == end or end == i:
            break
        w = end
        while w > j and (text[w - 1].isalnum() or text[w - 1] == "_"):
            w -= 1
        out.append(w)
        i = j
    return out


def _pw_starts(ix: scan.Index) -> list[int]:
    """Each password key, and the words before it that may say whose password it is."""
    keys = scan.anchor_positions(ix, _PW_KEYS)
    return keys + [w for at in keys for w in _words_before_key(ix.text, at)]


_PW = gated(re.compile(
    # "my (gmail) password", "the wifi password": a particular one, so even a plain word after it counts.
    # ("Your password is inactive" is a system message talking to the user: no such credit.)
    r"(?:(?:(?P<own>\b(?:my|our|mon|ma|notre|mein\w*|unser\w*|mi|nuestr[oa])\b)|"
    r"(?P<det>\b(?:the|le|la|das|der|el)\b))(?:\s+[\w-]+){0,2}?\s+)?"
    # DB_PASSWORD=, WLAN-Passwort: the key may be glued to a prefix by _ or -, not to letters.
    r"(?<![^\W_])" + _PW_KEY + r"(?![^\W\d_])(?:"
    # "password (for my bank) is X" / "mot de passe est X" / "Passwort lautet X"
    r"(?:\s+(?:for|of|to|on|at|pour|de|du|des|für|von|vom|zu|zum|zur|bei|para|del|en)(?:\s+[\w.@'-]+){1,3}?)?"
    r"\s+(?P<verb>is|was|est|était|ist|lautet|war|es|era)\b\s*:?"
    # "password of the home wifi: X" / "Passwort=X" / 'PASSWORD': 'X'
    r"|(?:\s+[^\W\d][\w'.@-]*){0,5}?[\"']?\s*(?:[:=]|->)"
    # an unquoted value may hold a quote after its first character (Ab"cd1234!)
    r")\s*(?P<q>[\"'`«„“])?\s*(?P<v>(?(q)[^\s\"'`»“”]{3,64}|[^\s\"'`»“”][^\s»“”]{2,63}))",
    _I,
), anchors_only=True, extra=_pw_starts)
# Words that follow "password is ..." in questions and advice, never a password.
_PW_STOP = words("""
locked blocked disabled enabled active inactive gesperrt bloqué bloqueado activo inactivo aktiv inaktiv
too not a an the very weak strong correct incorrect wrong invalid expired required needed missing
empty long short safe secure insecure stored hashed encrypted being still always never
case-sensitive reset changed forgotten lost what how where which when why who enough better best
good bad ok okay same different used shown visible hidden trop pas un une le la très faible fort
forte correct incorrect invalide expiré requis obligatoire vide court long sûr stocké chiffré haché
toujours jamais oublié perdu changé quoi comment quel quelle zu nicht ein eine der die das sehr
schwach stark richtig falsch ungültig abgelaufen erforderlich leer kurz lang sicher gespeichert
verschlüsselt gehasht immer nie vergessen geändert was wie welches demasiado no un una el la muy
débil fuerte correcta incorrecta inválida caducada requerida vacía corta larga segura guardada
cifrada siempre nunca olvidada cambiada qué cómo cuál
""")
# "user admin / pass Blue!3830", "identifiant admin, mot de passe Falke114", "Benutzer m.keller - Passwort X":
# a login and its password handed over together, with no "is" or ":" between key and value.
# `curl -u admin:S3cr3t`, `--user admin:S3cr3t`, `wget --password=…`: a password on a command line.
_CLI_CRED = gated(re.compile(
    r"(?:(?<!\S)(?:-u|--user)\s*[\"']?[^\s:\"']{1,64}:|--(?:http-)?password[= ])[\"']?(?P<v>[^\s\"']{3,64})"
), anchors_only=True, finds=[("-u", False, [0, -1]), ("--password", False, [0]), ("--http-password", False, [0])])
_CRED_PAIR = gated(re.compile(
    r"\b(?:user(?:name)?|login|identifiant|utilisateur|benutzer(?:name)?|usuario|nom d'utilisateur)\s*[:=]?\s*"
    r"[^\s,;/|]{2,40}\s*(?:[,;/|-]|\b(?:and|et|und|y)\b)?\s*"
    # German compounds: Startpasswort, Initialkennwort
    r"(?:pass(?:word)?|pwd|mot de passe|mdp|\w*passwort|\w*kennwort|contraseña|contrasena|clave|pin)\b\s*[:=]?\s*"
    r"(?P<v>[^\s\"'`]{3,64})",
    _I,
))
# define('DB_PASS', 'x'), ("SMTP_PASSWORD", "x"), "api_token": "x": a quoted secret-named key, then its value.
_QUOTED_KEY = r"(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key)"
_QUOTED_KEYS = gated(re.compile(r"(?<![^\W_])" + _QUOTED_KEY, _I))


def _quoted_starts(ix: scan.Index) -> Iterator[int]:
    """The quote before each secret-named key: right before it, or before the `\\w*[_-]` prefix it has."""
    text = ix.text
    for at in scan.anchor_positions(ix, _QUOTED_KEYS):
        if at and text[at - 1] in "\"'":
            yield at - 1
        elif at and text[at - 1] in "_-":
            i = at - 1
            while i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_"):
                i -= 1
            if i:
                yield i - 1


_QUOTED_PAIR = gated(re.compile(
    r"[\"'](?:\w*[_-])?" + _QUOTED_KEY + r"(?:[_-]\w*)?[\"']\s*[,:=]>?\s*"
    r"[\"'](?P<v>[^\"'\s]{3,64})[\"']",
    _I,
), anchors_only=True, extra=_quoted_starts)
_SECRET_KEY = gated(re.compile(
    r"\b(?:api[_ -]?key|secret(?:[_ -]?key)?|access[_ -]?token|auth[_ -]?token|bearer|token|clé api|clé secrète|"
    r"api-schlüssel|clave api|clave secreta)\s*(?:is|est|ist|es|[:=])\s*[\"'`]?(?P<v>[A-Za-z0-9_\-./+=]{20,})",
    _I,
))


# `password = os.environ["PW"]`, `password: Optional[str]`, `pwd = self.pwd`: code reading a password, not one.
_CODE_EXPR = re.compile(
    r"^(?:[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*[(\[]|(?:self|this|os|args|config|settings|request|env|process|cfg|opts?)\."
    r"|(?:str|string|bytes|none|null|true|false|undefined|optional|varchar|text|secretstr)\b)",
    _I,
)


# A plain word after "password is" is usually prose ("Your password is inactive."); a value with a digit,
# a symbol or inner capitals, a quoted one, one standing alone at the end of a line, or one after "my
# password" is taken as a password.
_STRONG = re.compile(r"\d|[^\w\s]|(?<=[a-z])[A-Z]")
_ALONE = re.compile(r"[.!]?\s*(?:$|\n)|[,;]")


def _documented(v: str) -> bool:
    """Values printed in vendors' docs as the example (AWS's `wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY`)."""
    return "EXAMPLE" in v.upper()


def _looks_like_password(v: str) -> bool:
    """Not a stop word, a placeholder or a code expression: something that could be typed as a password."""
    if v.endswith(":") or _documented(v):  # "Password: Username:" is a form label, the value is missing
        return False
    v = v.rstrip(".,;!?)")
    return not (len(v) < 4 or v[0] in "<{[$%*(" or v.lower() in _PW_STOP or _PLACEHOLDER.match(v)
                or _CODE_EXPR.match(v))


def _jwt_ok(token: str) -> bool:
    """A JWT whose header decodes to JSON with an `alg`: cheap proof it is a real token, not prose."""
    head = token.split(".")[0]
    try:
        return "alg" in json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, UnicodeDecodeError):
        return False


def find_secrets(text: str) -> Iterator[Hit]:
    """Vendor keys, JWTs, PEM keys, credentials in URLs, and passwords/tokens given in context."""
    global _VENDOR
    if _VENDOR is None:
        _VENDOR = _vendor_patterns()
    for rx, why in _VENDOR:
        for m in scan.finditer(rx, text):
            if len(m.group()) >= 16 and not _documented(m.group()):  # AWS docs' AKIAIOSFODNN7EXAMPLE
                yield Hit("secret", m.start(), m.end(), "SECRET", f"{why} (vendor key format)")
    for m in scan.finditer(_JWT, text):
        if _jwt_ok(m.group()):
            yield Hit("secret", m.start(), m.end(), "SECRET", "JSON Web Token (header decodes)")
    for m in scan.finditer(_PEM, text):
        yield Hit("secret", m.start(), m.end(), "SECRET", "PEM private key block")
    for m in scan.finditer(_CONN, text):
        if not _PLACEHOLDER.match(m.group(2)) and not _documented(m.group(2)):
            yield Hit("secret", m.start(2), m.end(2), "PASSWORD", "credentials embedded in a connection string")
    for m in scan.finditer(_PW, text):
        v = m.group("v") if m.group("q") else m.group("v").rstrip(".,;!?)")  # quoted: the quotes delimit it
        if not m.group("q") and sum(v.count(c) for c in "\"'`") == 1 and v[-1] in "\"'`":
            v = v[:-1]  # a closing quote after the value, not part of it
        end = m.start("v") + len(v)
        line = text.rfind("\n", 0, m.start()) + 1  # the line up to the key, read in place (not copied)
        if _looks_like_password(v) and not scan.search(FICTION, text, line, m.start()) and (
                m.group("own") or m.group("q") or _STRONG.search(v)
                or ((m.group("det") or not m.group("verb")) and _ALONE.match(text, end))):
            yield Hit("secret", m.start("v"), end, "PASSWORD", "password given in context")
    for m in scan.finditer(_CLI_CRED, text):
        v = m.group("v")
        if _looks_like_password(v) and not _documented(v):
            yield Hit("secret", m.start("v"), m.end("v"), "PASSWORD", "password given on a command line")
    fiction: bool | None = None  # fiction anywhere in the text: read once, not once per login
    for m in scan.finditer(_CRED_PAIR, text):
        v = m.group("v").rstrip(".,;!?)")
        if _looks_like_password(v) and _STRONG.search(v):
            if fiction is None:
                fiction = scan.search(FICTION, text) is not None
            if fiction:
                continue
            yield Hit("secret", m.start("v"), m.start("v") + len(v), "PASSWORD", "login and password given together")
    for m in scan.finditer(_QUOTED_PAIR, text):
        v = m.group("v")
        if _looks_like_password(v) and _STRONG.search(v):
            yield Hit("secret", m.start("v"), m.end("v"), "PASSWORD", "secret value under a secret-named key")
    for m in scan.finditer(_SECRET_KEY, text):
        v = m.group("v")
        if re.search(r"\d", v) and re.search(r"[A-Za-z]", v) and not _PLACEHOLDER.match(v) and not _documented(v):
            yield Hit("secret", m.start("v"), m.end("v"), "SECRET", "API key or token given in context")


# ---------------------------------------------------------------- contact details

# Emails are found from their "@" outwards: a plain regex scan is quadratic on long runs like "a.a.a.a...".
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9._%+-]{1,64}$")
_EMAIL_DOMAIN = re.compile(r"(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}\b")


def _emails(text: str) -> Iterator[tuple[int, int]]:
    """Email spans, grown outwards from each "@" (bounded work per "@", so linear in the text)."""
    for at in re.finditer("@", text):
        local = _EMAIL_LOCAL.search(text, max(0, at.start() - 64), at.start())
        domain = _EMAIL_DOMAIN.match(text, at.end())
        if local and domain:
            start = local.start()
            while start < at.start() and not text[start].isalnum():  # "\b": the address starts at a letter/digit
                start += 1
            if start < at.start():
                yield start, domain.end()
_EXAMPLE_DOMAINS = re.compile(
    r"@(?:[\w-]+\.)*(?:example\.(?:com|org|net)|example|test|invalid|localhost|domain\.(?:com|tld)|email\.com|"
    r"company\.com|yourcompany\.com|acme\.(?:com|corp)|foo\.(?:com|bar)|mail\.com|yourdomain\.com|exemple\.(?:com|fr)|"
    r"beispiel\.(?:de|com)|ejemplo\.(?:com|es))$",
    _I,
)
_ROLE_LOCAL = words("""
support info contact sales noreply no-reply donotreply help admin webmaster press hello team service
billing abuse postmaster privacy security jobs careers marketing office user name username someone
you yourname your.name firstname.lastname prenom.nom vorname.nachname nombre.apellido jdoe john.doe
jane.doe test
""")
# Mailing lists, bug trackers, teams, system accounts: addresses of no one in particular.
_ROLE_PART = re.compile(
    r"^(?:[^@]*(?:bug|team|list|master|devel|announce|translat|notif|alert|report|feedback|newsletter)[^@]*|"
    r"[a-z]{1,2})@|@lists\.", _I,
)
_PHONE_INTL = gated(re.compile(r"(?<![\w+])\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,5}(?!\w|[.,]\d)"),
                    anchors_only=True, finds=[("+0", True, [0])])  # "+" and a digit ("0" in the fold)
_PHONE_NAT = gated(re.compile(
    r"(?<![\w.+-])(?:\(\d{3}\) ?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4}|0[1-9](?:[ .]\d{2}){4}|"
    r"0\d{2,4}[ /-]\d{3,8}(?:[ -]\d{2,4})?|[6789]\d{2} \d{2,3} \d{2,3}(?: \d{2,3})?)(?!\w|[.-]\d)"
), partial=True, finds=[("(0", True, [0])])  # "(555) ...": "(" and a digit
_PHONE_CONTEXT = re.compile(
    r"\b(?:phone|tel|telephone|mobile|cell|call|text me|whatsapp|number|téléphone|portable|appeler|numéro|"
    r"telefon|handy|anrufen|rufnummer|nummer|teléfono|móvil|celular|llamar|número)", _I,
)
# German street names: a capitalised word ending in one of these, or followed by one of those (case as written).
_DE_STREET_END = ("straße", "strasse", "str.", "weg", "platz", "allee", "gasse", "ring", "damm", "ufer")
_DE_STREET_WORD = ("Straße", "Strasse", "Weg", "Platz", "Allee")
_DE_LOWER = frozenset("abcdefghijklmnopqrstuvwxyzäöüß")


def _street_starts(ix: scan.Index) -> Iterator[int]:
    """The capital letter a German street name starts with, read back from the ending or word found."""
    text = ix.text
    for found, letters in [*((end, _DE_LOWER | {"-"}) for end in _DE_STREET_END),
                           *((" " + word, _DE_LOWER) for word in _DE_STREET_WORD)]:
        at = text.find(found)
        while at != -1:
            i = at
            while i > 0 and text[i - 1] in letters:
                i -= 1
            if i:
                yield i - 1
            at = text.find(found, at + 1)


_ADDRESS = gated(re.compile(
    r"\b\d{1,5}[A-Za-z]?,? (?:[A-Z][\w'.-]+ ){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|"
    r"Court|Way|Place|Terrace|Close|Crescent|Square|Parkway)\b|\b\d{1,5}[A-Za-z]?,? (?:[A-Z][\w'.-]+ ){1,3}"
    r"(?:St|Ave|Rd|Blvd|Ln|Dr|Ct|Pl)\b\.?"
    r"|\b\d{1,4}(?: ?(?:bis|ter))?,? (?i:rue|avenue|av\.|boulevard|bd|place|impasse|allée|chemin|quai|cours|route) "
    r"(?:de la |de l'|du |des |de |d')?[A-ZÉÈ][\w'-]+(?: [\w'-]+){0,3}"
    r"|\b[A-ZÄÖÜ][a-zäöüß-]+(?:" + "|".join(map(re.escape, _DE_STREET_END)) + r")(?: \d{1,4}[a-z]?)"
    r"|\b(?:[A-ZÄÖÜ][a-zäöüß]+ )(?:" + "|".join(_DE_STREET_WORD) + r") \d{1,4}[a-z]?"
    r"|(?i:\bcalle|\bc/|\bavenida|\bavda\.?|\bplaza|\bpaseo|\bcamino|\bcarrer|\bronda) (?:de (?:la |los |las )?|del )?"
    r"[A-ZÁÉÍÓÚ][\wáéíóúñ]+(?: [\wáéíóúñ]+){0,2},? (?:n[º°o]\.? ?)?\d{1,4}"
    # lower-case lines on an envelope list, made specific by the postcode that ends them ("12 mill lane bampton
    # OX18 2HQ", "88 cowley road, oxford OX4 1JB")
    r"|(?i:\b\d{1,5}[a-z]?,? (?:[a-z][\w'.-]* ){1,3}(?:street|st|road|rd|lane|avenue|ave|drive|close|crescent|"
    r"way|court|place|terrace|view|gardens|grove|hill|row|mews)\b,?(?: [a-z][\w'.-]*){0,3},? "
    r"(?:[a-z]{1,2}\d[a-z\d]? \d[a-z]{2}|\d{5}(?:-\d{4})?)\b)",
), partial=True, extra=_street_starts)  # the German names start with any capital letter: found from their ends
_PERSON_CUE = gated(re.compile(
    r"\b(?:I|I'm|my|he|she|his|they|their|live|lives|lived|living|home|moved|reside|ship|deliver|send|"
    r"mail|je|j'|mon|ma|mes|il|elle|habite|habitons|domicile|chez|livrer|envoyer|ich|mein|meine|meiner|er|sie|"
    r"wohne|wohnt|wohnen|Anschrift|Wohnort|liefern|schicken|yo|mi|mis|su|vivo|vive|vivimos|domicilio|enviar|"
    r"entregar|envoie|envoyez|envía|envíe|manda|schick\w*|"
    # relatives: "aunt rosalind, 12 mill lane"
    r"aunt|uncle|grand(?:ad|pa|ma|mother|father|parents)|cousin|niece|nephew|tante|oncle|mamie|papi|"
    r"onkel|oma|opa|t[ií][ao]|abuel[oa]s?|prim[oa])\b", _I,
))
_FULL_NAME = re.compile(r"\b[A-ZÀ-Ý][a-zà-ÿ]+ [A-ZÀ-Ý][a-zà-ÿ]+\b")


def _person_near(text: str, start: int, end: int, window: int = 80) -> bool:
    """A person cue (I, my, lives, ship to ...) or a full name near the span, outside the span itself."""
    if near(_PERSON_CUE, text, start, end, window):
        return True
    before, after = text[max(0, start - window):start], text[end:end + window]
    return bool(_FULL_NAME.search(before) or _FULL_NAME.search(after))


def find_contacts(text: str) -> Iterator[Hit]:
    """A person's email, phone number, or street address (addresses only next to a person)."""
    for start, end in _emails(text):
        email = text[start:end]
        if _EXAMPLE_DOMAINS.search(email) or email.split("@")[0].lower() in _ROLE_LOCAL or _ROLE_PART.search(email):
            continue
        yield Hit("contact", start, end, "EMAIL", "email address of a person")
    seen: set[tuple[int, int]] = set()
    for m in scan.finditer(_PHONE_INTL, text):
        digits = re.sub(r"\D", "", m.group())
        if 8 <= len(digits) <= 15 and "555" not in digits[1:7]:
            seen.add((m.start(), m.end()))
            yield Hit("contact", m.start(), m.end(), "PHONE", "phone number (international format)")
    for m in scan.finditer(_PHONE_NAT, text):
        digits = re.sub(r"\D", "", m.group())
        if (m.start(), m.end()) in seen or len(digits) < 9 or re.match(r"\(?555|\d{3}\D?555", m.group()):
            continue
        spaced = bool(re.match(r"0[1-9](?:[ .]\d{2}){4}$|\(\d{3}\)", m.group()))
        if spaced or near(_PHONE_CONTEXT, text, m.start(), m.end(), 40):
            yield Hit("contact", m.start(), m.end(), "PHONE", "phone number")
    for m in scan.finditer(_ADDRESS, text):
        line = text.rfind("\n", 0, m.start()) + 1  # from the line's start to the end of the text, read in place
        if _person_near(text, m.start(), m.end()) and not (
                _GENERIC_AT.match(text, line) and not _first_person_from(text, line)):
            yield Hit("contact", m.start(), m.end(), "ADDRESS", "street address next to a person")
