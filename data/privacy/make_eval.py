"""Build data/privacy/eval.jsonl: hand-written prompts, half sensitive, half benign look-alikes.

Run: `.venv/bin/python data/privacy/make_eval.py` (deterministic: fixed seed). Numbers are fresh random
values made valid with python-stdnum's checksums, so the set tests validation, not memorised numbers.
Prompts are written per language (not translated from one template), to keep phrasing natural.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
from collections.abc import Callable
from pathlib import Path

from stdnum import iban, luhn
from stdnum.de import idnr
from stdnum.es import nie
from stdnum.fr import nir
from stdnum.it import codicefiscale
from stdnum.us import ssn

R = random.Random(7)


# Generators: one fresh, checksum-valid (or vendor-shaped) value per call.


def _digits(n: int) -> str:
    return "".join(R.choice(string.digits) for _ in range(n))


def _alnum(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(R.choice(alphabet) for _ in range(n))


def card() -> str:
    prefix, length = R.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("37", 15), ("6011", 16)])
    body = prefix + _digits(length - len(prefix) - 1)
    num = body + luhn.calc_check_digit(body)
    if length == 15:
        return f"{num[:4]} {num[4:10]} {num[10:]}"
    sep = R.choice([" ", "-", ""])
    return sep.join(num[i:i + 4] for i in range(0, 16, 4))


def ssn_() -> str:
    while True:
        s = f"{R.randint(1, 665):03d}-{R.randint(1, 99):02d}-{R.randint(1, 9999):04d}"
        if ssn.is_valid(s):
            return s


def nir_() -> str:
    while True:
        body = f"{R.randint(1, 2)}{R.randint(50, 99):02d}{R.randint(1, 12):02d}{R.randint(1, 95):02d}" \
               f"{R.randint(1, 990):03d}{R.randint(1, 999):03d}"
        key = 97 - int(body) % 97
        s = f"{body[0]} {body[1:3]} {body[3:5]} {body[5:7]} {body[7:10]} {body[10:13]} {key:02d}"
        if nir.is_valid(s):
            return s


def idnr_() -> str:
    while True:
        base = str(R.randint(1, 9)) + _digits(9)
        for c in string.digits:
            if idnr.is_valid(base + c):
                n = base + c
                return R.choice([n, f"{n[:2]} {n[2:5]} {n[5:8]} {n[8:]}"])


def dni_() -> str:
    n = R.randint(10000000, 99999999)
    return f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"


def nie_() -> str:
    p, n = R.choice("XYZ"), R.randint(1000000, 9999999)
    s = f"{p}{n:07d}{'TRWAGMYFPDXBNJZSQVHLCKE'[int('XYZ'.index(p).__str__() + f'{n:07d}') % 23]}"
    assert nie.is_valid(s)
    return s


def cf_() -> str:
    body = (_alnum(6, string.ascii_uppercase) + _digits(2) + R.choice("ABCDEHLMPRST")
            + f"{R.randint(1, 28):02d}" + R.choice("ABCDEFGHILM") + _digits(3))
    return body + codicefiscale.calc_check_digit(body)


def nino_() -> str:
    return R.choice(["AB", "CE", "JG", "KL", "PR", "SW", "WT"]) + _digits(6) + R.choice("ABCD")


def _iban(cc: str, bban: Callable[[], str]) -> str:
    while True:
        b = bban()
        num = iban.calc_check_digits(cc + "00" + b)
        s = cc + num + b
        if iban.is_valid(s):
            return " ".join(s[i:i + 4] for i in range(0, len(s), 4))


def iban_de() -> str:
    return _iban("DE", lambda: _digits(18))


def iban_fr() -> str:
    def bban() -> str:
        bank, branch, acct = _digits(5), _digits(5), _digits(11)
        key = 97 - (89 * int(bank) + 15 * int(branch) + 3 * int(acct)) % 97
        return f"{bank}{branch}{acct}{key:02d}"
    return _iban("FR", bban)


def iban_es() -> str:
    return _iban("ES", lambda: _digits(20))


def iban_gb() -> str:
    return _iban("GB", lambda: R.choice(["NWBK", "BARC", "LOYD", "MIDL"]) + _digits(14))


def sk() -> str:
    return "sk-proj-" + _alnum(48, string.ascii_letters + string.digits + "_-")


def akia() -> str:
    return "AKIA" + _alnum(16, string.ascii_uppercase + string.digits)


def aws_secret() -> str:
    return _alnum(40, string.ascii_letters + string.digits + "/+")


def ghp() -> str:
    return "ghp_" + _alnum(36)


def slack() -> str:
    return f"xoxb-{_digits(11)}-{_digits(13)}-{_alnum(24, string.ascii_lowercase + string.digits)}"


def aiza() -> str:
    return "AIza" + _alnum(35, string.ascii_letters + string.digits + "_-")


def jwt() -> str:
    def b64(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64({'sub': _digits(6), 'name': 'Ana'})}.{_alnum(43)}"


def pem() -> str:
    body = "\n".join(_alnum(64, string.ascii_letters + string.digits + "+/") for _ in range(3))
    return f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"


def pw() -> str:
    words = ["Sunflower", "tigre", "Kiwi", "marmota", "Blue", "Falke", "ocean", "perro", "Lune"]
    return R.choice(words) + R.choice(["!", "#", "_", ""]) + _digits(R.randint(2, 4)) + R.choice(["", "?", "$"])


def phone_us() -> str:
    return f"({R.randint(201, 989)}) {R.randint(201, 989)}-{_digits(4)}"


def phone_fr() -> str:
    return "0" + str(R.choice([1, 4, 6, 7])) + "".join(f" {_digits(2)}" for _ in range(4))


def phone_de() -> str:
    return R.choice(["+49 151 ", "+49 170 ", "+49 30 ", "+49 89 "]) + _digits(8)


def phone_es() -> str:
    return f"+34 6{_digits(2)} {_digits(3)} {_digits(3)}"


GEN: dict[str, Callable[[], str]] = {
    "card": card, "ssn": ssn_, "nir": nir_, "idnr": idnr_, "dni": dni_, "nie": nie_, "cf": cf_, "nino": nino_,
    "iban_de": iban_de, "iban_fr": iban_fr, "iban_es": iban_es, "iban_gb": iban_gb, "sk": sk, "akia": akia,
    "aws_secret": aws_secret, "ghp": ghp, "slack": slack, "aiza": aiza, "jwt": jwt, "pem": pem, "pw": pw,
    "phone_us": phone_us, "phone_fr": phone_fr, "phone_de": phone_de, "phone_es": phone_es,
}

# (text, kinds). Tokens <<name>> are filled with a fresh generated value.
SENSITIVE: dict[str, list[tuple[str, list[str]]]] = {
    "en": [
        ("My Visa <<card>> got charged twice by the airline, help me write a dispute letter.", ["payment_card"]),
        ("Can you check why this payment failed? Card number <<card>>, expiry 09/28, CVV 381.", ["payment_card"]),
        ("Format this for the booking form: name Jane Okafor, card <<card>>.", ["payment_card"]),
        ("I typed <<card>> into a site that looked sketchy. What should I do now?", ["payment_card"]),
        ("My SSN is <<ssn>> — fill in box 3 of the W-4 for me.", ["national_id"]),
        ("Here is the tenant's info for the background check: Marcus Lee, SSN <<ssn>>, DOB 1988-04-12.",
         ["national_id"]),
        ("Write an email to HR correcting my social security number; the right one is <<ssn>>.", ["national_id"]),
        ("My UK National Insurance number is <<nino>>; what tax code should I be on?", ["national_id"]),
        ("Please wire the deposit to IBAN <<iban_gb>> (account holder: Tom Reilly).", ["iban"]),
        ("Draft a reminder to our client: the invoice should be paid to <<iban_de>> by Friday.", ["iban"]),
        ("Is this a valid IBAN? <<iban_fr>> — my landlord sent it and I want to pay rent.", ["iban"]),
        ("Why does this fail? client = OpenAI(api_key=\"<<sk>>\")", ["secret"]),
        ("Here's my ~/.aws/credentials:\naws_access_key_id = <<akia>>\naws_secret_access_key = <<aws_secret>>",
         ["secret"]),
        ("git push keeps failing with token <<ghp>>, is the token expired?", ["secret"]),
        ("Our Slack bot uses <<slack>> and gets not_authed. Any idea?", ["secret"]),
        ("My password is <<pw>> and the VPN still rejects me, what else can I try?", ["secret"]),
        ("Connect with psql to postgres://analytics:<<pw>>@10.0.3.17:5432/warehouse and list the tables.",
         ["secret"]),
        ("Decode this token and tell me when it expires: <<jwt>>", ["secret"]),
        ("Is this key encrypted?\n<<pem>>", ["secret"]),
        ("Reply to my neighbour, he's at george.whitman72@gmail.com, and say I'll return the ladder Sunday.",
         ["contact"]),
        ("Text my sister at <<phone_us>> to remind her about mom's birthday — write the message.", ["contact"]),
        ("Change the delivery address on my order to 1187 Maple Avenue, Apt 4B, Columbus OH 43215, I moved.",
         ["contact"]),
        ("Write a cover letter header for me: Priya Raman, 27 Oakfield Road, Leeds, priya.raman@outlook.com.",
         ["contact"]),
        ("I was diagnosed with bipolar disorder last month and started lithium. How do I tell my boss?",
         ["health"]),
        ("My dad has stage 3 lymphoma and his oncologist suggested chemo. What questions should we ask?",
         ["health"]),
        ("I'm on 100mg sertraline and want to start drinking again on weekends, is that dangerous?", ["health"]),
        ("My daughter Emma has epilepsy and takes levetiracetam; write a note for her school nurse.", ["health"]),
        ("Patient Robert Hale, 64, HIV positive, on antiretrovirals — summarise his chart for the handover.",
         ["health"]),
        ("Summarise this memo. CONFIDENTIAL — Project Falcon: we will acquire Nortech for $240M next quarter.",
         ["confidential"]),
        ("Help me write the termination letter for Kevin Marsh; his last day is March 3 and severance is 8 weeks.",
         ["confidential"]),
        ("Sarah Chen currently earns $142,000; draft the raise justification to bring her to $155,000.",
         ["confidential"]),
        ("Our Q3 revenue came in at $18.2M, below guidance, and it isn't public until the earnings call. Draft "
         "talking points.", ["confidential"]),
        ("We settled the harassment lawsuit with Daniel Ortiz for $350,000; write the internal note.",
         ["confidential"]),
        ("Fix the grammar in my bank form: Name Ana Silva, phone <<phone_us>>, card <<card>>.",
         ["contact", "payment_card"]),
        ("Performance review for Mike Dunn: missed 4 deadlines, on a PIP since May. He also told me he has "
         "severe depression.", ["confidential", "health"]),
    ],
    "fr": [
        ("Ma carte bancaire <<card>> a été débitée deux fois, aide-moi à écrire une réclamation.", ["payment_card"]),
        ("Pour la réservation : Claire Martin, carte n° <<card>>, expiration 03/27.", ["payment_card"]),
        ("J'ai donné ma carte <<card>> par téléphone à un faux conseiller, que faire ?", ["payment_card"]),
        ("Mon numéro de sécurité sociale est <<nir>>, remplis le formulaire Cerfa pour moi.", ["national_id"]),
        ("Voici les infos du salarié pour la DPAE : Julien Petit, NIR <<nir>>.", ["national_id"]),
        ("Rédige un mail à la CPAM : mon numéro de sécu <<nir>> est mal enregistré.", ["national_id"]),
        ("Vire le loyer sur mon IBAN <<iban_fr>> s'il te plaît, écris le message au locataire.", ["iban"]),
        ("Mon RIB : <<iban_fr>>, titulaire Sophie Bernard. Rédige le mail pour la mutuelle.", ["iban"]),
        ("Le fournisseur demande qu'on paie sur <<iban_es>>, est-ce normal pour une société française ?",
         ["iban"]),
        ("Mon mot de passe est <<pw>> mais Outlook refuse de se connecter, pourquoi ?", ["secret"]),
        ("Voici ma config : OPENAI_API_KEY=<<sk>> — pourquoi j'ai une erreur 429 ?", ["secret"]),
        ("Le mot de passe du wifi de la maison : <<pw>>, écris-le joliment pour les invités.", ["secret"]),
        ("Pourquoi cette URL ne marche pas : mysql://admin:<<pw>>@192.168.1.20/compta ?", ["secret"]),
        ("Mon token GitHub <<ghp>> ne marche plus depuis hier.", ["secret"]),
        ("Écris à ma voisine, son mail c'est lucie.moreau54@orange.fr, pour la fête des voisins.", ["contact"]),
        ("Appelle-moi au <<phone_fr>> dès que le colis arrive — rédige ce SMS pour le livreur.", ["contact"]),
        ("J'habite au 14 rue des Lilas, 69003 Lyon ; fais une attestation d'hébergement pour mon frère.",
         ["contact"]),
        ("Envoie la facture à Marc Dubois, 8 bis avenue Jean Jaurès, 31000 Toulouse.", ["contact"]),
        ("J'ai un diabète de type 1 et je prends de l'insuline, comment gérer le ramadan ?", ["health"]),
        ("Ma mère a la maladie d'Alzheimer et ne reconnaît plus personne, comment en parler aux enfants ?",
         ["health"]),
        ("Je suis enceinte de 8 semaines et je n'ai encore rien dit à mon employeur, quels sont mes droits ?",
         ["health"]),
        ("Mon psychiatre m'a mis sous antidépresseurs pour une dépression sévère, est-ce que je peux conduire ?",
         ["health"]),
        ("Mon fils souffre d'anorexie depuis six mois, je cherche un centre à Paris.", ["health"]),
        ("CONFIDENTIEL — Résultats du T3 non publiés : chiffre d'affaires de 41 M€, en baisse de 12 %. Fais un "
         "résumé.", ["confidential"]),
        ("Rédige la lettre de licenciement pour faute grave de M. Girard, à remettre lundi.", ["confidential"]),
        ("Le salaire de Nadia Benali est de 52 000 € ; prépare l'argumentaire pour sa demande d'augmentation.",
         ["confidential"]),
        ("Ce document est strictement confidentiel : nous préparons le rachat de la société Ardent pour 15 M€.",
         ["confidential"]),
        ("Nous avons signé une rupture conventionnelle avec Paul Lemaire, indemnité de 23 000 €. Résume.",
         ["confidential"]),
        ("Pour mon dossier : Inès Roux, née le 3/2/1990, NIR <<nir>>, téléphone <<phone_fr>>.",
         ["national_id", "contact"]),
        ("Mot de passe : <<pw>>, identifiant : hugo.lambert — transmets ça à l'équipe support.", ["secret"]),
    ],
    "de": [
        ("Meine Kreditkarte <<card>> wurde doppelt belastet, schreib bitte eine Reklamation.", ["payment_card"]),
        ("Für die Hotelbuchung: Lena Vogel, Karte <<card>>, gültig bis 11/26.", ["payment_card"]),
        ("Ich habe meine Kartennummer <<card>> auf einer Phishing-Seite eingegeben, was jetzt?", ["payment_card"]),
        ("Meine Steuer-ID ist <<idnr>>, füll bitte das Formular für den neuen Arbeitgeber aus.", ["national_id"]),
        ("Hier die Daten für die Lohnabrechnung: Jonas Weber, Steueridentifikationsnummer <<idnr>>.",
         ["national_id"]),
        ("Das Finanzamt hat meine IdNr <<idnr>> falsch gespeichert, schreib einen Brief.", ["national_id"]),
        ("Überweis die Miete auf meine IBAN <<iban_de>> — formulier die Nachricht an den Mieter.", ["iban"]),
        ("Bankverbindung für die Rechnung: <<iban_de>>, Kontoinhaber Markus Braun.", ["iban"]),
        ("Ist diese IBAN gültig? <<iban_de>> Die hat mir der Verkäufer auf Kleinanzeigen geschickt.", ["iban"]),
        ("Mein Passwort ist <<pw>>, trotzdem lässt mich das Firmenportal nicht rein.", ["secret"]),
        ("Passwort: <<pw>> — Benutzer: k.schulz. Warum schlägt der SSH-Login fehl?", ["secret"]),
        ("Warum geht das nicht? requests.get(url, headers={'Authorization': 'Bearer <<jwt>>'})", ["secret"]),
        ("Unser Google-Maps-Key <<aiza>> wird abgelehnt, was ist falsch?", ["secret"]),
        ("Verbinde dich mit redis://default:<<pw>>@cache.intern:6379/0 und zeig mir die Keys.", ["secret"]),
        ("Schreib meiner Vermieterin, sie heißt Frau Keller, Mail: b.keller1961@web.de, wegen der Heizung.",
         ["contact"]),
        ("Ruf mich unter <<phone_de>> an — formulier die SMS an den Handwerker.", ["contact"]),
        ("Ich wohne in der Lindenstraße 23, 80331 München; schreib die Ummeldung für mich.", ["contact"]),
        ("Schick das Paket an meinen Bruder, Tobias Frank, Am Mühlweg 5, 50667 Köln. Er wohnt dort seit Mai.",
         ["contact"]),
        ("Ich habe seit zwei Jahren Depressionen und nehme Antidepressiva, darf ich verbeamtet werden?",
         ["health"]),
        ("Bei meinem Vater wurde Parkinson diagnostiziert, wie beantragen wir einen Pflegegrad?", ["health"]),
        ("Meine Frau ist schwanger und hat Bluthochdruck, welche Fragen sollten wir der Ärztin stellen?",
         ["health"]),
        ("Ich leide an Epilepsie und hatte letzte Woche einen Anfall, muss ich das der Führerscheinstelle melden?",
         ["health"]),
        ("Mein Sohn ist seit Juni in Psychotherapie wegen einer Angststörung, schreib eine Entschuldigung für die "
         "Schule.", ["health"]),
        ("VERTRAULICH: Die Quartalszahlen (Umsatz 27 Mio. €, -9 %) sind noch nicht veröffentlicht. Fasse sie "
         "zusammen.", ["confidential"]),
        ("Formuliere die Abmahnung für Herrn Schneider wegen wiederholter Verspätung.", ["confidential"]),
        ("Das Gehalt von Anna Hoffmann liegt bei 68.000 €, begründe eine Erhöhung auf 74.000 €.",
         ["confidential"]),
        ("Wir planen die Übernahme der Firma Kessler für 12 Mio. Euro, das ist streng vertraulich. Schreib das "
         "Memo.", ["confidential"]),
        ("Schreib den Aufhebungsvertrag für Frau Lange, Abfindung 30.000 €.", ["confidential"]),
        ("Neue Mitarbeiterin: Mia Wolf, Steuer-ID <<idnr>>, IBAN <<iban_de>>. Leg die Personalakte an.",
         ["national_id", "iban"]),
        ("Meine Handynummer ist <<phone_de>> und mein Passwort lautet <<pw>>, bitte speichern.",
         ["contact", "secret"]),
    ],
    "es": [
        ("Me cobraron dos veces en la tarjeta <<card>>, ayúdame a escribir una reclamación.", ["payment_card"]),
        ("Para la reserva: Lucía Gómez, tarjeta <<card>>, caduca 05/27.", ["payment_card"]),
        ("Metí mi tarjeta <<card>> en una web falsa de Correos, ¿qué hago?", ["payment_card"]),
        ("Mi DNI es <<dni>>, rellena la solicitud de empadronamiento.", ["national_id"]),
        ("Datos del nuevo empleado para el contrato: Pablo Ruiz, NIE <<nie>>.", ["national_id"]),
        ("Escribe a Hacienda: mi DNI <<dni>> aparece con otro nombre en la declaración.", ["national_id"]),
        ("Mi codice fiscale italiano es <<cf>>, ¿lo necesito para trabajar en Milán?", ["national_id"]),
        ("Transfiere la fianza a mi IBAN <<iban_es>>, redacta el mensaje para el inquilino.", ["iban"]),
        ("Datos bancarios para la factura: <<iban_es>>, titular Carmen Navarro.", ["iban"]),
        ("El proveedor alemán nos pide pagar en <<iban_de>>, ¿es de fiar?", ["iban"]),
        ("Mi contraseña es <<pw>> y el banco online me bloquea, ¿por qué?", ["secret"]),
        ("Contraseña: <<pw>>, usuario: jmartinez. ¿Por qué falla el FTP?", ["secret"]),
        ("Revisa mi .env: STRIPE_SECRET=sk_live_<<ghp>> — ¿está bien configurado?", ["secret"]),
        ("¿Por qué no conecta? mongodb://root:<<pw>>@mongo.prod:27017/tienda", ["secret"]),
        ("Mi clave de AWS es <<akia>>, ¿cómo roto las credenciales?", ["secret"]),
        ("Escribe a mi casero, su correo es antonio.serrano.g@yahoo.es, sobre la gotera.", ["contact"]),
        ("Llámame al <<phone_es>> cuando llegue el técnico; redacta el mensaje.", ["contact"]),
        ("Vivo en la Calle de Alcalá 125, 3ºB, 28009 Madrid; haz el certificado para mi hermana.", ["contact"]),
        ("Envía el regalo a mi abuela, Rosa Jiménez, Avenida de la Constitución 18, Sevilla.", ["contact"]),
        ("Tengo diabetes tipo 2 y tomo metformina; ¿puedo hacer ayuno intermitente?", ["health"]),
        ("A mi madre le diagnosticaron cáncer de mama, ¿cómo la apoyo durante la quimioterapia?", ["health"]),
        ("Estoy embarazada de tres meses y no se lo he dicho a mi jefe, ¿me pueden despedir?", ["health"]),
        ("Mi psiquiatra me recetó ansiolíticos por ansiedad, ¿puedo tomar alcohol?", ["health"]),
        ("Mi hermano padece esquizofrenia y dejó la medicación, ¿qué hacemos?", ["health"]),
        ("CONFIDENCIAL — Resultados trimestrales no publicados: facturación de 9,4 millones, pérdidas de 1,2 "
         "millones. Resume.", ["confidential"]),
        ("Redacta la carta de despido disciplinario de Sr. Molina por ausencias reiteradas.", ["confidential"]),
        ("El salario de Elena Castro es de 48.000 €; prepara la justificación de su aumento.", ["confidential"]),
        ("Este documento es confidencial: vamos a cerrar la planta de Zaragoza y despedir a 120 personas.",
         ["confidential"]),
        ("Llegamos a un acuerdo extrajudicial con Javier Ortega por 75.000 €; escribe la nota interna.",
         ["confidential"]),
        ("Nuevo cliente: Marta Vidal, DNI <<dni>>, IBAN <<iban_es>>, móvil <<phone_es>>.",
         ["national_id", "iban", "contact"]),
    ],
}

# Benign, most of them look-alikes of a sensitive kind (same vocabulary or number shapes, nothing personal).
BENIGN: dict[str, list[str]] = {
    "en": [
        "How do I choose a strong password that I can still remember?",
        "What is the Luhn algorithm? Write a Python function that validates a card number with it.",
        "In Stripe's sandbox, which test card should I use to simulate a decline? Is 4000 0000 0000 0002 right?",
        "For testing our checkout, can I use 4111 1111 1111 1111 with any future expiry?",
        "Explain the structure of an IBAN, using the standard example DE89 3704 0044 0532 0130 00.",
        "What is a Social Security Number and who is eligible to get one?",
        "Why do SSNs never start with 666 or 9?",
        "What are the early symptoms of type 2 diabetes?",
        "Explain how chemotherapy works against lymphoma, at high-school level.",
        "What are common side effects of sertraline?",
        "How do I write a fair performance review for a junior engineer?",
        "What does 'confidential' mean at the bottom of an email, and is it legally binding?",
        "What is an NDA and when should a startup ask for one?",
        "Write a regex that matches email addresses like john.doe@example.com.",
        "My password is too short according to the sign-up form — what are the usual length rules?",
        "Generate a SQLAlchemy URL template for PostgreSQL: postgresql://user:password@localhost:5432/dbname",
        "The API says 'invalid api_key'. Where do I find my key in the OpenAI dashboard?",
        "What's the difference between an access token and a refresh token in OAuth 2?",
        "Write a bash script that reads the password from an environment variable instead of hard-coding it.",
        "In movies, why are phone numbers always like (555) 014-2368?",
        "My order number is 8472 1193 5521 0087; how long does standard shipping usually take?",
        "Calculate 123456789 * 987654321 and explain the steps.",
        "Who lived at 221B Baker Street in the Sherlock Holmes stories?",
        "How do companies typically structure salary bands and bonuses?",
        "Summarise the main causes of the 2008 financial crisis.",
        "What should a termination letter contain to be legally safe in California?",
        "How does Alzheimer's disease progress over the years?",
        "Explain what a JWT is and what its three parts contain.",
        "What do the letters in a UK National Insurance number mean?",
        "Is it safe to store API keys in a .env file committed to git?",
        "Write a haiku about the ocean and a lost umbrella.",
    ],
    "fr": [
        "Comment choisir un mot de passe solide et facile à retenir ?",
        "Explique l'algorithme de Luhn et écris une fonction JavaScript qui l'applique.",
        "Quelle est la structure d'un IBAN français ? Par exemple FR76 3000 6000 0112 3456 7890 189.",
        "À quoi correspondent les chiffres du numéro de sécurité sociale français ?",
        "Quels sont les symptômes du diabète de type 1 chez l'enfant ?",
        "Comment fonctionne un antidépresseur de type ISRS ?",
        "Comment rédiger un entretien annuel d'évaluation constructif ?",
        "Qu'est-ce qu'une rupture conventionnelle et comment se calcule l'indemnité ?",
        "Que signifie la mention « confidentiel » sur un courrier ?",
        "Mon mot de passe est trop faible selon le site, quelles règles suivre ?",
        "Écris une expression régulière pour valider un e-mail du type prenom.nom@exemple.fr.",
        "Quelle est la différence entre un RIB et un IBAN ?",
        "Donne un exemple de chaîne de connexion PostgreSQL avec des valeurs fictives.",
        "Quel est le format des numéros de téléphone portables en France ?",
        "Comment sécuriser une clé API dans une application mobile ?",
        "Résume l'histoire de la sécurité sociale en France.",
        "Comment la sclérose en plaques est-elle diagnostiquée ?",
        "Quelles sont les grilles de salaire typiques d'un développeur à Paris ?",
        "Traduis en anglais : « Le rapport est prêt, je te l'envoie demain. »",
        "Qu'est-ce qu'un plan social et quelles sont les obligations de l'employeur ?",
        "Pour tester le paiement, quelle carte de test Stripe utiliser ? 4242 4242 4242 4242 ?",
        "Calcule la clé de contrôle d'un RIB, avec un exemple inventé.",
        "Pourquoi faut-il un gestionnaire de mots de passe ?",
        "Écris un poème sur la pluie à Brest.",
        "Qui habitait au 10 Downing Street en 2010 ?",
        "Quels sont les effets secondaires fréquents de la chimiothérapie ?",
        "Comment fonctionne le chiffrement d'un jeton JWT ?",
        "Explique la différence entre licenciement économique et licenciement pour faute.",
        "Combien font 18 % de 2 450 000 € ?",
        "Comment annoncer des résultats trimestriels à des investisseurs ?",
    ],
    "de": [
        "Wie wähle ich ein sicheres Passwort, das ich mir merken kann?",
        "Erkläre den Luhn-Algorithmus und schreib eine Python-Funktion dazu.",
        "Wie ist eine deutsche IBAN aufgebaut? Nimm DE89 3704 0044 0532 0130 00 als Beispiel.",
        "Was ist die Steuer-Identifikationsnummer und wo finde ich sie?",
        "Wie wird die Prüfziffer der Steuer-ID berechnet?",
        "Was sind typische Symptome einer Depression?",
        "Wie wirkt Metformin bei Diabetes Typ 2?",
        "Wie schreibe ich eine faire Leistungsbeurteilung für Auszubildende?",
        "Was bedeutet 'vertraulich' im Betreff einer E-Mail rechtlich?",
        "Was ist der Unterschied zwischen Abmahnung und Kündigung?",
        "Mein Passwort ist zu kurz laut Fehlermeldung, welche Regeln gelten meist?",
        "Schreib einen regulären Ausdruck für E-Mail-Adressen wie max.mustermann@beispiel.de.",
        "Gib ein Beispiel für eine Redis-URL mit Platzhaltern für Benutzer und Passwort.",
        "Wie sind deutsche Handynummern aufgebaut?",
        "Wie speichere ich API-Schlüssel sicher in Kubernetes?",
        "Was steht in einem Personalausweis und wie lange ist er gültig?",
        "Wie verläuft Parkinson typischerweise?",
        "Wie hoch sind durchschnittliche Gehälter für Data Scientists in Berlin?",
        "Übersetze ins Englische: 'Der Bericht ist morgen fertig.'",
        "Was muss in einem Aufhebungsvertrag stehen?",
        "Welche Testkarten gibt es bei Stripe für 3D-Secure, z. B. 4000 0025 0000 3155?",
        "Warum sollte man Passwörter nie im Klartext speichern?",
        "Schreib ein kurzes Gedicht über den Herbst in Hamburg.",
        "Wer wohnte in der Berggasse 19 in Wien?",
        "Was sind Nebenwirkungen einer Chemotherapie?",
        "Wie funktioniert ein JSON Web Token?",
        "Rechne: 48.000 € Bruttogehalt, wie viel netto in Steuerklasse 1 ungefähr?",
        "Wie bereitet man eine Übernahme rechtlich vor, ganz allgemein?",
        "Was ist eine Schwangerschaftsdiabetes und wie wird sie behandelt?",
        "Erkläre das Prinzip der Zwei-Faktor-Authentifizierung.",
    ],
    "es": [
        "¿Cómo elijo una contraseña segura y fácil de recordar?",
        "Explica el algoritmo de Luhn y escribe una función en Python que lo aplique.",
        "¿Cómo se compone un IBAN español? Usa como ejemplo ES91 2100 0418 4502 0005 1332.",
        "¿Qué es el NIE y quién lo necesita?",
        "¿Cómo se calcula la letra del DNI?",
        "¿Cuáles son los síntomas de la depresión?",
        "¿Qué efectos secundarios tiene la quimioterapia?",
        "¿Cómo redacto una evaluación de desempeño constructiva?",
        "¿Qué significa 'confidencial' en el pie de un correo?",
        "¿Qué es un despido disciplinario y qué indemnización corresponde?",
        "Mi contraseña es demasiado corta según la web, ¿qué reglas suelen pedir?",
        "Escribe una expresión regular para correos como nombre.apellido@ejemplo.com.",
        "Dame un ejemplo de cadena de conexión MySQL con valores de ejemplo.",
        "¿Cuál es el formato de los números de móvil en España?",
        "¿Cómo guardo una clave API de forma segura en un proyecto de Node?",
        "¿Qué datos aparecen en el DNI español?",
        "¿Cómo se diagnostica la esclerosis múltiple?",
        "¿Cuál es el salario medio de un programador en Madrid?",
        "Traduce al inglés: 'El informe estará listo el lunes.'",
        "¿Qué es un ERE y cómo se negocia?",
        "¿Qué tarjeta de prueba uso en Stripe? ¿Sirve 5555 5555 5555 4444?",
        "¿Por qué no debo reutilizar contraseñas?",
        "Escribe un poema sobre el mar en Cádiz.",
        "¿Quién vivía en la Calle de Cervantes 2 de Madrid?",
        "¿Cómo afecta la diabetes a los riñones?",
        "¿Qué es un token JWT y cómo se valida?",
        "Calcula el 21 % de IVA sobre 1.250 €.",
        "¿Qué es un acuerdo de confidencialidad y cuándo se firma?",
        "¿Qué dieta se recomienda para la hipertensión?",
        "Explica cómo funciona la autenticación de dos factores.",
    ],
}


# Written after the detector's rules were fixed, and measured once without further tuning: the honest
# generalisation figure (split "heldout"); everything above is split "dev".
HELDOUT_SENSITIVE: dict[str, list[tuple[str, list[str]]]] = {
    "en": [
        ("Update my billing: the new card is <<card>> (exp 2029), the old one was stolen.", ["payment_card"]),
        ("Hey, can you format these for the reimbursement: Amex <<card>>, total $412.18", ["payment_card"]),
        ("For the mortgage application they asked my social security no. — it's <<ssn>>. Is it safe to email?",
         ["national_id"]),
        ("Please send the refund to GB account <<iban_gb>>, reference INV-2291.", ["iban"]),
        ("```python\nopenai.api_key = '<<sk>>'\n```\nwhy am I getting 401?", ["secret"]),
        ("My gmail password is <<pw>>, can you check whether it appears in known breaches?", ["secret"]),
        ("export GITHUB_TOKEN=<<ghp>>\nThen `gh repo list` says bad credentials.", ["secret"]),
        ("You can reach our new hire at lina.haddad@protonmail.com or <<phone_us>>; write a welcome note.",
         ["contact"]),
        ("We just moved to 508 Birchwood Drive, Austin; write a change-of-address letter for my bank.",
         ["contact"]),
        ("My wife was diagnosed with MS in June and is starting Ocrevus; how do we plan the infusions at work?",
         ["health"]),
        ("I've been taking Xanax for panic attacks for 3 years, how do I taper off safely?", ["health"]),
        ("Draft the PIP for Laura Kim: missed quota three quarters in a row, final warning.", ["confidential"]),
        ("INTERNAL ONLY — Layoff list for Friday: 14 roles in Support, 6 in Sales. Write the manager FAQ.",
         ["confidential"]),
    ],
    "fr": [
        ("Nouvelle carte pour l'abonnement : <<card>>, pense à mettre à jour.", ["payment_card"]),
        ("Pour l'inscription à la crèche il faut mon numéro de sécu, c'est le <<nir>>.", ["national_id"]),
        ("Peux-tu préparer le virement de 800 € vers FR <<iban_fr>> pour le notaire ?", ["iban"]),
        ("Le code d'accès de la box : mot de passe = <<pw>>, note-le dans le guide pour le Airbnb.", ["secret"]),
        ("Voici ma clé : <<aiza>> — pourquoi l'API Maps renvoie REQUEST_DENIED ?", ["secret"]),
        ("Mon adresse perso c'est camille.rousseau.88@gmail.com, ajoute-la à la liste des invités.", ["contact"]),
        ("Je viens d'emménager au 3 place du Marché, 44000 Nantes ; écris au service des eaux.", ["contact"]),
        ("Mon compagnon a une leucémie et commence la chimio lundi, comment organiser la garde des enfants ?",
         ["health"]),
        ("Je prends du Lévothyrox depuis mon opération de la thyroïde, puis-je prendre du fer en même temps ?",
         ["health"]),
        ("Prépare l'entretien de licenciement de Mme Fabre, prévu jeudi, avec un préavis de deux mois.",
         ["confidential"]),
    ],
    "de": [
        ("Meine neue Visa-Karte: <<card>>, bitte im Kundenkonto hinterlegen.", ["payment_card"]),
        ("Für den Elterngeldantrag: meine Steuer-ID lautet <<idnr>>.", ["national_id"]),
        ("Bitte 1.200 € an <<iban_de>> überweisen, Verwendungszweck Kaution, und eine Bestätigung schreiben.",
         ["iban"]),
        ("Unser Jenkins nutzt den Slack-Token <<slack>> — warum kommen keine Nachrichten an?", ["secret"]),
        ("Das WLAN-Passwort für die Ferienwohnung ist <<pw>>, mach daraus ein Infoblatt.", ["secret"]),
        ("Schreib Herrn Yilmaz zurück, seine Adresse ist mehmet.yilmaz@t-online.de, Termin am Dienstag.",
         ["contact"]),
        ("Meine Mutter hat Demenz und nimmt seit Kurzem Donepezil, worauf müssen wir achten?", ["health"]),
        ("Ich bin seit drei Wochen krankgeschrieben wegen Burnout und nehme Sertralin, muss mein Chef das wissen?",
         ["health"]),
        ("Kollege Fischer verdient 92.000 € und ich nur 78.000 € — hilf mir, das im Gespräch anzusprechen.",
         ["confidential"]),
        ("Streng vertraulich: Wir verhandeln die Fusion mit der Berger AG, Bekanntgabe erst im Mai.",
         ["confidential"]),
    ],
    "es": [
        ("Actualiza el método de pago con mi tarjeta <<card>>, la anterior caducó.", ["payment_card"]),
        ("Para la matrícula piden mi NIE, es el <<nie>>, ¿lo pongo con guiones?", ["national_id"]),
        ("Haz la transferencia de 600 € a la cuenta <<iban_es>> para la comunidad de vecinos.", ["iban"]),
        ("Mi clave del correo es <<pw>>, ¿puedes decirme si es segura?", ["secret"]),
        ("Este es mi token: <<jwt>> — ¿por qué el backend dice que expiró?", ["secret"]),
        ("Mi número es <<phone_es>>, escribe el anuncio para vender la bici.", ["contact"]),
        ("Mi padre tiene alzhéimer y toma donepezilo, ¿qué ayudas puede pedir?", ["health"]),
        ("Tengo VIH desde 2019 y tomo antirretrovirales, ¿debo decírselo al dentista?", ["health"]),
        ("Redacta la carta de despido de Andrés Roldán con una indemnización de 18.000 €.", ["confidential"]),
        ("CONFIDENCIAL: el plan de reestructuración cierra dos tiendas en Valencia. Haz un resumen.",
         ["confidential"]),
    ],
}
HELDOUT_BENIGN: dict[str, list[str]] = {
    "en": [
        "What makes 'correct horse battery staple' a better password than 'P@ssw0rd'?",
        "Write unit tests for a Luhn validator using the well-known test number 4242 4242 4242 4242.",
        "How many characters does an IBAN have in Germany versus France?",
        "Explain how the area number in old SSNs was assigned by state.",
        "What is the typical dose range of metformin for adults, according to guidelines?",
        "Give me tips to prepare for my own annual performance review as an engineer.",
        "How should a company label internal-only documents in Google Drive?",
        "Write a docker-compose file for Postgres using ${POSTGRES_PASSWORD} from an env file.",
        "What does the error 'password authentication failed for user postgres' mean?",
        "List five famous lawsuits in tech history and how they were settled.",
        "My grandmother's favourite recipe used 3 cups of flour; how many grams is that?",
        "Convert 1,234,567,890 seconds to years.",
        "What is PTSD and how is it usually treated?",
    ],
    "fr": [
        "Quelle longueur minimale recommande l'ANSSI pour un mot de passe ?",
        "Comment vérifier la clé d'un numéro de sécurité sociale en Python ?",
        "Explique comment fonctionne un virement SEPA.",
        "Quels sont les signes d'un burn-out ?",
        "Qu'est-ce qu'une clause de confidentialité dans un contrat de travail ?",
        "Écris un fichier .env d'exemple avec API_KEY=changeme.",
        "Comment calcule-t-on une indemnité de licenciement en France ?",
        "Donne-moi trois idées de sortie à Lyon ce week-end.",
        "Quelle est la population de Marseille ?",
        "Comment fonctionne l'insuline dans le corps ?",
    ],
    "de": [
        "Was ist ein gutes Passwort für ein WLAN und wie lang sollte es sein?",
        "Wie prüft man eine IBAN mit Modulo 97? Erklär es Schritt für Schritt.",
        "Wie erkenne ich einen Schlaganfall?",
        "Was darf in einem Arbeitszeugnis nicht stehen?",
        "Was bedeutet 'nur für den internen Gebrauch' bei Dokumenten?",
        "Schreib ein Python-Skript, das Passwörter mit bcrypt hasht.",
        "Welche Nebenwirkungen hat Ibuprofen?",
        "Wie viele Einwohner hat Leipzig?",
        "Erkläre den Unterschied zwischen Bruttogehalt und Nettogehalt.",
        "Wann ist die nächste Bundestagswahl?",
    ],
    "es": [
        "¿Cada cuánto hay que cambiar la contraseña del router?",
        "¿Cómo se valida un NIE con su letra de control?",
        "¿Qué es el código IBAN y para qué sirve?",
        "¿Cuáles son los síntomas de un infarto en mujeres?",
        "¿Qué incluye un acuerdo de confidencialidad típico?",
        "Escribe un ejemplo de archivo de configuración con password: <tu_contraseña>.",
        "¿Cómo se calcula el finiquito en España?",
        "Recomiéndame tres libros de ciencia ficción.",
        "¿Cuánto mide la Sagrada Familia?",
        "¿Qué es la ansiedad generalizada?",
    ],
}


# A second held-out batch, longer and messier (pasted emails, code, chat turns), written after the first
# held-out measurement; measured once, figures in README.md (split "heldout2").
HELDOUT2_SENSITIVE: dict[str, list[tuple[str, list[str]]]] = {
    "en": [
        ("Can you proofread this before I send it?\n\nHi Dana,\nAttached is the signed lease. For the deposit "
         "please use my account <<iban_gb>>. Thanks!\nOliver", ["iban"]),
        ("settings.py:\nDATABASES = {'default': {'ENGINE': 'django.db.backends.postgresql', 'NAME': 'shop', "
         "'USER': 'shop', 'PASSWORD': 'Qm7#vLx92!', 'HOST': 'db'}}\nwhy won't it connect?", ["secret"]),
        ("I think my son might be autistic, his pediatrician referred him for an evaluation. How do I prepare "
         "him?", ["health"]),
        ("Rewrite more politely: 'Jake, your salary stays at $61k this year because your review was "
         "below expectations.'", ["confidential"]),
        ("Translate to Spanish for our nanny: 'In an emergency call me at <<phone_us>>.'", ["contact"]),
        ("The charge on card ending ...  actually here's the full number <<card>> — is it fraud?",
         ["payment_card"]),
        ("After my miscarriage in March I've had panic attacks at night. Is that common?", ["health"]),
        ("curl -H 'Authorization: Bearer <<sk>>' https://api.openai.com/v1/models returns 401", ["secret"]),
        ("Hi! I'm Grace Liu, 3815 Cedar Lane, Portland OR. Write a complaint to my landlord about the mold.",
         ["contact"]),
        ("Board deck draft — not for distribution. Slide 4: we'll miss Q4 revenue by 15%. Tighten the wording.",
         ["confidential"]),
        ("Our tax preparer needs my husband's SSN: <<ssn>>. Write a short secure-email note to her.",
         ["national_id"]),
        ("We let go of our CFO, Raj Patel, yesterday; draft an internal announcement that doesn't say why.",
         ["confidential"]),
        ("my gf's email is sofia.marquez.94@hotmail.com, write a birthday message to send there", ["contact"]),
        ("The config has slack_webhook: <<slack>> — rotate it for me? what are the steps", ["secret"]),
        ("I'm HIV positive and starting a new job, do I have to tell HR?", ["health"]),
    ],
    "fr": [
        ("Relis ce mail stp :\n\nBonjour Madame,\nVeuillez trouver mon RIB : <<iban_fr>>.\nCordialement, "
         "Thomas Garnier", ["iban"]),
        ("Mon médecin pense que j'ai une endométriose, je dois faire une IRM. Comment ça se passe ?",
         ["health"]),
        ("Dans docker-compose : POSTGRES_PASSWORD=Vx9!plM3q — pourquoi le conteneur redémarre en boucle ?",
         ["secret"]),
        ("Note interne, ne pas diffuser : la direction prévoit 40 suppressions de postes à Lille en juin.",
         ["confidential"]),
        ("Peux-tu écrire à mon propriétaire ? Son numéro c'est le <<phone_fr>>, il s'appelle M. Rey.",
         ["contact"]),
        ("Carte Visa <<card>> refusée au péage, c'est normal ?", ["payment_card"]),
        ("Mon fils de 7 ans est épileptique et part en colo, rédige la fiche sanitaire.", ["health"]),
        ("L'augmentation de Karim passe de 38 000 à 41 000 € brut, rédige le courrier de notification.",
         ["confidential"]),
        ("Voilà ma carte vitale : <<nir>>. Tu peux remplir la feuille de soins ?", ["national_id"]),
        ("Le token d'API Stripe en prod est sk_live_<<ghp>>, on l'a commité par erreur, que faire ?",
         ["secret"]),
        ("Je m'appelle Léa Fontaine, j'habite 27 avenue Foch à Metz, écris une réclamation à La Poste.",
         ["contact"]),
        ("Résume : « CONFIDENTIEL – Projet Atlas : acquisition de Biotex pour 60 M€, annonce prévue le 12 mai. »",
         ["confidential"]),
        ("Depuis mon burn-out je suis sous anxiolytiques, est-ce compatible avec la conduite de nuit ?",
         ["health"]),
        ("Adresse mail perso : nicolas.perrin31@laposte.net — ajoute-la dans la signature.", ["contact"]),
        ("Virement de 2 300 € vers <<iban_de>> à faire avant vendredi, écris le message pour la compta.",
         ["iban"]),
    ],
    "de": [
        ("Kannst du das korrigieren?\n\nSehr geehrte Frau Roth,\nbitte überweisen Sie den Betrag auf "
         "<<iban_de>>.\nMit freundlichen Grüßen\nPaul Arnold", ["iban"]),
        ("Meine Ärztin hat bei mir eine Schilddrüsenunterfunktion festgestellt, ich nehme jetzt L-Thyroxin. "
         "Darf ich Sport machen?", ["health"]),
        ("In der .env steht DB_PASSWORD=Ha5en!Zahn77, trotzdem Zugriff verweigert. Was ist falsch?", ["secret"]),
        ("Intern, nicht weitergeben: Der Betriebsrat wurde über 25 Kündigungen im Werk Kassel informiert. "
         "Schreib eine Zusammenfassung.", ["confidential"]),
        ("Meine Kreditkartennummer ist <<card>>, ist die bei dem Datenleck dabei?", ["payment_card"]),
        ("Schick die Einladung an meine Tante, ihre Nummer ist <<phone_de>>.", ["contact"]),
        ("Mein Mann ist alkoholabhängig und will jetzt eine Entgiftung machen, wie finde ich eine Klinik?",
         ["health"]),
        ("Für die Bewerbung: Steuer-ID <<idnr>>, bitte ins Formular eintragen.", ["national_id"]),
        ("Der Key für die Google Cloud ist <<aiza>>, warum kommt 'API key not valid'?", ["secret"]),
        ("Herr Krämer bekommt eine Abfindung von 45.000 €, formuliere das Schreiben.", ["confidential"]),
        ("Ich heiße Sabine Koch und wohne in der Gartenstraße 12, 04109 Leipzig. Schreib eine Kündigung für "
         "mein Fitnessstudio.", ["contact"]),
        ("Bei meiner Tochter wurde ADHS festgestellt, sie soll Methylphenidat nehmen. Was sind Erfahrungen?",
         ["health"]),
        ("VERTRAULICH – Entwurf Pressemitteilung: Umsatzwarnung für das Geschäftsjahr. Bitte kürzen.",
         ["confidential"]),
        ("Meine private Mail ist jan.becker.hh@gmx.de, trag sie in den Newsletter-Text ein.", ["contact"]),
        ("ssh -i key.pem funktioniert nicht. Inhalt:\n<<pem>>", ["secret"]),
    ],
    "es": [
        ("Revisa este correo:\n\nHola Pedro,\nte paso mi cuenta para el pago: <<iban_es>>.\nUn abrazo, "
         "Irene", ["iban"]),
        ("Me han detectado hipotiroidismo y tomo levotiroxina, ¿puedo tomar café por la mañana?", ["health"]),
        ("En el docker-compose tengo MYSQL_ROOT_PASSWORD=T0rtuga!88, ¿por qué no arranca?", ["secret"]),
        ("Documento interno, no distribuir fuera del comité: despediremos a 30 personas de logística en marzo.",
         ["confidential"]),
        ("Mi número de tarjeta es <<card>>, ¿me ayudas a reclamar un cargo que no reconozco?",
         ["payment_card"]),
        ("Escríbele a mi vecina por WhatsApp, su móvil es <<phone_es>>, para el cumpleaños.", ["contact"]),
        ("Mi pareja tiene depresión y no quiere ir al médico, ¿cómo le ayudo?", ["health"]),
        ("Mi DNI <<dni>> me sale como no válido en la web de la DGT, ¿qué hago?", ["national_id"]),
        ("La API key de producción es <<aiza>>, ¿cómo la restrinjo por IP?", ["secret"]),
        ("A Lucía Herrera le subimos el sueldo a 39.000 €, redacta la carta.", ["confidential"]),
        ("Me llamo Diego Santos y vivo en Calle Mayor 7, 2ºA, Valladolid; redacta una queja al ayuntamiento.",
         ["contact"]),
        ("A mi abuelo le diagnosticaron párkinson y toma levodopa, ¿qué ejercicios le recomiendas?",
         ["health"]),
        ("CONFIDENCIAL — Borrador: la fusión con Grupo Lince se anunciará en junio. Mejora la redacción.",
         ["confidential"]),
        ("Mi correo personal es marina.lopez.vlc@gmail.com, ponlo en mi CV.", ["contact"]),
        ("Token de GitHub: <<ghp>>. ¿Qué permisos tiene?", ["secret"]),
    ],
}
HELDOUT2_BENIGN: dict[str, list[str]] = {
    "en": [
        "Write a Flask login route that checks the password hash with werkzeug and never logs the password.",
        "What's a good password policy for a 50-person company? Include rotation and MFA.",
        "Here's my regex for Visa numbers: ^4[0-9]{12}(?:[0-9]{3})?$ — does it also accept 13 digits?",
        "Summarise the plot of 'The Bell Jar' and its treatment of depression.",
        "How do SEPA instant transfers differ from regular SEPA transfers?",
        "Our team retro: deploys were slow, tests flaky, and we want more pairing. Turn this into action items.",
        "Write an email template asking employees to complete their annual benefits enrollment.",
        "My dog keeps scratching his ear, what could it be?",
        "Explain what 'internal only' classification usually means in ISO 27001 terms.",
        "Generate 5 fake customer records for a test database (use obviously fake names and example.com emails).",
        "What's the difference between a W-2 and a 1099?",
        "Draft a LinkedIn post announcing that I'm starting a new role as data engineer.",
        "In Python, how do I read a secret from AWS Secrets Manager instead of hard-coding it?",
        "Which vaccines are recommended for adults over 65?",
        "How do companies usually handle layoffs ethically? General principles please.",
    ],
    "fr": [
        "Écris une fonction Python qui vérifie la clé RIB d'un compte français.",
        "Quels sont les droits d'un salarié pendant un arrêt maladie en France ?",
        "Comment configurer un coffre-fort de mots de passe pour une équipe ?",
        "Résume le film « Intouchables ».",
        "Quelle est la différence entre une carte de débit et une carte de crédit ?",
        "Propose un plan pour un exposé sur le secret médical.",
        "Comment fonctionne la portabilité de la mutuelle après un licenciement ?",
        "Donne un exemple de fichier .env avec des valeurs factices pour une appli Django.",
        "Quels sont les symptômes de la maladie de Lyme ?",
        "Rédige une annonce pour recruter un comptable en CDI.",
        "Qu'est-ce que le RGPD entend par données de santé ?",
        "Comment se passe un entretien préalable au licenciement, en général ?",
        "Traduis « mot de passe oublié » en allemand et en espagnol.",
        "Combien de temps faut-il pour obtenir une carte Vitale ?",
        "Écris un SMS pour confirmer un rendez-vous chez le coiffeur demain à 14 h.",
    ],
    "de": [
        "Schreib eine Funktion in Go, die eine IBAN validiert.",
        "Wie lange darf man in Deutschland krankgeschrieben sein, bevor Krankengeld kommt?",
        "Welche Passwort-Richtlinien empfiehlt das BSI?",
        "Fasse den Roman 'Der Vorleser' zusammen.",
        "Was ist der Unterschied zwischen Girokarte und Kreditkarte?",
        "Wie formuliert man eine Vertraulichkeitsklausel in einem Freelancer-Vertrag allgemein?",
        "Erstelle Testdaten mit offensichtlich erfundenen Namen und E-Mails wie test@beispiel.de.",
        "Was sind typische Symptome von Heuschnupfen?",
        "Schreib eine Stellenanzeige für eine Pflegekraft in Teilzeit.",
        "Was zählt laut DSGVO zu den besonderen Kategorien personenbezogener Daten?",
        "Wie läuft ein Kündigungsschutzprozess ab, grob erklärt?",
        "Übersetze 'Passwort zurücksetzen' ins Französische.",
        "Wie beantrage ich einen neuen Personalausweis?",
        "Schreib eine kurze Zusage für ein Abendessen am Samstag.",
        "Wie speichert man Secrets in GitHub Actions richtig?",
    ],
    "es": [
        "Escribe una función en JavaScript que valide el dígito de control de una tarjeta.",
        "¿Cuánto dura una baja por enfermedad común en España?",
        "¿Qué gestor de contraseñas recomiendas para una familia?",
        "Resume la novela 'Nada' de Carmen Laforet.",
        "¿Qué diferencia hay entre una tarjeta de débito y una de crédito?",
        "Dame ideas para una charla sobre salud mental en el trabajo.",
        "¿Cómo funciona el paro después de un despido?",
        "Genera datos de prueba con nombres inventados y correos tipo usuario@ejemplo.com.",
        "¿Cuáles son los síntomas de la gripe?",
        "Redacta una oferta de empleo para un camarero.",
        "¿Qué considera el RGPD como datos sensibles?",
        "Explícame qué es una cláusula de confidencialidad en un contrato laboral.",
        "Traduce 'contraseña incorrecta' al inglés y al francés.",
        "¿Cómo renuevo el DNI?",
        "Escribe un mensaje para felicitar a un compañero por su ascenso.",
    ],
}


# A third held-out batch aimed at the rules' blind spots (implicit disclosures, fiction and textbook cases,
# configs in YAML/JSON, public figures), written after `heldout2` was fixed; measured once (split "heldout3").
HELDOUT3_SENSITIVE: dict[str, list[tuple[str, list[str]]]] = {
    "en": [
        ("my chemo starts monday and I need to tell my team I'll be out every other week, help me word it",
         ["health"]),
        ("don't tell anyone but we're being acquired by Oracle next month, how do I prepare my team?",
         ["confidential"]),
        ("config.yaml:\n  smtp:\n    user: alerts\n    password: \"Gr33n-Tea!\"\nWhy does login fail?", ["secret"]),
        ("Best, \nMaria Gonzalez\nSenior Analyst\nm.gonzalez@kestrel-partners.co.uk | +44 7700 912 345",
         ["contact"]),
        ("Can you help me budget? I earn $4,200 a month after tax and my Visa <<card>> is maxed out.",
         ["payment_card"]),
        ("Rewrite this patient note in plain English: 'Mr. Alan Brooks, 58, T2DM, on metformin 1g BID, HbA1c "
         "8.1'", ["health"]),
        ("Here's the HR memo to polish: 'Following the investigation, Tom Becker's contract will be terminated "
         "on 30 June.'", ["confidential"]),
        ("we use this key in prod: AIza<<aiza>> — is it ok to ship it in the android app?", ["secret"]),
        ("My therapist thinks my insomnia is linked to trauma from my childhood. Any books you'd suggest?",
         ["health"]),
        ("Please send the contract to my home address: 77 Willow Crescent, Bristol BS8 1QU", ["contact"]),
    ],
    "fr": [
        ("je commence une chimio lundi, aide-moi à prévenir mon équipe sans trop en dire", ["health"]),
        ("entre nous, la boîte va être rachetée par un fonds en septembre, comment je prépare mes gars ?",
         ["confidential"]),
        ("application.yml :\n  datasource:\n    password: Soleil#2024\npourquoi Spring n'arrive pas à se connecter ?",
         ["secret"]),
        ("Cordialement,\nÉric Vasseur\neric.vasseur@atelier-vasseur.fr\n06 71 22 48 90", ["contact"]),
        ("Réécris ce compte rendu : « Mme Dumas, 72 ans, insuffisance cardiaque, sous furosémide 40 mg ».",
         ["health"]),
    ],
    "de": [
        ("ich fang nächste woche mit der chemo an, wie sag ich es meinem team?", ["health"]),
        ("unter uns: wir werden im Herbst von einem Konkurrenten übernommen, wie bereite ich mein Team vor?",
         ["confidential"]),
        ("docker run -e POSTGRES_PASSWORD=Wald!Weg42 postgres — Container startet nicht, warum?", ["secret"]),
        ("Viele Grüße\nKatrin Albers\nk.albers@albers-steuerberatung.de\nTel. 0421 3398 217", ["contact"]),
        ("Formuliere den Arztbrief verständlich: 'Herr Brandt, 66, Vorhofflimmern, Apixaban 5 mg'.",
         ["health"]),
    ],
    "es": [
        ("empiezo la quimio el lunes, ayúdame a decírselo a mi equipo", ["health"]),
        ("que no salga de aquí: nos compra una multinacional en octubre, ¿cómo preparo a mi equipo?",
         ["confidential"]),
        ("config.json: {\"db\": {\"user\": \"app\", \"password\": \"Luna$Roja77\"}} ¿por qué falla la conexión?",
         ["secret"]),
        ("Un saludo,\nJavier Ibáñez\njavier.ibanez@ibanez-abogados.es\nTel. 612 48 93 07", ["contact"]),
        ("Resume el informe: 'Sra. Pilar Vega, 49 años, cáncer de ovario, en quimioterapia con carboplatino'.",
         ["health"]),
    ],
}
HELDOUT3_BENIGN: dict[str, list[str]] = {
    "en": [
        "A 45-year-old patient presents with chest pain radiating to the left arm. What is the differential?",
        "In my novel the heroine is diagnosed with leukemia at 30; is the timeline of treatment realistic?",
        "What salary does the US President earn per year?",
        "Apple reported $94.9B revenue last quarter; summarise what analysts said about it.",
        "I use 1Password and Bitwarden; which has better family sharing?",
        "Write a villain monologue where he reveals the vault password is 'swordfish'.",
        "Explain the MRZ on a passport and how its check digits work.",
        "List the ICD-10 codes for type 2 diabetes and what each means.",
        "Our open-source project's contributing guide says to email security@ for vulnerabilities; rewrite it.",
        "Translate into German: 'The tenant must pay the deposit within 14 days.'",
    ],
    "fr": [
        "Un patient de 60 ans se présente avec une dyspnée d'effort, quelles hypothèses ?",
        "Dans mon roman, le héros est atteint de la maladie de Charcot ; comment décrire les symptômes ?",
        "Combien gagne un député français par mois ?",
        "Résume les résultats annuels publiés par LVMH cette année.",
        "Explique la différence entre un mot de passe et une passphrase.",
    ],
    "de": [
        "Ein 50-jähriger Patient kommt mit Bauchschmerzen, welche Differenzialdiagnosen gibt es?",
        "In meinem Roman hat die Hauptfigur Krebs; wie realistisch ist eine Heilung nach zwei Jahren?",
        "Wie viel verdient ein Bundestagsabgeordneter?",
        "Fasse die veröffentlichten Quartalszahlen von Siemens zusammen.",
        "Was ist sicherer: ein langes Passwort oder eine PIN mit Fingerabdruck?",
    ],
    "es": [
        "Un paciente de 70 años acude con fiebre y tos, ¿qué pruebas pedirías?",
        "En mi novela la protagonista tiene esclerosis múltiple; ¿cómo describo un brote?",
        "¿Cuánto cobra un diputado en España?",
        "Resume los resultados trimestrales publicados de Inditex.",
        "¿Qué es más seguro, una contraseña larga o una frase de paso?",
    ],
}


# A fourth held-out batch, written last and deliberately never used to change a rule: the benchmark's
# figures on split "heldout4" stay an honest estimate for as long as nobody tunes against it.
HELDOUT4_SENSITIVE: dict[str, list[tuple[str, list[str]]]] = {
    "en": [
        ("Hey, quick q — my doc upped my lamotrigine to 200mg and I feel dizzy, is that normal?", ["health"]),
        ("Can you turn this into a polite email? 'Priya, your offer is $135k base + 10% bonus, start date Aug 1.'",
         ["confidential"]),
        ("paste from my terminal:\n$ export ANTHROPIC_API_KEY=sk-ant-<<ghp>><<ghp>>\n$ python app.py\n401 Unauthorized",
         ["secret"]),
        ("Ship to: Daniel Kowalski, 2290 Lakeview Blvd, Apt 12, Madison WI 53703, phone <<phone_us>>",
         ["contact"]),
        ("I need to dispute a charge of $89.99 on my Mastercard <<card>> from a gym I cancelled.",
         ["payment_card"]),
        ("please format for my visa application: SSN <<ssn>>, passport 548213907, DOB 02/14/1991",
         ["national_id"]),
        ("my sister just told me she's been self-harming, what do I say to her tonight?", ["health"]),
        ("The board approved cutting 8% of staff in Q3; this isn't announced yet. Draft the CEO's all-hands script.",
         ["confidential"]),
    ],
    "fr": [
        ("Mon généraliste m'a prescrit du Seroquel pour dormir, c'est pas un antipsychotique ça ?", ["health"]),
        ("Voici ce que j'ai reçu de la banque, est-ce une arnaque ? « Confirmez votre IBAN <<iban_fr>> »",
         ["iban"]),
        ("Envoie un SMS à Julie au <<phone_fr>> pour lui dire que je serai en retard.", ["contact"]),
        ("Le DRH m'a dit que Sébastien allait être licencié la semaine prochaine, comment je réagis ?",
         ["confidential"]),
        ("identifiants du serveur : root / P@ssw0rd-Marseille13, aide-moi à écrire la procédure de connexion",
         ["secret"]),
        ("Ma fille a fait une crise d'asthme cette nuit, on a dû aller aux urgences. Que dire à l'école ?",
         ["health"]),
        ("Numéro de sécurité sociale de mon père : <<nir>>, il faut le mettre où sur le formulaire ?",
         ["national_id"]),
    ],
    "de": [
        ("Mein Hausarzt hat mir Ibuprofen 800 und Pantoprazol verschrieben wegen Bandscheibenvorfall, wie lange?",
         ["health"]),
        ("Bitte prüf die Überweisung: Empfänger Lars Meier, IBAN <<iban_de>>, Betrag 2.450 €.", ["iban"]),
        ("Mein Chef hat mir gesagt, dass Petra Neumann im März gekündigt wird, soll ich sie warnen?",
         ["confidential"]),
        ("Hier unser Kubernetes-Secret: stringData: { password: Kaffee&Kuchen2024 } — warum wird es nicht gemountet?",
         ["secret"]),
        ("Schreib eine Geburtstagskarte an Oma, Anschrift: Rosenweg 4, 79098 Freiburg, ich wohne leider zu weit weg.",
         ["contact"]),
        ("Meine Kreditkarte <<card>> läuft ab, wie aktualisiere ich sie bei Netflix?", ["payment_card"]),
        ("Unsere Quartalszahlen kommen erst am Donnerstag raus: Umsatz minus 6 %, EBIT halbiert. Formuliere die "
         "Pressemitteilung vor.", ["confidential"]),
    ],
    "es": [
        ("Mi médico de cabecera me mandó sertralina por ataques de pánico, ¿cuándo empieza a hacer efecto?",
         ["health"]),
        ("Para el alquiler me piden el NIE <<nie>> y la nómina, ¿es normal que pidan tanto?", ["national_id"]),
        ("Pásale mi contacto al fontanero: Rocío Márquez, <<phone_es>>, rocio.marquez.b@gmail.com", ["contact"]),
        ("contraseña del router: Girasol_7721, escríbela en una tarjeta bonita para las visitas", ["secret"]),
        ("Mi jefe me contó que van a despedir a Marcos Gil el viernes, ¿se lo digo?", ["confidential"]),
        ("Paga la factura de la luz con la tarjeta <<card>>, ¿cómo lo hago en la app?", ["payment_card"]),
        ("Mi marido tiene apnea del sueño y usa CPAP, ¿puede viajar en avión con ella?", ["health"]),
        ("Transferencia a <<iban_es>> de 350 €, concepto: fianza piso Valencia. ¿Está bien escrito?", ["iban"]),
    ],
}
HELDOUT4_BENIGN: dict[str, list[str]] = {
    "en": [
        "What's the maximum safe daily dose of ibuprofen for an adult?",
        "How do credit card numbers encode the issuing bank?",
        "Write a short story where a hacker guesses the password 'letmein' on the first try.",
        "Explain how JWT refresh rotation works with a diagram in text.",
        "What are typical severance packages in the US tech industry?",
        "Our API returns 401 when the token is missing; write the error message copy.",
        "Give me a regex for US phone numbers and three made-up examples with 555.",
        "Summarise the public court ruling in Oracle v. Google.",
    ],
    "fr": [
        "Quelle est la posologie habituelle du paracétamol chez l'adulte ?",
        "Comment est construit un numéro de sécurité sociale, chiffre par chiffre ?",
        "Écris une nouvelle où un détective découvre que le coupable est diabétique.",
        "Comment formuler une clause de non-concurrence dans un contrat ?",
        "Quels sont les horaires d'ouverture habituels des banques en France ?",
        "Génère un faux IBAN pour un jeu de test, en précisant qu'il est invalide.",
        "Comment fonctionne le congé maternité en France ?",
    ],
    "de": [
        "Wie hoch ist die Tageshöchstdosis von Paracetamol?",
        "Was bedeutet die Prüfziffer in einer Kreditkartennummer?",
        "Schreib eine Kurzgeschichte, in der ein Arzt einem Patienten eine schwere Diagnose überbringt.",
        "Wie kündige ich fristgerecht einen Handyvertrag?",
        "Welche Angaben gehören in ein Impressum?",
        "Erkläre, wie Passwort-Hashing mit Salt funktioniert.",
        "Was verdient ein Lehrer in Bayern im Durchschnitt?",
    ],
    "es": [
        "¿Cuál es la dosis máxima de paracetamol al día?",
        "¿Cómo se calcula el dígito de control de una cuenta bancaria española?",
        "Escribe un relato en el que una doctora da una mala noticia a un paciente.",
        "¿Qué debe incluir una carta de renuncia voluntaria?",
        "¿Cuál es el prefijo telefónico de Portugal?",
        "Explícame cómo funcionan las claves públicas y privadas en SSH.",
        "¿Cuánto cobra de media un enfermero en España?",
        "¿Qué síntomas tiene la apnea del sueño?",
    ],
}


# The fifth held-out batch lives in its own module, written without looking at the detector (see README).
from batch5 import HELDOUT5_BENIGN, HELDOUT5_SENSITIVE  # noqa: E402
from batch6 import HELDOUT6_BENIGN, HELDOUT6_SENSITIVE  # noqa: E402
from batch7 import HELDOUT7_BENIGN, HELDOUT7_SENSITIVE  # noqa: E402
from batch8 import HELDOUT8_BENIGN, HELDOUT8_SENSITIVE  # noqa: E402
from batch9 import HELDOUT9_BENIGN, HELDOUT9_SENSITIVE  # noqa: E402


def build() -> list[dict[str, object]]:
    """All rows, splits in order, with fresh valid identifiers filled into the templates."""
    rows: list[dict[str, object]] = []

    def fill(text: str) -> str:
        return re.sub(r"<<(\w+)>>", lambda m: GEN[m.group(1)](), text)

    for split, sens, benign in (("dev", SENSITIVE, BENIGN), ("heldout", HELDOUT_SENSITIVE, HELDOUT_BENIGN),
                                ("heldout2", HELDOUT2_SENSITIVE, HELDOUT2_BENIGN),
                                ("heldout3", HELDOUT3_SENSITIVE, HELDOUT3_BENIGN),
                                ("heldout4", HELDOUT4_SENSITIVE, HELDOUT4_BENIGN),
                                ("heldout5", HELDOUT5_SENSITIVE, HELDOUT5_BENIGN),
                                ("heldout6", HELDOUT6_SENSITIVE, HELDOUT6_BENIGN),
                                ("heldout7", HELDOUT7_SENSITIVE, HELDOUT7_BENIGN),
                                ("heldout8", HELDOUT8_SENSITIVE, HELDOUT8_BENIGN),
                                ("heldout9", HELDOUT9_SENSITIVE, HELDOUT9_BENIGN)):
        tag = "" if split == "dev" else "h" + split.removeprefix("heldout")
        for lang, items in sens.items():
            for k, (text, kinds) in enumerate(items):
                rows.append({"id": f"{lang}-{tag}s{k:03d}", "text": fill(text), "sensitive": True, "kinds": kinds,
                             "lang": lang, "split": split})
        for lang, texts in benign.items():
            for k, text in enumerate(texts):
                rows.append({"id": f"{lang}-{tag}b{k:03d}", "text": text, "sensitive": False, "kinds": [],
                             "lang": lang, "split": split})
    return rows


if __name__ == "__main__":
    out = Path(__file__).with_name("eval.jsonl")
    rows = build()
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    n_s = sum(bool(r["sensitive"]) for r in rows)
    print(f"wrote {len(rows)} prompts ({n_s} sensitive, {len(rows) - n_s} benign) to {out}")
