"""A person's contact details: email addresses, phone numbers, and street addresses (EN/FR/DE/ES).

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
                GENERIC_AT.match(text, line) and not first_person_from(text, line)):
            yield Hit("contact", m.start(), m.end(), "ADDRESS", "street address next to a person")
