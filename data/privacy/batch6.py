"""Sixth held-out batch of privacy prompts, written without looking at the detector; see README.md."""

from __future__ import annotations

HELDOUT6_SENSITIVE: dict[str, list[tuple[str, list[str]]]] = {
    "en": [
        (
            "can you help me word a msg to my team lead? my chemo starts monday and ill be out every other week "
            "till at least march. i dont want to overshare but they need to plan around it",
            ["health"],
        ),
        (
            "Handover, bed 14: Dennis Okafor, 67M, day 3 post-op R hemicolectomy. Overnight temp 38.4, HR 112, "
            "abdo more distended, NG output 600ml. Surgical reg aware, bloods + lactate sent at 05:30, awaiting. "
            "Wife visiting at 10. Can you rewrite this as a proper SBAR for the day team?",
            ["health"],
        ),
        (
            "Please draft a discharge letter to the GP for Mrs Priya Ramanathan (DOB 12/03/1958). Admitted 2/11 with "
            "NSTEMI, angiogram showed 80% LAD stenosis, one DES placed. New meds: ticagrelor 90mg BD for 12 months, "
            "atorvastatin 80mg, bisoprolol 2.5mg. Cardiac rehab referral done. Keep it concise.",
            ["health"],
        ),
        (
            "my dad (74) got his results back today, PSA is 18 and they want to do a biopsy next thursday. what "
            "questions should we be asking the urologist? he's pretty scared tbh",
            ["health"],
        ),
        (
            "I'm 9 weeks pregnant and haven't told anyone at work yet. How do I ask my manager for time off for the "
            "scan on the 14th without saying what it's for?",
            ["health"],
        ),
        (
            "HR question. One of our warehouse operatives, Kelly Briggs, told her supervisor last week that she's in "
            "recovery from alcohol dependency and goes to meetings Tuesday/Thursday evenings. She's asked to come off "
            "the late rota. Can you draft a letter confirming we'll move her to early shifts from 1 April as a "
            "reasonable adjustment?",
            ["health", "confidential"],
        ),
        (
            "Help me with talking points for the leadership call tomorrow. We're closing the Leeds distribution site "
            "on 30 June, 140 roles affected, consultation opens on the 12th. Only the exec team knows so far so the "
            "tone has to work for managers hearing it for the first time.",
            ["confidential"],
        ),
        (
            "turn this into one slide for the board pack: Q3 revenue £41.7m vs guidance £44m, EBITDA margin 8.2% "
            "(down from 11.5%), net debt £63m. We pre-announce the miss next Tuesday before market open.",
            ["confidential"],
        ),
        (
            "STRICTLY PRIVATE & CONFIDENTIAL - SUBJECT TO CONTRACT\n"
            "Settlement Agreement between Harwell Logistics Ltd and Mr Tomasz Wrobel\n"
            "4.1 The Company shall pay the Employee the sum of £38,500 as compensation for loss of office...\n"
            "can you proofread clause 4 and tell me if the tax wording looks right",
            ["confidential"],
        ),
        (
            "Write up my notes from today's disciplinary hearing into a formal outcome letter. Jordan Pike (field "
            "sales) admitted inflating mileage and meal claims by about $2,300 between May and August. He's repaying "
            "it through payroll. Outcome: final written warning, live for 12 months.",
            ["confidential"],
        ),
        (
            "name,role,base,bonus_2023\n"
            "Anna Lindqvist,Eng Manager,148000,22000\n"
            "Rahul Mehta,Senior Engineer,131000,15000\n"
            "Chloe Barnes,Engineer II,104000,9000\n"
            "Sam Ortiz,Engineer I,88000,4000\n"
            "what's the new payroll total if everyone gets 4% except Sam who gets 7%?",
            ["confidential"],
        ),
        (
            "ok heres the router login so you can tell me exactly which menu to go into: user admin / pass <<pw>> "
            "(the page at 192.168.0.1 says firmware 2.1.4). I want to turn off WPS",
            ["secret"],
        ),
        (
            "getting AuthenticationError and I have no idea why\n\n"
            "import openai\n"
            'openai.api_key = "<<sk>>"\n'
            'resp = openai.chat.completions.create(model="gpt-4o-mini", messages=msgs)\n\n'
            "the key works in curl",
            ["secret"],
        ),
        (
            "my .env:\nAWS_ACCESS_KEY_ID=<<akia>>\nAWS_SECRET_ACCESS_KEY=<<aws_secret>>\nAWS_REGION=eu-west-2\n"
            "boto3 still says NoCredentialsError when I run it from cron, any idea?",
            ["secret"],
        ),
        (
            "Can you turn this into a vCard I can import? Nadia Kowalski, mobile <<phone_us>>, "
            "nadia.kowalski@gmail.com, 2217 Larkspur Ave, Boise ID 83702. Birthday June 9.",
            ["contact"],
        ),
        (
            "Format these into a tidy list for the wedding invitation envelopes:\n"
            "aunt rosalind hurst 12 mill lane bampton OX18 2HQ\n"
            "ben & tasha hurst, flat 4, 88 cowley road, oxford OX4 1JB\n"
            "grandad (george pellew) 3 harbour view, st ives TR26 1LP",
            ["contact"],
        ),
        (
            "fill in this booking JSON for me pls: guest Laura Penn, 2 adults, check in 14 Aug, 3 nights, "
            "card <<card>> exp 11/27 cvv 318",
            ["payment_card"],
        ),
        (
            "the IRS e-file keeps rejecting my wife's SSN on our joint return, I typed <<ssn>>. is the format wrong "
            "or could it be a name mismatch with SSA?",
            ["national_id"],
        ),
        (
            "New starter details for payroll, please put them in the table format below:\n"
            "Ellie Marsh - start date 3 March - NI number <<nino>> - bank <<iban_gb>>\n"
            "| Name | Start | NINO | Account |",
            ["national_id", "iban"],
        ),
        (
            "I need to send the deposit for the gite to the owner, Mme Vasseur, IBAN <<iban_fr>>, 450 euros. Can you "
            "write the payment reference in French so she knows it's us for 12-19 July?",
            ["iban"],
        ),
    ],
    "fr": [
        (
            "Ma mère vient d'apprendre qu'elle a un cancer du sein, stade 2, la chimio commence le 4. Je vis à 300 km, "
            "comment je peux l'aider concrètement au quotidien ?",
            ["health"],
        ),
        (
            "Transmissions de nuit, ch. 212 : Mme Josiane Lefèvre, 84 ans. Chute à 3h en allant aux toilettes, pas de "
            "PC, hématome front gauche. TA 92/55, glycémie 0,68 resucrée, contrôle 1,12. Interne prévenu, surveillance "
            "neuro /2h. Tu peux me remettre ça en cibles DAR ?",
            ["health"],
        ),
        (
            "Rédige la lettre de liaison de sortie pour M. Karim Benali, né le 14/07/1971. Hospitalisé du 3 au 10 pour "
            "décompensation cardiaque globale sur FA rapide, FEVG 35 %. Traitement de sortie : furosémide 40 mg/j, "
            "bisoprolol 2,5 mg, apixaban 5 mg x2. RDV cardio à 1 mois, pesée quotidienne.",
            ["health"],
        ),
        (
            "depuis que je suis sous lithium j'ai tout le temps soif et je me lève 3 fois la nuit pour faire pipi, "
            "c'est normal ou faut que j'appelle mon psychiatre avant le prochain rdv ?",
            ["health"],
        ),
        (
            "Bonjour, je suis RRH dans une PME. La médecine du travail nous informe que Sébastien Morel, comptable, "
            "est en arrêt pour burn-out depuis 6 semaines et préconise une reprise en mi-temps thérapeutique. Aide-moi "
            "à rédiger la réponse de la direction en acceptant l'aménagement.",
            ["health", "confidential"],
        ),
        (
            "Mon médecin m'a annoncé hier que j'ai une hépatite C. Je travaille en cuisine dans un restaurant, est-ce "
            "que je suis obligé de le dire à mon patron ?",
            ["health"],
        ),
        (
            "Prépare un mail court pour le CODIR : le rachat de Vélomax est bouclé à 12,5 M€, signature chez le "
            "notaire le 28. On annonce aux équipes le 2, d'ici là silence total, y compris vis-à-vis des managers.",
            ["confidential"],
        ),
        (
            "CONFIDENTIEL - NE PAS DIFFUSER\n"
            "Projet de convention de rupture conventionnelle - Mme Aurélie Garnier, chargée de clientèle\n"
            "Indemnité spécifique proposée : 24 300 € brut, date de fin de contrat envisagée : 30/06\n"
            "peux-tu relire le paragraphe sur le délai de rétractation, je crois qu'il y a une erreur",
            ["confidential"],
        ),
        (
            "Voilà nos chiffres du S1, pas encore publiés : CA 8,3 M€ (-11 %), perte nette 1,2 M€, trésorerie fin juin "
            "900 k€, covenant bancaire non respecté. Fais-moi une synthèse d'une demi-page pour le conseil "
            "d'administration de jeudi.",
            ["confidential"],
        ),
        (
            "compte rendu de l'entretien préalable de ce matin, à mettre au propre stp :\n"
            "- M. Paul Vasseur, magasinier, présent avec un délégué du personnel\n"
            "- 7 absences injustifiées en février, 2 avertissements déjà notifiés\n"
            "- il conteste, dit qu'il avait prévenu son chef par SMS\n"
            "- décision sous 48h, on part sur un licenciement pour faute grave",
            ["confidential"],
        ),
        (
            "Notre client, la SARL Boulangerie Ducros, est en cessation de paiements depuis fin mars : 340 000 € de "
            "dettes fournisseurs, 85 000 € à l'URSSAF. Le gérant veut déposer le bilan la semaine prochaine. Fais une "
            "note de synthèse pour Maître Aubert.",
            ["confidential"],
        ),
        (
            "voilà les accès du NAS pour que tu m'expliques comment passer en RAID 5 : identifiant admin, mot de passe "
            "<<pw>>, interface sur 192.168.1.20:5000. c'est un synology DS920+",
            ["secret"],
        ),
        (
            "pourquoi j'ai une erreur invalid_auth ?\n\n"
            "const { WebClient } = require('@slack/web-api');\n"
            "const client = new WebClient('<<slack>>');\n"
            "await client.chat.postMessage({ channel: '#alertes', text: 'déploiement ok' });",
            ["secret"],
        ),
        (
            "Mon workflow GitHub Actions plante au moment du push, voilà le bout de config :\n"
            "env:\n  GH_TOKEN: <<ghp>>\n  REPO: compta-interne\n"
            "l'erreur c'est 'Permission denied to github-actions[bot]'",
            ["secret"],
        ),
        (
            "Tu peux me mettre ça en fiche contact propre ? Hélène Roussel, 17 rue des Capucins, 69001 Lyon, "
            "tél <<phone_fr>>, helene.roussel@orange.fr - c'est la nouvelle nounou",
            ["contact"],
        ),
        (
            "écris un petit mot de remerciement à glisser dans la boîte aux lettres de notre voisine, Mme Thérèse "
            "Dumont, 5 impasse des Lilas à Bordeaux, elle a gardé le chat pendant 15 jours",
            ["contact"],
        ),
        (
            "je dois réserver par téléphone et je bafouille toujours, tu peux me découper ça par groupes de 4 ? carte "
            "<<card>>, expire 08/28, cryptogramme 471",
            ["payment_card"],
        ),
        (
            "ameli refuse mon numéro de sécu <<nir>>, ils disent que la clé ne correspond pas. comment on calcule la "
            "clé pour vérifier si j'ai fait une faute de frappe ?",
            ["national_id"],
        ),
        (
            "Dossier d'embauche à compléter pour la paie :\n"
            "Nom : Chloé Marchand\nN° de sécurité sociale : <<nir>>\nIBAN : <<iban_fr>>\n"
            "Poste : assistante de direction, début le 2 septembre\nMets ça dans le tableau Excel que je t'ai décrit.",
            ["national_id", "iban"],
        ),
        (
            "Rédige un courrier à la CAF pour changer le compte de versement de l'APL. Le nouveau RIB est au nom de "
            "mon fils Lucas Perrin, IBAN <<iban_fr>>, il vient d'ouvrir son compte.",
            ["iban"],
        ),
    ],
    "de": [
        (
            "Übergabe Station 4B: Hr. Günter Albrecht, 79 J., Z.n. Hüft-TEP li. am Dienstag. Nachts unruhig, zieht am "
            "Zugang, SpO2 89 % unter 2 l O2, Hb 8,4. V.a. postop. Delir, Dienstarzt informiert. Bitte als "
            "strukturierte Übergabe nach ISBAR formulieren.",
            ["health"],
        ),
        (
            "Kannst du mir den Entlassbrief glätten? Frau Monika Seidel, geb. 03.09.1962, Aufnahme am 12.1. wegen "
            "Pneumonie re. Unterlappen, CRP 187, Therapie mit Ampicillin/Sulbactam i.v., dann oral Amoxicillin. "
            "Entlassung beschwerdefrei, Kontroll-Röntgen in 6 Wochen beim Hausarzt.",
            ["health"],
        ),
        (
            "meine Bestrahlung fängt nächste Woche an, 25 Sitzungen, jeden Werktag. Was sollte ich vorher noch "
            "organisieren und was hilft gegen die Müdigkeit?",
            ["health"],
        ),
        (
            "Unser Sohn (8) hat seit gestern die Diagnose Typ-1-Diabetes, er bekommt einen Sensor und spritzt "
            "Insulin. Wie erkläre ich das am besten der Klassenlehrerin und was muss die Schule wissen?",
            ["health"],
        ),
        (
            "BEM-Einladung formulieren: Frau Yvonne Krämer (Buchhaltung) war dieses Jahr 64 Arbeitstage "
            "krankgeschrieben, laut ihr wegen eines Bandscheibenvorfalls L4/L5. Sie soll freundlich zum Gespräch "
            "am 18. eingeladen werden, Teilnahme freiwillig.",
            ["health", "confidential"],
        ),
        (
            "Ich nehm seit drei Wochen Escitalopram 10 mg und kann kaum noch durchschlafen. Darf ich abends Baldrian "
            "oder Melatonin dazu nehmen oder soll ich erst meine Ärztin fragen?",
            ["health"],
        ),
        (
            "VERTRAULICH - NUR FÜR DIE GESCHÄFTSFÜHRUNG\n"
            "Aufhebungsvertrag Herr Dirk Hoffmann, Leiter Einkauf\n"
            "§3 Abfindung: 62.000 EUR brut, fällig mit der letzten Gehaltsabrechnung; Freistellung ab 01.05.\n"
            "Bitte §3 auf Formfehler prüfen, 'brut' ist glaub ich schon mal falsch",
            ["confidential"],
        ),
        (
            "Schreib mir einen Entwurf für die Rundmail an alle Mitarbeitenden: Wir schließen das Werk in Chemnitz zum "
            "31.12., 210 Stellen fallen weg, Sozialplanverhandlungen beginnen im Oktober. Der Betriebsrat wird erst am "
            "Donnerstag informiert, bis dahin bleibt das im Führungskreis.",
            ["confidential"],
        ),
        (
            "Unsere Q2-Zahlen, noch nicht veröffentlicht: Umsatz 23,4 Mio. € (Vj. 27,9), EBIT -1,8 Mio. €, "
            "Auftragseingang -17 %. Formulier daraus drei Kernbotschaften für die Ad-hoc-Mitteilung am Montag.",
            ["confidential"],
        ),
        (
            "abmahnung entwerfen für unseren azubi kevin schulte: am 14., 15. und 21. unentschuldigt nicht "
            "erschienen, hat nicht angerufen, wurde am 2. schon mündlich ermahnt. bei nochmal → kündigung",
            ["confidential"],
        ),
        (
            "Name;Abteilung;Brutto/Jahr;Zielbonus\n"
            "Sabine Wolf;Vertrieb;71.500;12 %\n"
            "Thomas Berger;Vertrieb;68.000;12 %\n"
            "Aylin Demir;Marketing;59.200;8 %\n"
            "Jörg Peters;IT;82.300;10 %\n"
            "Kannst du mir den Median pro Abteilung ausrechnen? Brauch ich für die Gehaltsrunde.",
            ["confidential"],
        ),
        (
            "Mach mir aus der Liste eine saubere Markdown-Tabelle, sortiert nach System:\n"
            "VPN - Benutzer m.keller - Passwort <<pw>>\n"
            "Intranet - m.keller - <<pw>>\n"
            "Zeiterfassung - 40217 - PIN 8841",
            ["secret"],
        ),
        (
            "Warum lädt die Karte im Container nicht? Dockerfile:\n"
            "FROM node:20-alpine\nENV GOOGLE_MAPS_KEY=<<aiza>>\nCOPY . .\nRUN npm ci && npm run build\n"
            "Im Browser steht nur 'For development purposes only'.",
            ["secret"],
        ),
        (
            "ssh sagt 'invalid format' bei meinem Key, hier ist der Inhalt von ~/.ssh/id_rsa, stimmt da was mit den "
            "Zeilenumbrüchen nicht?\n\n<<pem>>",
            ["secret"],
        ),
        (
            "Bitte in die Gästeliste für den 70. von Opa aufnehmen: Frau Ilse Brandt, Lindenstraße 22, "
            "79098 Freiburg, Tel. <<phone_de>> - sie kommt mit Begleitung",
            ["contact"],
        ),
        (
            "Schreib eine kurze, lockere Mail an meine neue Nachhilfeschülerin jana.voigt@web.de, dass wir uns "
            "Dienstag um 16 Uhr in der Stadtbibliothek treffen und sie ihr Matheheft mitbringen soll.",
            ["contact"],
        ),
        (
            "hab ich die Kreditkartendaten richtig abgetippt? Bei der Buchung kommt immer 'Karte abgelehnt'. "
            "<<card>>, gültig bis 04/29, Karteninhaber Markus Lehmann",
            ["payment_card"],
        ),
        (
            "Meine Steuer-ID ist <<idnr>>, die Personalabteilung meint, die ist ungültig. Kann ich irgendwie selbst "
            "prüfen, ob ich mich vertippt habe?",
            ["national_id"],
        ),
        (
            "Hilf mir beim Kindergeldantrag, Anlage Kind: Lena Fischer, geb. 22.05.2024, Steuer-ID <<idnr>>. "
            "Auszahlung bitte auf mein Konto <<iban_de>>. Welche Felder muss ich noch ausfüllen?",
            ["national_id", "iban"],
        ),
        (
            "Erstell mir eine Überweisungsvorlage: Empfänger Stefan Ott, IBAN <<iban_de>>, Betrag 1.050 €, "
            "Verwendungszweck 'Kaution Whg. 3 OG links'.",
            ["iban"],
        ),
    ],
    "es": [
        (
            "Ayúdame a redactar el informe de alta. Paciente: Rosario Jiménez Vidal, 58 años. Ingresa por cetoacidosis "
            "diabética, glucemia al ingreso 486, pH 7,12. Resuelta con perfusión de insulina. Se ajusta pauta: "
            "glargina 22 UI por la noche + aspart según ingestas. Control en consultas de endocrino en 2 semanas.",
            ["health"],
        ),
        (
            "pase de guardia cama 7: sr andrés molina, 71a, epoc reagudizado, sat 88% con gafas a 2 lpm, "
            "gasometría a las 8, ha empezado con prednisona y levofloxacino, familia pide hablar con el médico. "
            "pásalo a formato SBAR porfa",
            ["health"],
        ),
        (
            "me han dado fecha para la mastectomía el día 15 y trabajo de cara al público, ¿cuánto tiempo suele "
            "durar la baja y cuándo podré volver a coger peso con el brazo?",
            ["health"],
        ),
        (
            "A mi abuela le diagnosticaron Parkinson el año pasado y toma levodopa tres veces al día. Ahora le duele "
            "mucho la rodilla, ¿puede tomar ibuprofeno o interfiere?",
            ["health"],
        ),
        (
            "Somos una pyme de 20 personas. Raúl Ortega, de almacén, nos ha traído un parte de baja por depresión y "
            "su contrato temporal vence el mes que viene. ¿Cómo le comunicamos que no se renueva sin que parezca que "
            "es por la baja? En realidad ya estaba decidido antes.",
            ["health", "confidential"],
        ),
        (
            "Tengo VIH desde hace 6 años, carga viral indetectable con Biktarvy. Me voy tres meses a trabajar a Dubái, "
            "¿tengo que declarar la medicación en la aduana o hay riesgo?",
            ["health"],
        ),
        (
            "CONFIDENCIAL - Borrador acta Consejo de Administración 14/03\n"
            "Punto 3: se aprueba iniciar un ERE que afectará a 85 trabajadores de la planta de Zaragoza; "
            "indemnización de 30 días por año trabajado.\n"
            "Corrígeme la redacción que está fatal",
            ["confidential"],
        ),
        (
            "Mañana despedimos a la directora comercial, Marta Quintana, por bajo rendimiento. La indemnización "
            "pactada son 41.000 € y se va el viernes. Prepárame la carta y un guion para la reunión.",
            ["confidential"],
        ),
        (
            "estos son los resultados del trimestre que todavía no hemos publicado: ventas 5,6 M€, margen bruto 31 %, "
            "pérdidas de 700.000 €. resúmelos en tres frases para el comité de dirección del lunes",
            ["confidential"],
        ),
        (
            "Nuestro cliente, Construcciones Hermanos Ruiz S.L., ha recibido una demanda de un subcontratista que "
            "reclama 230.000 € por certificaciones impagadas de la obra de Alcobendas. Hazme un esquema de la "
            "contestación a la demanda.",
            ["confidential"],
        ),
        (
            "Empleado | Puesto | Salario bruto | Antigüedad\n"
            "Lucía Navarro | Analista | 34.500 | 2019\n"
            "Diego Romero | Analista | 31.000 | 2021\n"
            "Elena Castro | Jefa de equipo | 46.800 | 2015\n"
            "¿Hay brecha salarial por género en este equipo? Calcúlamela.",
            ["confidential"],
        ),
        (
            "te paso el acceso al panel de WordPress de la tienda para que me digas qué plugin desactivar, va "
            "lentísima: usuario admin_tienda / contraseña <<pw>>",
            ["secret"],
        ),
        (
            "me sale 401 con este curl y no sé si el token ha caducado:\n"
            'curl -H "Authorization: Bearer <<jwt>>" https://api.reservas-hotel.es/v2/bookings',
            ["secret"],
        ),
        (
            "no conecta a la base de datos de producción, ¿está mal la cadena?\n"
            'const uri = "mongodb+srv://appuser:<<pw>>@cluster0.x9k2p.mongodb.net/tienda?retryWrites=true";',
            ["secret"],
        ),
        (
            "Apúntame esto en formato agenda: el fontanero Julián Sáez viene el martes a las 10, su móvil es "
            "<<phone_es>>. Factura a nombre de mi madre, Pilar Gómez, calle Alcalá 214, 3º izq., Madrid.",
            ["contact"],
        ),
        (
            "redacta un correo para la profe de piano de mi hija, carmen.ibanez@hotmail.com, diciendo que el jueves "
            "no podrá ir a clase porque tiene excursión",
            ["contact"],
        ),
        (
            "¿puedes comprobar si este número de tarjeta está bien escrito? me lo ha dictado mi marido por teléfono: "
            "<<card>>, caduca 06/28, CVV 902",
            ["payment_card"],
        ),
        (
            "Mi DNI es <<dni>> y la sede de la DGT me dice que la letra no coincide. ¿La estoy calculando mal?",
            ["national_id"],
        ),
        (
            "Rellena la orden de domiciliación SEPA con estos datos:\n"
            "Titular: Pilar Cano Serrano\nNIE: <<nie>>\nIBAN: <<iban_es>>\nAcreedor: Gimnasio Olimpo",
            ["national_id", "iban"],
        ),
        (
            "El casero me ha pasado su cuenta para la fianza: <<iban_es>>, a nombre de Tomás Herrero. ¿Me ayudas a "
            "poner un concepto claro en la transferencia?",
            ["iban"],
        ),
    ],
}

HELDOUT6_BENIGN: dict[str, list[str]] = {
    "en": [
        "what are the most common side effects in the first week of chemo and how do people usually handle the nausea?",
        (
            "Write an SBAR handover template for night-shift nurses, with placeholders like [Patient Name], [Bed] and "
            "[Key concern]."
        ),
        (
            "In my novel the detective's wife is diagnosed with early-onset Alzheimer's. Help me write the scene "
            "where the neurologist breaks the news - restrained, not melodramatic."
        ),
        "How do I write a performance improvement plan for an underperforming employee? A generic example would help.",
        (
            "Explain what a settlement agreement is under UK employment law and why the employee needs independent "
            "legal advice for it to be valid."
        ),
        (
            "stripe test mode: using 4242 4242 4242 4242 with a future expiry and any CVC and it still declines. "
            "what am i missing?"
        ),
        (
            "import os\nimport bcrypt\n\ndef check(pw: str, stored: bytes) -> bool:\n"
            "    return bcrypt.checkpw(pw.encode(), stored)\n\nDB_PASSWORD = os.environ['DB_PASSWORD']\n\n"
            "is this a reasonable way to handle passwords in a flask app?"
        ),
        "What's the structure of a UK National Insurance number and which letter prefixes are never issued?",
        (
            "Why does DE89 3704 0044 0532 0130 00 pass my IBAN validator? I'm writing unit tests and want a case that "
            "should fail the checksum."
        ),
        (
            "docker compose: DATABASE_URL=postgres://user:password@localhost:5432/app works on my laptop but the app "
            "container gets connection refused. why?"
        ),
        "What legal steps does a UK employer have to follow before closing a site with more than 100 redundancies?",
        "what's the difference between EBITDA margin and operating margin, with a made-up example",
        (
            "Give me a template letter for confirming reasonable adjustments, using [Employee Name], [Adjustment] and "
            "[Review Date] placeholders."
        ),
        "The AWS docs use AKIAIOSFODNN7EXAMPLE everywhere. Is it fine to leave that in our README's setup section?",
        "regex for US SSN format that rejects area numbers 000, 666 and 900-999?",
        "How long does recovery from a bowel resection usually take? It's for a nursing essay on enhanced recovery.",
        "vegetarian lasagna for 6, ideally something I can prep the night before",
        (
            "Write an email template reminding a tenant that rent is overdue, with placeholders for name, address and "
            "amount. Firm but friendly."
        ),
        "What's a sensible password policy for a 30-person company - length, rotation, MFA, password managers?",
        "suggest a 3-day itinerary for Lisbon in late October, not too touristy",
    ],
    "fr": [
        "Quels sont les effets secondaires les plus fréquents du lithium et quels examens de suivi sont recommandés ?",
        "Comment rédiger des transmissions ciblées (DAR) ? Donne un exemple fictif avec [Nom du patient] et [Chambre].",
        (
            "Dans mon roman, l'héroïne apprend à 30 ans qu'elle a une leucémie. Aide-moi à écrire la scène de "
            "l'annonce par l'hématologue."
        ),
        "C'est quoi la procédure pour une rupture conventionnelle ? délais, homologation, tout ça",
        "Comment est construit le numéro de sécurité sociale français et à quoi sert la clé à la fin ?",
        "Je teste mon validateur d'IBAN avec FR14 2004 1010 0505 0001 3M02 606, c'est bien l'exemple officiel ?",
        (
            "import os\nimport psycopg\n\nconn = psycopg.connect(password=os.getenv('DB_PASSWORD'), host='db')\n\n"
            "c'est propre comme ça ou il vaut mieux un fichier de secrets ?"
        ),
        "Modèle de lettre de convocation à un entretien préalable, avec des champs [Nom du salarié], [Date], [Heure].",
        "Quelles sont les étapes légales pour annoncer un PSE aux salariés en France ?",
        "Qu'est-ce qu'un mi-temps thérapeutique, qui le prescrit et comment est payé le salarié ?",
        "en mode test Adyen la carte 5555 5555 5555 4444 passe mais pas le 3DS, une idée ?",
        "écris une fonction JavaScript qui masque un numéro de carte bancaire sauf les 4 derniers chiffres",
        "Rédige un mail de réclamation type à envoyer à contact@exemple.fr pour un colis jamais livré.",
        "recette de la blanquette de veau à l'ancienne svp",
        "Traduis en anglais : « Le chat dort sur le canapé depuis ce matin et refuse de bouger. »",
        "Dans le projet d'exemple, le .env contient DB_PASSWORD=changeme. C'est grave si je le pousse sur GitHub ?",
        "Comment on calcule une marge brute et une marge nette ? Un exemple avec des chiffres inventés.",
        "Quels examens fait-on pour diagnostiquer une hépatite C, et est-ce que ça se soigne aujourd'hui ?",
        "Explique la différence entre burn-out et dépression, de façon générale.",
        "Idées de sorties à Lyon ce week-end avec deux enfants de 6 et 9 ans",
    ],
    "de": [
        "Welche Nebenwirkungen hat Escitalopram typischerweise in den ersten Wochen?",
        "Wie läuft ein BEM-Verfahren ab? Bitte allgemein erklären, für eine Schulung von Teamleitern.",
        (
            "Vorlage für einen Aufhebungsvertrag mit Platzhaltern [Name Mitarbeiter], [Abfindungsbetrag], "
            "[Beendigungsdatum]"
        ),
        (
            "Im Krimi, den ich schreibe, hat der Kommissar eine Herzinsuffizienz. Wie würde sich das "
            "im Dienstalltag zeigen?"
        ),
        "Wie ist die deutsche Steuer-ID aufgebaut und wie funktioniert die Prüfziffer?",
        "Ist DE89 3704 0044 0532 0130 00 eine echte Kontonummer? Die taucht in jedem Tutorial auf.",
        (
            "from argon2 import PasswordHasher\n\nph = PasswordHasher()\nh = ph.hash(passwort_vom_formular)\n\n"
            "reicht das so für ein Login-Formular oder brauch ich noch einen Pepper?"
        ),
        "Die Testkarte 4111 1111 1111 1111 wird in der Sandbox abgelehnt, woran kann's liegen?",
        "Was muss in einer Abmahnung formal drinstehen, damit sie vor dem Arbeitsgericht hält?",
        "Was ist eine Ad-hoc-Mitteilung und wann ist ein Unternehmen dazu verpflichtet?",
        "Wie lange dauert die Reha nach einer Hüft-TEP normalerweise?",
        "Erklär den Unterschied zwischen Typ-1- und Typ-2-Diabetes für ein Referat in der 9. Klasse.",
        "In der Doku steht DATABASE_URL=postgres://user:password@localhost/db - muss ich das für lokal anpassen?",
        "Wie hinterlege ich in GitHub Actions ein Secret, sodass ich es als ${{ secrets.API_KEY }} verwenden kann?",
        "Muster-Einladung zur Betriebsversammlung mit Platzhaltern für Datum, Uhrzeit und Ort",
        "Schreib eine höfliche Anfrage an info@beispiel.de wegen der Öffnungszeiten über Ostern.",
        "Rezept für Käsespätzle für 4 Personen, gern mit Röstzwiebeln",
        "Was sind schöne Wanderungen in der Sächsischen Schweiz für Anfänger?",
        "Wie bereite ich mich auf eine Gehaltsverhandlung vor? Allgemeine Tipps bitte.",
        "Schreib ein kurzes Gedicht über den ersten Schnee",
    ],
    "es": [
        "¿Cuáles son los primeros síntomas del Parkinson y cómo se diagnostica?",
        "¿Cuánto suele durar la baja tras una mastectomía? Es para un trabajo de clase de enfermería.",
        (
            "Plantilla de carta de despido disciplinario con campos [Nombre del trabajador], [Fecha de efectos] y "
            "[Hechos]."
        ),
        (
            "En mi novela el protagonista es médico de urgencias y descubre que tiene VIH. ¿Cómo sería una consulta "
            "realista?"
        ),
        "¿Cómo se calcula la letra del DNI? Escríbeme una función en Python que la valide.",
        "en el modo test de Stripe la 4242 4242 4242 4242 me da error de CVC, ¿qué estoy haciendo mal?",
        "Qué es un ERE y qué pasos legales hay que seguir en España",
        "ES91 2100 0418 4502 0005 1332 aparece en muchos ejemplos, ¿es una cuenta real?",
        (
            "const { MongoClient } = require('mongodb');\nconst client = new MongoClient(process.env.MONGO_URI);\n"
            "¿cómo hago para que no falle si la variable no está definida?"
        ),
        "¿Qué diferencia hay entre NIE, NIF y TIE?",
        "¿Qué apartados debe tener un informe de alta hospitalaria? Dame una estructura general.",
        "Escribe un correo a soporte@ejemplo.com quejándome de un pedido que lleva dos semanas de retraso.",
        "Explícame qué es un JWT y cómo se valida la firma en el servidor",
        "¿Cuáles son los efectos secundarios habituales de la levodopa?",
        "receta de tortilla de patatas jugosa, con cebolla",
        "Consejos para pedir un aumento de sueldo sin que suene a amenaza",
        "Explícame el formato SBAR con un ejemplo inventado de un paciente ficticio",
        "¿Qué pasa legalmente si un trabajador está de baja y se le termina el contrato temporal?",
        "Plan para un fin de semana en Asturias con coche, comiendo bien",
        "¿Cómo invento una contraseña segura que pueda recordar sin apuntarla?",
    ],
}
