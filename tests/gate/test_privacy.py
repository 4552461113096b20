"""Sensitive-data detection: each kind is found (in each language), its look-alikes are not, spans point at
the value, and redaction round-trips, including a streamed answer cut at awkward places."""

from __future__ import annotations

import pytest
from stdnum import iban, luhn

from moai.gate.privacy import KINDS, PrivacyReport, Restorer, detect, detect_text, redact, restore


def _card(prefix: str = "453914880343", length: int = 16) -> str:
    body = (prefix + "0" * length)[: length - 1]
    return body + luhn.calc_check_digit(body)


def _iban(cc: str, bban: str) -> str:
    return cc + iban.calc_check_digits(cc + "00" + bban) + bban


CARD = _card()
IBAN_DE = _iban("DE", "500105175407324931")


def _valid_es_iban() -> str:
    for n in range(100):
        cand = _iban("ES", f"2100041845020005{n:02d}32")
        if iban.is_valid(cand):
            return cand
    raise AssertionError("no valid ES IBAN found")


def found(text: str) -> dict[str, list[str]]:
    """kind -> the exact substrings detected, so tests assert on spans, not only on labels."""
    rep = detect(text)
    out: dict[str, list[str]] = {}
    for d in rep.detections:
        out.setdefault(d.kind, []).append(text[d.start:d.end])
    return out


# ------------------------------------------------------------------ every kind, with the exact span


@pytest.mark.parametrize(("text", "kind", "value"), [
    (f"My card {CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]} was charged twice.", "payment_card",
     f"{CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]}"),
    (f"Ma carte {CARD} a été débitée.", "payment_card", CARD),
    ("My SSN is 536-22-4578, fill the form.", "national_id", "536-22-4578"),
    ("Mon numéro de sécu est 1 85 05 78 006 084 91.", "national_id", "1 85 05 78 006 084 91"),
    ("Meine Steuer-ID ist 36 574 261 809.", "national_id", "36 574 261 809"),
    ("Mi DNI es 45678912S, rellena la solicitud.", "national_id", "45678912S"),
    ("Mi NIE: X1234567L.", "national_id", "X1234567L"),
    ("My National Insurance number is JG 10 37 52 D.", "national_id", "JG 10 37 52 D"),
    ("Il mio codice fiscale è RSSMRA85T10A562S.", "national_id", "RSSMRA85T10A562S"),
    ("Meine Personalausweisnummer ist C4JK7PL92.", "national_id", "C4JK7PL92"),
    (f"Please wire it to {IBAN_DE} today.", "iban", IBAN_DE),
    ("my password is hunter2, why can't I log in?", "secret", "hunter2"),
    ("Mon mot de passe est Chaton#42 mais ça ne marche pas.", "secret", "Chaton#42"),
    ("Passwort: Sonnenblume88", "secret", "Sonnenblume88"),
    ("Mi contraseña es Perro_2020.", "secret", "Perro_2020"),
    ("Connect to postgres://admin:S3cr3tPw@db.internal:5432/app", "secret", "S3cr3tPw"),
    ("key = 'sk-proj-" + "a1B2" * 12 + "'", "secret", "sk-proj-" + "a1B2" * 12),
    ("AKIAZ3MBKQ7W2XPLN4RT is my access key", "secret", "AKIAZ3MBKQ7W2XPLN4RT"),
    ("token ghp_" + "x9" * 18 + " expired", "secret", "ghp_" + "x9" * 18),
    ("Email my neighbour at george.whitman72@gmail.com about the ladder.", "contact",
     "george.whitman72@gmail.com"),
    ("Call me on +33 6 12 34 56 78 when you arrive.", "contact", "+33 6 12 34 56 78"),
    ("I live at 42 Elm Street, Springfield.", "contact", "42 Elm Street"),
    ("J'habite au 14 rue des Lilas à Lyon.", "contact", "14 rue des Lilas à Lyon"),
    ("Ich wohne in der Lindenstraße 23 in München.", "contact", "Lindenstraße 23"),
    ("I was diagnosed with bipolar disorder last month.", "health", "bipolar"),
    ("Ma mère a la maladie d'Alzheimer.", "health", "maladie d'Alzheimer"),
    ("Ich habe seit Jahren Depressionen.", "health", "Depressionen"),
    ("Tengo diabetes tipo 2.", "health", "diabetes"),
    ("CONFIDENTIAL: Q3 numbers attached.", "confidential", "CONFIDENTIAL"),
    ("Sarah Chen earns $142,000; justify her raise.", "confidential", "earns"),
    ("Rédige la lettre de licenciement de M. Girard.", "confidential", "licenciement"),
    ("Das Gehalt von Anna Hoffmann liegt bei 68.000 €.", "confidential", "Gehalt"),
    ("El salario de Elena Castro es de 48.000 €.", "confidential", "salario"),
    ("In der .env steht DB_PASSWORD=Ha5en!Zahn77, Zugriff verweigert.", "secret", "Ha5en!Zahn77"),
    ("DATABASES = {'default': {'USER': 'shop', 'PASSWORD': 'Qm7#vLx92!'}}", "secret", "Qm7#vLx92!"),
    ("mi clave del correo es gatito", "secret", "gatito"),
    ("I'm HIV positive and starting a new job.", "health", "HIV"),
    ("Mon fils de 7 ans est épileptique.", "health", "épileptique"),
    ("Me han detectado hipotiroidismo y tomo levotiroxina.", "health", "hipotiroidismo"),
    ("Bei meiner Tochter wurde ADHS festgestellt.", "health", "ADHS"),
    ("We let go of our CFO, Raj Patel, yesterday.", "confidential", "let go"),
    ("Kollege Fischer verdient 92.000 € im Jahr.", "confidential", "verdient"),
    ("my chemo starts monday, help me tell my team", "health", "chemo"),
    ("ich fang nächste woche mit der chemo an", "health", "chemo"),
    ("Réécris : « Mme Dumas, 72 ans, insuffisance cardiaque, sous furosémide 40 mg ».", "health",
     "insuffisance cardiaque"),
    ("don't tell anyone but we're being acquired by Oracle next month", "confidential", "don't tell anyone"),
    ("que no salga de aquí: nos compra una multinacional en octubre", "confidential", "que no salga de aquí"),
    # a login and its password handed over together, no "is" or ":" in between
    ("the camera admin page: user admin / pass Kiwi#2291, what setting turns off the IR?", "secret", "Kiwi#2291"),
    ("identifiant jdupont, mot de passe Mouette77 : pourquoi ça bloque ?", "secret", "Mouette77"),
    ("Drucker - Benutzer k.wolf - Passwort Tanne!58", "secret", "Tanne!58"),
    ("usuario soporte_web / contraseña lince_904$", "secret", "lince_904$"),
    ("Willkommensmail: Benutzer j.roth, Initialpasswort Amsel_77#, bitte beim ersten Login ändern.", "secret",
     "Amsel_77#"),
    ("define('DB_USER', 'shop');\ndefine('DB_PASS', 'zorro_41$');", "secret", "zorro_41$"),
    ("Mi hija Lucía tiene TEA y empieza el cole en septiembre.", "health", "TEA"),
    # an envelope list in lower case, made specific by its postcodes
    ("address these:\nuncle frank dobbs 7 quarry lane, whitby YO21 3PQ", "contact",
     "7 quarry lane, whitby YO21 3PQ"),
    ("name,team,base_salary\nLena Vogt,Data,91000\nOmar Haddad,Data,87000\nwhat is the average?", "confidential",
     "name,team,base_salary"),
])
def test_kind_detected_with_span(text: str, kind: str, value: str) -> None:
    assert value in found(text).get(kind, []), found(text)


def test_kinds_cover_the_documented_set() -> None:
    assert set(KINDS) == {"payment_card", "national_id", "iban", "secret", "contact", "health", "confidential"}


def test_spanish_iban_with_national_check() -> None:
    value = _valid_es_iban()
    assert found(f"Transfiere la fianza a {value}, gracias.")["iban"] == [value]


def test_iban_stops_before_following_uppercase_word() -> None:
    grouped = " ".join(IBAN_DE[i:i + 4] for i in range(0, len(IBAN_DE), 4))
    assert found(f"IBAN: {grouped} BIC INGDDEFF")["iban"] == [grouped]


def test_jwt_and_pem_blocks() -> None:
    jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    assert found(f"decode {jwt} please")["secret"] == [jwt]
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"
    assert found(f"is this encrypted?\n{pem}")["secret"] == [pem]


# ------------------------------------------------------------------ look-alikes stay benign


@pytest.mark.parametrize("text", [
    "How do I choose a strong password?",
    "My password is too short according to the form, what are the rules?",
    "Password managers are great, which one do you recommend?",
    "def f():\n    password = os.environ['PW']\n",
    "Set PASSWORD=<your password> in .env",
    "postgresql://user:password@localhost:5432/dbname",
    "Comment choisir un mot de passe solide ?",
    "Mein Passwort ist zu kurz, welche Regeln gelten?",
    "¿Cómo elijo una contraseña segura?",
    "Write a Python function implementing the Luhn check; 79927398713 is the classic example.",
    "For testing, use the Stripe card 4242 4242 4242 4242.",
    "Explain IBAN structure with the example DE89 3704 0044 0532 0130 00.",
    "What is a Social Security Number? Is 123-45-6789 valid?",
    "AWS docs use AKIAIOSFODNN7EXAMPLE as the access key id.",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY (from the AWS CLI guide)",
    "Redsys sandbox: pay with the test card 4548 8120 4940 0004, expiry 12/34, CVV 123.",
    "Adyen test cards: 4111 1111 4555 1142 and 5555 3412 4444 1115.",
    "Write a regex for emails like john.doe@example.com.",
    "Contact support@github.com for help.",
    "In films, numbers look like (555) 014-2368.",
    "Who lived at 221B Baker Street?",
    "What are the symptoms of diabetes?",
    "Comment la sclérose en plaques est-elle diagnostiquée ?",
    "I have a question about cancer research funding.",
    "How do I write a performance review for a junior engineer?",
    "What does 'confidential' mean at the bottom of an email?",
    "Que signifie la mention « confidentiel » sur un courrier ?",
    "¿Qué significa 'confidencial' en el pie de un correo?",
    "Was ist der Unterschied zwischen Abmahnung und Kündigung?",
    "Version 1.2.3 was released on 2024-05-01 with build 20240501123456.",
    "Meeting at 10:30 in room 4.12, bring the Q3 numbers.",
    # code and UI strings that share words with the rules
    "If False, seek() and truncate() will raise OSError.",
    "On Windows kill() is an alias for terminate().",
    "I have 30 ms latency and std::vector copies everywhere.",
    "I have a lithium battery pack that swells.",
    "Votre mot de passe est inactif.",
    "Ihr Passwort ist inaktiv.",
    "PKCS #11: PIN ist gesperrt",
    "La clave de sobrescritura «%s» en el esquema no es válida.",
    "change_password: fehlendes Datenbankargument",
    "Mein Bruder sucht eine Wohnung in Berlin.",
    "Ein Vergleich von Python und Go für unser Team.",
    "La demanda de vivienda en Madrid creció un 10 % según el INE.",
    "Notre équipe gagne le match.",
    "Report bugs to <bug-make@gnu.org>.",
    "Diabetes has many causes; list them.",
    "Decimal('1.38435736E+12') and Decimal('+35236450.6')",
    # fiction, textbook cases, public figures
    "In my novel the heroine is diagnosed with leukemia at 30; is that realistic?",
    "Write a villain monologue where he reveals the vault password is 'swordfish'.",
    "A 45-year-old patient presents with chest pain and diabetes. What is the differential?",
    "What salary does the US President earn per year?",
    "Between us, I think tabs are better than spaces.",
    # templates, made-up data, and credentials that are placeholders
    "Write a dismissal letter template with placeholders [Employee Name], [Date] and [Severance Amount].",
    "Vorlage für eine Kündigung: [Name Mitarbeiter], [Kündigungsgrund], [Datum]",
    "Generate a fake salary table for 5 made-up employees:\nname,team,base_salary\nLena Vogt,Data,91000\n"
    "Omar Haddad,Data,87000",
    "Set user admin / pass <your password> in the config.",
    "define('DB_PASS', getenv('DB_PASS'));",
    'settings.set("api_token", "${TOKEN}")',
    "I'd like a cup of TEA with milk, how do the British make it?",
    "The famous address is 10 Downing Street; what is its history?",
])
def test_lookalikes_not_sensitive(text: str) -> None:
    rep = detect(text)
    assert not rep.sensitive, rep.reasons()


def test_learned_opinion_skips_fiction_and_templates() -> None:
    """The judgement calls hold for the learned model too: a novel's character and a form are nobody."""
    from moai.gate.privacy_learned import load_model

    model = load_model()
    if model is None:
        pytest.skip("learned model turned off")
    real = "my sister was just told she has stage 3 ovarian cancer and starts chemo on friday"
    assert any(h.kind == "health" for h in model.find(real))
    assert not list(model.find("In my novel, " + real.replace("my sister", "the heroine's sister")))
    assert not list(model.find("Letter template: [Employee Name] told us [Condition]; write to [Manager Name]."))


def test_invalid_checksums_rejected() -> None:
    bad_card = CARD[:-1] + str((int(CARD[-1]) + 1) % 10)
    bad_iban = IBAN_DE[:2] + f"{(int(IBAN_DE[2:4]) + 1) % 100:02d}" + IBAN_DE[4:]
    assert not detect(f"card {bad_card}").sensitive
    assert not detect(f"IBAN {bad_iban}").sensitive
    assert not detect("SSN 666-12-3456").sensitive  # area 666 is never issued
    assert not detect("DNI 45678912A").sensitive  # wrong check letter


# ------------------------------------------------------------------ messages, report, trace


def test_messages_all_roles_and_parts() -> None:
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": [{"type": "text", "text": "Summarise this."},
                                     {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                                     {"type": "text", "text": "Reach me at ana.silva@outlook.com"}]},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "my password is hunter2"},
    ]
    rep = detect(messages)
    assert rep.sensitive and rep.kinds == ["secret", "contact"]
    where = {(d.kind, d.message, d.field, d.part) for d in rep.detections}
    assert where == {("contact", 1, "content", 2), ("secret", 3, "content", None)}


def test_tool_call_arguments_scanned_and_redacted() -> None:
    import json

    messages = [
        {"role": "user", "content": "Email my landlord about the heating."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "send_email", "arguments": json.dumps({"to": "b.keller1961@web.de", "body": "Hi"})}},
        ]},
    ]
    rep = detect(messages)
    assert [(d.kind, d.message, d.field) for d in rep.detections] == [("contact", 1, "tool_calls.0.arguments")]
    red, mapping = redact(messages, rep)
    args = json.loads(red[1]["tool_calls"][0]["function"]["arguments"])
    assert args["to"] == "[EMAIL_1]" and mapping["[EMAIL_1]"] == "b.keller1961@web.de"
    assert "b.keller1961" in messages[1]["tool_calls"][0]["function"]["arguments"]  # input untouched


def test_report_json_and_reasons_hide_values() -> None:
    rep = detect("my password is hunter2 and my card is " + CARD + ". I was diagnosed with leukemia.")
    blob = str(rep.to_json()) + " ".join(rep.reasons())
    assert "hunter2" not in blob and CARD not in blob and "leuk" not in blob.lower()
    assert rep.to_json()["sensitive"] is True
    assert not PrivacyReport().sensitive


def test_benign_query_empty_report() -> None:
    rep = detect([{"role": "user", "content": "Write a haiku about autumn."}])
    assert not rep.sensitive and rep.kinds == [] and rep.detections == []


def test_unicode_spaces_dashes_and_fullwidth_digits() -> None:
    """Spans stay valid in the original text although matching runs on a normalised copy."""
    text = "My SSN is 536\u201122\u20114578 and my card ４５３９ １４８８ ０３４３ ６４６７."
    got = found(text)
    assert got["national_id"] == ["536\u201122\u20114578"]
    assert got["payment_card"] == ["４５３９ １４８８ ０３４３ ６４６７"]
    assert "salaire" in found("Le salaire de Nadia Benali est de 52\u202f000\u00a0€.")["confidential"]


def test_redactable_only_for_shape_kinds() -> None:
    assert detect("my password is hunter2, mail ana.silva@outlook.com").redactable
    assert not detect("I was diagnosed with diabetes; my password is hunter2").redactable


def test_cache_does_not_change_results() -> None:
    text = "my password is hunter2"
    first = detect(text).to_json()
    assert detect(text).to_json() == first and detect_text.cache_info().hits >= 1


def test_long_pathological_input_stays_linear() -> None:
    """Runs like "a.a.a..." once made the email regex quadratic; 20k characters must stay well under 1 s."""
    import time

    for text in ("a." * 10_000, "a-" * 10_000, "john.smith" * 2_000):
        detect_text.cache_clear()
        t0 = time.perf_counter()
        detect(text)
        assert time.perf_counter() - t0 < 1.5


# ------------------------------------------------------------------ redaction round trip


def test_redact_and_restore_round_trip() -> None:
    messages = [{"role": "user", "content": f"Email george.whitman72@gmail.com, IBAN {IBAN_DE}, "
                                            f"cc george.whitman72@gmail.com again."}]
    rep = detect(messages)
    red, mapping = redact(messages, rep)
    text = red[0]["content"]
    assert "george.whitman72@gmail.com" not in text and IBAN_DE not in text
    assert text.count("[EMAIL_1]") == 2 and "[IBAN_1]" in text  # same value, same placeholder
    assert messages[0]["content"].startswith("Email george")  # input untouched
    assert restore(text, mapping) == messages[0]["content"]
    assert not detect(red).sensitive


def test_redact_string_and_parts() -> None:
    text = "my password is hunter2"
    red, mapping = redact(text, detect(text))
    assert red == "my password is [PASSWORD_1]" and mapping == {"[PASSWORD_1]": "hunter2"}
    parts = [{"role": "user", "content": [{"type": "text", "text": text}]}]
    red_parts, _ = redact(parts, detect(parts))
    assert red_parts[0]["content"][0]["text"] == "my password is [PASSWORD_1]"
    assert parts[0]["content"][0]["text"] == text


def test_restore_leaves_unknown_placeholders() -> None:
    assert restore("see [EMAIL_2] and [EMAIL_1]", {"[EMAIL_1]": "a@b.de"}) == "see [EMAIL_2] and a@b.de"


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7])
def test_streaming_restorer_across_chunk_boundaries(cut: int) -> None:
    mapping = {"[IBAN_1]": IBAN_DE, "[EMAIL_1]": "ana@outlook.com"}
    answer = "Pay [IBAN_1] then write to [EMAIL_1]. Lists use [brackets] too [x]."
    chunks = [answer[i:i + cut] for i in range(0, len(answer), cut)]
    r = Restorer(mapping)
    out = [r.feed(c) for c in chunks] + [r.flush()]
    assert "".join(out) == restore(answer, mapping)
    assert not any("[IB" in piece and "[IBAN_1]" not in piece for piece in out)


def test_streaming_restorer_holds_partial_placeholder() -> None:
    r = Restorer({"[EMAIL_1]": "ana@outlook.com"})
    assert r.feed("write to [EMA") == "write to "
    assert r.feed("IL_1] now") == "ana@outlook.com now"
    assert r.feed(" [unfinished") == " [unfinished"  # not a placeholder shape: never held back forever
    assert r.flush() == ""


def test_eval_set_meets_goals() -> None:
    """Regression guard on the splits the rules were fixed against: the issue's goals, as thresholds."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "data" / "privacy" / "eval.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert {r["lang"] for r in rows} >= {"en", "fr", "de", "es"} and len(rows) >= 240
    # the untouched generalisation estimates (see data/privacy/README.md) are reported by the benchmark, not asserted
    rows = [r for r in rows if r.get("split") not in ("heldout4", "heldout5", "heldout7", "heldout9")]
    sens = [detect(r["text"]).sensitive for r in rows if r["sensitive"]]
    benign = [detect(r["text"]).sensitive for r in rows if not r["sensitive"]]
    assert sum(sens) / len(sens) >= 0.98
    assert sum(benign) / len(benign) <= 0.05
