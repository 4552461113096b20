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

The recognizers live by kind: `privacy_numbers` (cards, national ids, IBAN), `privacy_secrets`, and
`privacy_contacts`; the helpers (`Hit`, sentences, templates, fiction, first person) in `privacy_text`.
"""

from __future__ import annotations

# The recognizers in the order of their kinds, which is also the order their patterns are registered for gated
# scans in (`privacy_scan._GATES`).
# isort: off
from moai.gate.privacy_text import (
    FICTION,
    FIRST_PERSON,
    GENERIC_AT,
    GENERIC_QUESTION,
    KINDS,
    Hit,
    is_template,
    near,
    sentence_around,
    sentences,
    translated_quotes,
    words,
)
from moai.gate.privacy_numbers import find_cards, find_ibans, find_national_ids
from moai.gate.privacy_secrets import find_secrets
from moai.gate.privacy_contacts import email_address, find_contacts
# isort: on

__all__ = ["FICTION", "FIRST_PERSON", "GENERIC_AT", "GENERIC_QUESTION", "KINDS", "Hit", "email_address", "find_cards",
           "find_contacts", "find_ibans", "find_national_ids", "find_secrets", "is_template", "near", "sentence_around",
           "sentences", "translated_quotes", "words"]
