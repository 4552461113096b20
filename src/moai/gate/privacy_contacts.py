"""A person's contact details: email addresses (also spelled out: "jane dot roe at fastmail dot com"), phone
numbers, and street addresses (EN/FR/DE/ES).

Example-domain and role addresses (support@, noreply@, mailing lists), fictional 555 phone numbers, and
addresses with no person near them or in a general question are nobody's, and are not reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from moai.gate import privacy_scan as scan
from moai.gate.privacy_scan import gated
from moai.gate.privacy_text import GENERIC_AT, Hit, first_person_from, near, words

_I = re.IGNORECASE


# Emails are found from their "@" outwards: a plain regex scan is quadratic on long runs like "a.a.a.a...".
# Letters of any script, as mailboxes and domains may hold them (josé.garcía@correo.es, müller@web.de, почта.рф).
_EMAIL_LOCAL = re.compile(r"[\w.%+-]{1,64}$")
_EMAIL_DOMAIN = re.compile(r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.){1,8}[^\W\d_]{2,24}\b")


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


# An address spelled out, as people write it to keep it from scrapers: "marguerite dot lefebvre at orange-pro dot
# fr", "jane.roe [at] fastmail [dot] com", "jane (at) fastmail (dot) org". The spellings are those the redactor
# finds in an answer (moai.strategies.redaction `_AT`, `_DOT`), and the domain must end in a dot and a top-level
# domain. A bare "at" is also a preposition ("look at google dot com"): it counts only with a dot, "_" or digit
# in the name before it, a mail provider's domain, or an email word just before.
_SP_AT = re.compile(r"@|[\[(<{][ \t]*(?:at|@)[ \t]*[\])>}]|[ \t](?:at|chez|bei|arroba|arobase)[ \t]", _I)
_SP_AT_CLOSED = re.compile(r"at[ \t]*[\])>}]")  # in the lower-cased text: "at" before a closing bracket
_SP_AT_WORDS = (" at ", " chez ", " bei ", " arroba ", " arobase ")
_SP_DOT_WORD = (r"[ \t]*[\[(<{][ \t]*(?:dot|\.|point|punkt|punto)[ \t]*[\])>}][ \t]*|"
                r"[ \t]+(?:dot|point|punkt|punto)[ \t]+")
_SP_DOT = r"(?:\.(?=\w)|" + _SP_DOT_WORD + r")"
_SP_DOT_WORDS = re.compile(_SP_DOT_WORD, _I)
_SP_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?" + _SP_DOT + r"){1,4}(?P<tld>[A-Za-z]{2,6})\b", _I,
)
_SP_LOCAL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][\w%+-]{0,63}(?:" + _SP_DOT + r"[A-Za-z0-9][\w%+-]{0,63}){0,3}$", _I)
_SP_TLDS = words("com org net edu gov info biz name pro io ai app dev me co email online site tech xyz mobi eus cat")
_SP_PROVIDERS = words("""
gmail googlemail yahoo ymail hotmail outlook live msn icloud aol proton protonmail pm gmx web freenet t-online
posteo mailbox fastmail zoho yandex tutanota tuta hey orange wanadoo free sfr laposte bbox numericable libero
telefonica movistar terra
""")
_SP_PLAIN_NAME = re.compile(r"[A-Za-z]+(?:[._-][A-Za-z]+)+\d{0,4}")  # jane.roe, j_roe2: a mailbox's name
_SP_NOT_A_NAME = words("me us him her them it you this that here there look moi nous lui eux mich uns ihn mí nos")
_SP_EMAIL_WORD = re.compile(
    r"\b(?:e-?mail|mail|courriel|correo|adresse|address|dirección|direccion|write|écri\w*|schreib\w*|escr[ií]b\w*|"
    r"contact\w*|kontakt\w*|reach|send|envo\w*|manda\w*)\b", _I,
)


def _widened(text: str, start: int, end: int) -> tuple[int, int]:
    """An "at" or "@" with the brackets around it, when it has them on both sides ("[at]", "( @ )")."""
    i, j = start, end
    while i > 0 and text[i - 1] in " \t":
        i -= 1
    while j < len(text) and text[j] in " \t":
        j += 1
    if i > 0 and text[i - 1] in "[(<{" and j < len(text) and text[j] in "])>}":
        return i - 1, j + 1
    return start, end


def _at_marks(text: str) -> list[tuple[int, int]]:
    """Where an "@" or a spelled-out "at" is, in text order. Looked for with `str.find` and a pattern starting
    with a literal in the lower-cased text: a case-blind regex tried at every space or bracket took longer than
    all the other contact rules together."""
    low = text.lower()
    if len(low) != len(text):  # a letter that lower-cases to two characters: offsets would shift
        return [at.span() for at in _SP_AT.finditer(text)]
    marks = []
    at = text.find("@")
    while at != -1:
        marks.append(_widened(text, at, at + 1))
        at = text.find("@", at + 1)
    for m in _SP_AT_CLOSED.finditer(low):
        span = _widened(text, m.start(), m.start() + 2)
        if span[0] < m.start():
            marks.append(span)
    for word in _SP_AT_WORDS:
        at = low.find(word)
        while at != -1:
            marks.append((at, at + len(word)))
            at = low.find(word, at + len(word) - 1)
    return sorted(marks)


def _spelled_emails(text: str, evidence: bool = True) -> Iterator[tuple[int, int, str]]:
    """Spans of spelled-out addresses, with the address they stand for (read from each "at", bounded work).
    Without `evidence`, a bare "at" counts as it stands (for a value already found in its own text)."""
    for at_start, at_end in _at_marks(text):
        tok = text[at_start:at_end].strip(" \t").lower()
        i = at_end
        while i < len(text) and text[i] in " \t":
            i += 1
        dom = _SP_DOMAIN.match(text, i)
        if dom is None:
            continue
        tld = dom.group("tld").lower()
        if not (len(tld) == 2 or tld in _SP_TLDS):
            continue
        j = at_start
        while j > 0 and text[j - 1] in " \t":
            j -= 1
        loc = _SP_LOCAL.search(text, max(0, j - 160), j)
        if loc is None:
            continue
        local, domain = loc.group(), dom.group()
        if tok == "@" and not _SP_DOT_WORDS.search(local) and not _SP_DOT_WORDS.search(domain):
            continue  # written as an address: `_emails` reads it
        local = _SP_DOT_WORDS.sub(".", local)
        domain = _SP_DOT_WORDS.sub(".", domain)
        if evidence and tok in ("at", "chez", "bei"):
            name = domain.rsplit(".", 1)[0].rsplit(".", 1)[-1].lower()
            if local.lower() in _SP_NOT_A_NAME:
                continue
            if not (_SP_DOT_WORDS.search(loc.group()) or _SP_DOT_WORDS.search(dom.group())):
                # nothing spelled out but the "at": a person or a version "at" a web address ("Contact Sarah at
                # Google.com", "section 3.2 at docs.python.org") unless a name like jane.roe is at a mail provider
                if not (_SP_PLAIN_NAME.fullmatch(local) and name in _SP_PROVIDERS):
                    continue
            # (an email word before a French "chez" or a German "bei" is not enough: "envoie le colis chez Paul
            # point de retrait")
            elif not (re.search(r"[._\d]", local) or name in _SP_PROVIDERS
                      or (tok == "at" and _SP_EMAIL_WORD.search(text, max(0, loc.start() - 40), loc.start()))):
                continue
        yield loc.start(), dom.end(), f"{local}@{domain}"


def email_address(value: str) -> str:
    """The address a spelled-out email stands for ("jane.roe [at] fastmail [dot] com": "jane.roe@fastmail.com"),
    so that its mentions and the address as written can share one placeholder; any other value unchanged."""
    if "@" not in value or _SP_DOT_WORDS.search(value):
        for start, end, email in _spelled_emails(value, evidence=False):
            if start == 0 and end == len(value):
                return email
    return value


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
    # Spanish: mobiles and landlines 612 34 56 78, 954 123 456, landlines of a 2-digit area 91 123 45 67
    r"0\d{2,4}[ /-]\d{3,8}(?:[ -]\d{2,4})?|[6789]\d{2} \d{2,3} \d{2,3}(?: \d{2,3})?|[89]\d \d{3} \d{2} \d{2})"
    r"(?!\w|[.-]\d)"
), partial=True, finds=[("(0", True, [0])])  # "(555) ...": "(" and a digit
_PHONE_CONTEXT = re.compile(
    r"\b(?:phone|tel|telephone|mobile|cell|call|ring me|reach me|text me|whatsapp|sms|number|"
    r"téléphone|tél|portable|appel\w*|rappel\w*|joindre|joignable|numéro|"
    # "Ruf mich an", "rufen Sie uns an", "Rückruf"
    r"telefon|handy|mobil|festnetz|anruf\w*|ruf(?:e|en|t)?\b|rückruf|zurückruf\w*|erreichbar|rufnummer|nummer|"
    r"teléfono|tel[eé]f|tlf|tfno|móvil|movil|celular|llam\w*|llám\w*|número)", _I,
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
    for start, end, email in _spelled_emails(text):
        if _EXAMPLE_DOMAINS.search(email) or email.split("@")[0].lower() in _ROLE_LOCAL or _ROLE_PART.search(email):
            continue
        yield Hit("contact", start, end, "EMAIL", "email address of a person, spelled out")
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
                GENERIC_AT.match(text, line) and not first_person_from(text, line)):
            yield Hit("contact", m.start(), m.end(), "ADDRESS", "street address next to a person")
