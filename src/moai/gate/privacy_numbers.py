"""Numbers that identify a person or their money: payment cards, national ids, IBANs.

Each shape is validated by its own rules, with checksums from python-stdnum (Luhn, IBAN mod-97, SSN, NIR, IdNr,
DNI, NIE, codice fiscale) and issuer prefixes for cards. Numbers published as examples (card networks' test
cards, documentation IBANs, specimen ids) identify nobody and are not reported, nor are Luhn-valid numbers
labelled as an order, tracking or reference number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

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
from moai.gate.privacy_text import Hit, near

_I = re.IGNORECASE


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
DE_PA = gated(re.compile(r"(?<![\w-])[CFGHJKLMNPRTVWXYZ][CFGHJKLMNPRTVWXYZ0-9]{8}\d?(?![\w-])"), min_digits=2)
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
    for m in scan.finditer(DE_PA, text):
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
