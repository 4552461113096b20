"""Fifth held-out batch of privacy prompts, written without looking at the detector; see README.md."""

from __future__ import annotations

HELDOUT5_SENSITIVE: dict[str, list[tuple[str, list[str]]]] = {
    "en": [
        ("my dad (74) just got told his PSA came back at 11.2 and they want a biopsy next week. "
         "what questions should I ask the urologist?", ["health"]),
        ("Can you help me write a message to my manager explaining I need two weeks off? I was diagnosed with "
         "major depressive disorder last month and started sertraline 50mg, still adjusting to it", ["health"]),
        ("Rewrite this for the handover sheet, keep it short: Pt Maria Gonzalez, bed 14, 38F, admitted w/ DKA, "
         "glucose 540 on arrival, on insulin drip, K+ low, hx of bulimia. Family not informed of ED hx per pt "
         "request.", ["health"]),
        ("im 9 weeks pregnant and havent told anyone at work yet, is it safe to keep taking my lamotrigine or "
         "should i call my neuro first", ["health"]),
        ("My brother Kevin relapsed again, he's been using fentanyl since he got out of rehab in March. "
         "How do I get a Narcan kit to keep at my place without making him feel watched?", ["health"]),
        ("Draft a reply to Priya: we're offering her the Senior Data Engineer role at $172,000 base + 0.15% "
         "equity, but she shouldn't share the number with the team since Tom on the same team is at $150k.",
         ["confidential"]),
        ("Summarize this for the board deck.\n\nINTERNAL - DO NOT DISTRIBUTE\nQ3 preliminary: revenue $48.3M "
         "(-12% YoY), EBITDA negative for the first time, we will miss guidance. Earnings call Nov 6.",
         ["confidential"]),
        ("Help me tighten this PIP for Jordan Ellis (support team). Issues: missed 9 of 14 SLA targets in Q2, "
         "two customer escalations, late to 11 standups. 60 days to show improvement or we move to "
         "termination.", ["confidential"]),
        ("We're cutting ~40 people in the Austin office on the 15th, nobody outside leadership knows yet. "
         "Can you write talking points for the managers who'll have to deliver it?", ["confidential"]),
        ("Privileged & confidential / attorney-client communication. Turn this into a one-pager: Halvorsen Foods "
         "has agreed to settle the wrongful termination claim brought by D. Okafor for $385,000, with an NDA "
         "and no admission of liability. Signing is scheduled for the 22nd.", ["confidential"]),
        ("why does this fail with 401?\n\nimport openai\nclient = openai.OpenAI(api_key=\"<<sk>>\")\n"
         "print(client.models.list())", ["secret"]),
        ("terraform keeps complaining, here's my provider block:\n\nprovider \"aws\" {\n  region     = "
         "\"us-east-2\"\n  access_key = \"<<akia>>\"\n  secret_key = \"<<aws_secret>>\"\n}", ["secret"]),
        ("Can you format this as a contact card? Linda Marsh, 4417 Old Orchard Rd, Skokie IL 60076, "
         "cell <<phone_us>>, linda.marsh62@gmail.com", ["contact"]),
        ("write a friendly text inviting my neighbor Dave Kowalski to the bbq saturday. his number is "
         "<<phone_us>>, he's at 12 Birchwood Ct, two doors down", ["contact"]),
        ("I keep getting 'card declined' on your checkout page. tried <<card>> exp 08/27 cvv 413 twice. "
         "whats going on??", ["payment_card"]),
        ("Please write an email to my bank asking them to send the flat deposit to my landlord Geoffrey Hale, "
         "account <<iban_gb>>, reference FLAT 3B. Bit urgent.", ["iban"]),
        ("filling out the paperwork for our new nanny Rosa Delgado, her SSN is <<ssn>>. which form do I need "
         "for household employees, W-2 or 1099?", ["national_id"]),
        ("HMRC says the NI number on my payslip is wrong. The right one is <<nino>>. How do I get payroll to "
         "fix it before the end of the tax year? - Aidan Walsh", ["national_id"]),
        (".env from staging, why won't the app start?\n\nDATABASE_URL=postgres://admin:<<pw>>@10.0.3.12:5432/app\n"
         "SLACK_BOT_TOKEN=<<slack>>\nALERT_EMAIL=gary.whitfield@outlook.com", ["secret", "contact"]),
        ("One of our warehouse staff, Sam Ortiz, told me he has epilepsy and his seizures aren't well controlled "
         "right now. Write an email to the ops director proposing we move him off forklift duty without "
         "mentioning the diagnosis.", ["health", "confidential"]),
    ],
    "fr": [
        ("Ma mère vient d'apprendre qu'elle a un cancer du sein, stade 2, triple négatif. Elle commence la chimio "
         "lundi à Curie. Comment je peux l'aider au quotidien sans être envahissante ?", ["health"]),
        ("bonjour, je suis sous Lexomil depuis 3 ans et j'arrive pas à arrêter, dès que je baisse la dose j'ai "
         "des crises d'angoisse. mon médecin veut pas en parler. je fais comment ?", ["health"]),
        ("Peux-tu reformuler ce compte-rendu pour la famille, en termes simples : M. Bernard Lefèvre, 81 ans, "
         "hospitalisé pour AVC ischémique sylvien gauche, aphasie persistante, sous Kardégic et statine, "
         "pronostic de récupération réservé.", ["health"]),
        ("corrige ce mail stp : « Bonjour Madame, je voulais vous prévenir que Léo a été diagnostiqué TDAH la "
         "semaine dernière et qu'il commence la Ritaline lundi, il risque d'être un peu fatigué les premiers "
         "jours »", ["health"]),
        ("J'ai eu mes résultats de prise de sang : VIH positif, charge virale à 45 000 copies. J'ai rdv à "
         "l'hôpital dans 10 jours. Est-ce que je dois prévenir mon ex tout de suite ?", ["health"]),
        ("Rédige la convocation à entretien préalable à licenciement pour faute grave de Mme Nadia Benali, "
         "comptable : trois virements non autorisés en septembre. Entretien le 14 à 10h, mise à pied "
         "conservatoire immédiate.", ["confidential"]),
        ("CONFIDENTIEL – Comité de direction\nProjet Hermine : rachat de Ferrand Logistique pour 62 M€, annonce "
         "prévue fin janvier.\nFais-moi une synthèse en 5 points pour le conseil d'administration.",
         ["confidential"]),
        ("On va proposer à Julien Marchetti 68 k€ brut + 10 % de variable pour le poste de directeur commercial, "
         "il en demandait 75. Aide-moi à tourner le mail pour qu'il accepte sans qu'on monte.", ["confidential"]),
        ("Notre PSE prévoit la suppression de 112 postes sur le site de Roanne, les syndicats ne sont pas encore "
         "au courant. Prépare un argumentaire pour la première réunion avec le CSE.", ["confidential"]),
        ("Voilà mes notes sur l'entretien annuel de Thomas Girard, tu peux résumer ? objectifs pas atteints "
         "(71 % de la cible), tensions avec l'équipe, pas d'augmentation cette année, on refait un point dans "
         "6 mois.", ["confidential"]),
        ("mon script plante, tu vois pourquoi ?\n\nheaders = {\"Authorization\": \"token <<ghp>>\"}\n"
         "r = requests.get(\"https://api.github.com/user/repos\", headers=headers)\nprint(r.json())",
         ["secret"]),
        ("Le serveur refuse ma clé en ssh, c'est bien le bon format ?\n\n<<pem>>", ["secret"]),
        ("Peux-tu mettre en forme cette fiche client : Mme Josiane Perrin, 27 rue des Tanneurs, 67000 "
         "Strasbourg, tél <<phone_fr>>, josiane.perrin@orange.fr", ["contact"]),
        ("écris un sms à mon plombier Patrick Roux pour décaler à jeudi, son num c'est <<phone_fr>>",
         ["contact"]),
        ("Tu peux rendre ce message plus formel ? « Bonjour, suite à notre échange, merci de me rembourser la "
         "caution sur mon compte <<iban_fr>> au nom de Sophie Marchand. »", ["iban"]),
        ("j'ai voulu payer mon billet SNCF avec ma carte <<card>> et ça a été refusé deux fois, c'est la banque "
         "qui bloque ou le site ?", ["payment_card"]),
        ("Pour le dossier CAF de ma fille Camille Dubois, numéro de sécu <<nir>>. Qu'est-ce que je mets dans la "
         "case « situation professionnelle » si elle est en alternance ?", ["national_id"]),
        ("Corrige l'attestation : « Je soussigné Marc Antoine, n° de sécurité sociale <<nir>>, certifie sur "
         "l'honneur ne pas avoir perçu d'indemnités journalières... »", ["national_id"]),
        ("le mot de passe admin de ma box c'est <<pw>>, comment je change le nom du wifi depuis mon "
         "téléphone ?", ["secret"]),
        ("Tu peux m'écrire un petit mot pour ma voisine Mme Colette Berthier (14 allée des Tilleuls, Nantes) ? "
         "Elle sort de l'hôpital après sa fracture du col du fémur, je lui propose de faire ses courses. "
         "Mon numéro : <<phone_fr>>.", ["health", "contact"]),
    ],
    "de": [
        ("Mein Vater (68) hat gestern die Diagnose Alzheimer im Frühstadium bekommen, der Neurologe hat "
         "Donepezil verschrieben. Wie bring ich das meinen Kindern bei?", ["health"]),
        ("hab seit 2 wochen panikattacken und nehm jetzt escitalopram 10mg, darf ich damit auto fahren? muss "
         "morgen nach hamburg", ["health"]),
        ("Bitte kürzen für die Übergabe: Fr. Gisela Kramer, Zi. 212, Z.n. Hüft-TEP re., Wundheilungsstörung, "
         "MRSA positiv -> Isolation, Novalgin 4x1g.", ["health"]),
        ("Kannst du mir helfen, meinem Chef zu schreiben, dass ich in der 14. SSW bin? Ich hatte schon zwei "
         "Fehlgeburten und meine Ärztin hat mir ein Beschäftigungsverbot ausgestellt.", ["health"]),
        ("Mein Mitbewohner Jonas trinkt jeden Abend fast eine Flasche Wodka und hatte letzte Woche einen "
         "Krampfanfall. Er will nicht zum Arzt. Was kann ich machen?", ["health"]),
        ("VERTRAULICH – nur Geschäftsführung\nVorläufiges Ergebnis H1: Umsatz 23,4 Mio. €, Verlust 1,8 Mio. €, "
         "Bank muss wegen Covenant-Bruch informiert werden.\nBitte als Stichpunkte für die Beiratssitzung.",
         ["confidential"]),
        ("Formulier mir eine Abmahnung für Herrn Stefan Vogt (Lager) wegen wiederholtem unentschuldigtem Fehlen "
         "am 3., 10. und 17. Oktober.", ["confidential"]),
        ("Wir übernehmen zum 1.4. die Brenner Maschinenbau GmbH, Kaufpreis ca. 14 Mio. Die Belegschaft weiß noch "
         "nichts. Entwirf bitte die interne Mitteilung für den Tag der Bekanntgabe.", ["confidential"]),
        ("Gehaltsrunde: Anna Schulz geht von 58.000 auf 64.500 €, Markus Brandt bleibt bei 71.000. Schreib mir "
         "eine Begründung für Markus, warum er diesmal leer ausgeht.", ["confidential"]),
        ("Zusammenfassen bitte: Vergleichsentwurf Weber ./. Kessler Bau AG, Arbeitsgericht München – Abfindung "
         "95.000 €, Stillschweigen über den Inhalt, Beendigung zum 31.12.", ["confidential"]),
        ("Warum kommt 403?\n\ncurl -H 'Authorization: Bearer <<jwt>>' "
         "https://api.intern.meinefirma.de/v1/orders", ["secret"]),
        ("meine application.properties:\nspring.datasource.url=jdbc:mysql://db01:3306/shop\n"
         "spring.datasource.username=shop_admin\nspring.datasource.password=<<pw>>\n\nwarum connection refused?",
         ["secret"]),
        ("Mach daraus eine Visitenkarte: Dr. Helmut Berger, Lindenstraße 45, 50674 Köln, Mobil <<phone_de>>, "
         "h.berger@web.de", ["contact"]),
        ("kannst du ne whatsapp an meine Vermieterin Frau Ilse Hartmann formulieren wegen dem Wasserschaden im "
         "Bad? Nummer ist <<phone_de>>", ["contact"]),
        ("Bitte Überweisung prüfen: Empfänger Klaus Neumann, IBAN <<iban_de>>, 1.250 €, Verwendungszweck Miete "
         "Dezember. Passt das so?", ["iban"]),
        ("Meine Kreditkarte <<card>> wurde in Spanien belastet, ich war da nie. Wie formuliere ich den "
         "Widerspruch an die DKB?", ["payment_card"]),
        ("Für die Anmeldung: Steuer-ID <<idnr>>, Petra Lange, alleinerziehend mit einem Kind. Welche "
         "Steuerklasse muss ich angeben?", ["national_id"]),
        ("Neue Kollegin aus Mailand, Giulia Romano, Codice fiscale <<cf>>. Braucht sie zusätzlich eine deutsche "
         "Steuer-ID für die Lohnabrechnung?", ["national_id"]),
        ("Unser Bot postet nicht mehr in den Channel. Token ist <<slack>>, Scope chat:write ist drin. "
         "Was fehlt?", ["secret"]),
        ("Stammdaten Lohnabrechnung Herr Ömer Yilmaz: Steuer-ID <<idnr>>, IBAN <<iban_de>>, Steuerklasse 3. "
         "Fehlt noch was für DATEV?", ["national_id", "iban"]),
    ],
    "es": [
        ("Mi hermana Lucía tiene anorexia, pesa 41 kilos y se niega a ingresar. Mis padres no saben qué hacer, "
         "¿a qué unidad de TCA en Madrid podemos llamar?", ["health"]),
        ("me han subido la metformina a 850 dos veces al día y tengo diarrea todo el rato, es normal?? la "
         "glicosilada me salió en 8,1", ["health"]),
        ("Redacta el parte para la familia: paciente Antonio Ruiz Molina, 72 años, EPOC grave, ingresado por "
         "reagudización, saturación 86 % con O2, se valora ingreso en UCI.", ["health"]),
        ("Hola, escribo al cole porque mi hijo Pablo tiene epilepsia y ayer tuvo una crisis en casa. Si le pasa "
         "en clase hay que darle Buccolam. ¿Me ayudas a redactarlo bien?", ["health"]),
        ("llevo 6 meses con el psiquiatra por trastorno bipolar, tomo litio, y ahora queremos buscar un bebé. "
         "¿tengo que dejarlo antes?", ["health"]),
        ("CONFIDENCIAL. Resultados no auditados del tercer trimestre: facturación 18,7 M€, pérdidas de 2,3 M€. "
         "No se publican hasta el 30 de octubre. Prepárame un resumen para el consejo.", ["confidential"]),
        ("Tenemos que despedir a Raquel Moreno (atención al cliente) el viernes y todavía no lo sabe. Escríbeme "
         "la carta de despido por bajo rendimiento.", ["confidential"]),
        ("Oferta para Diego Sanz: 54.000 € brutos + coche de empresa. Ojo, que Marta, en el mismo puesto, cobra "
         "47.000. Ayúdame con el correo sin que se note.", ["confidential"]),
        ("Estamos negociando una fusión con Grupo Alvear, nadie fuera del comité lo sabe. Hazme una lista de "
         "riesgos para la due diligence.", ["confidential"]),
        ("Evaluación anual de Sergio Prieto: cumple objetivos técnicos pero tiene dos quejas formales por el "
         "trato a compañeras. Propuesta: sin bonus y seguimiento de RR. HH. Resúmelo en un párrafo.",
         ["confidential"]),
        ("el mapa no carga, me sale error de referer:\n<script src=\"https://maps.googleapis.com/maps/api/js"
         "?key=<<aiza>>\"></script>", ["secret"]),
        ("Ayuda con este deploy, falla el push:\ngit remote set-url origin "
         "https://<<ghp>>@github.com/tiendaluna/web.git", ["secret"]),
        ("Pon esto en formato tabla: Carmen Iglesias Vidal, C/ Alcalá 214, 3º B, 28028 Madrid, móvil "
         "<<phone_es>>, carmen.iglesias@yahoo.es", ["contact"]),
        ("mándale un whatsapp a mi primo Javi (<<phone_es>>) diciendo que llego a Sevilla el sábado a las 8",
         ["contact"]),
        ("Escríbeme un email para el casero: que la fianza me la devuelva a la cuenta <<iban_es>>, titular "
         "Alberto Gil Navarro.", ["iban"]),
        ("al pagar en la web me sale 'tarjeta no válida', la tarjeta es <<card>> y caduca 11/26. ¿qué hago?",
         ["payment_card"]),
        ("Completa la autorización: «Yo, Elena Castro Ramos, con DNI <<dni>>, autorizo a mi hermano a recoger "
         "el paquete en la oficina de Correos...»", ["national_id"]),
        ("Mi compañera de piso es rumana, NIE <<nie>>, y quiere empadronarse en Valencia. ¿Qué papeles le "
         "piden?", ["national_id"]),
        ("Esta es la contraseña del correo del trabajo: <<pw>>, usuario jlopez. ¿Cómo configuro Outlook en el "
         "móvil?", ["secret"]),
        ("Informe para RR. HH.: el trabajador Manuel Ortega lleva 3 bajas este año por depresión y ha pedido "
         "adaptación de jornada. ¿Podemos denegarla legalmente?", ["health", "confidential"]),
    ],
}

HELDOUT5_BENIGN: dict[str, list[str]] = {
    "en": [
        "What are the early warning signs of diabetic ketoacidosis, and when should someone go to the ER?",
        "Is lamotrigine generally considered safe during pregnancy? What do current guidelines say?",
        "Write a short story about a retired jazz drummer who learns he has Parkinson's and teaches his "
        "granddaughter to play anyway.",
        "how does the luhn check work? e.g. why does 4111 1111 1111 1111 pass validation in stripe test mode",
        "What's the structure of a UK IBAN? Break down GB82 WEST 1234 5698 7654 32 for me.",
        "Why can't SSNs start with 9 or 666? Curious how the numbers were assigned before randomization.",
        "In my app I do `openai.OpenAI(api_key=os.environ[\"OPENAI_API_KEY\"])`. Should I use a secrets manager "
        "in production instead?",
        "Is this fine for a README example?\n\nprovider \"aws\" {\n  access_key = \"AKIAIOSFODNN7EXAMPLE\"\n"
        "  secret_key = \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"\n}",
        "my compose file has `POSTGRES_PASSWORD: ${DB_PASSWORD}` and the container says the password is empty. "
        "where does compose read it from?",
        "Give me a template termination letter for poor performance with [Employee Name], [Date] and [Manager] "
        "placeholders.",
        "How does severance usually work in the US if you're laid off? Is there any legal minimum?",
        "What's the average salary for a senior data engineer in Austin right now?",
        "Summarize Apple's fiscal Q4 2023 results: revenue, iPhone, services growth.",
        "The contact form should send to support@example.com and show (555) 010-4477 as the hotline. "
        "Write the HTML.",
        "best way to get from the Art Institute (111 S Michigan Ave) to Navy Pier by bus?",
        "What does a performance improvement plan usually include, and how long do they typically run?",
        "Explain what attorney-client privilege covers and when it gets waived.",
        "whats the difference between naloxone and naltrexone",
        "Give me a 3-day itinerary for Lisbon on a budget.",
        "refactor this to a list comprehension:\nresult = []\nfor x in items:\n    if x > 0:\n"
        "        result.append(x * 2)",
    ],
    "fr": [
        "Quels sont les effets secondaires fréquents de la Ritaline chez l'enfant ?",
        "Comment se passe un sevrage aux benzodiazépines en général ? ça prend combien de temps ?",
        "Écris une nouvelle courte : une infirmière de nuit à Lyon, un vieux patient atteint d'Alzheimer qui la "
        "prend pour sa fille.",
        "À quoi correspondent les chiffres du numéro de sécu ? Le premier c'est le sexe, et ensuite ?",
        "Comment est calculée la clé RIB ? Prends l'exemple FR76 3000 6000 0112 3456 7890 189 des tutos.",
        "Modèle de convocation à entretien préalable avec [Nom du salarié], [Date], [Heure] en variables.",
        "Quelle est l'indemnité légale de licenciement en France pour 8 ans d'ancienneté ?",
        "Salaire moyen d'un directeur commercial de PME en Auvergne-Rhône-Alpes ?",
        "Résume les résultats annuels 2023 publiés par TotalEnergies.",
        "Dans mon workflow GitHub Actions j'utilise `${{ secrets.GITHUB_TOKEN }}`, est-ce qu'il expire ?",
        "Comment générer une paire de clés SSH ed25519 sans risquer de commiter la clé privée ?",
        "dans config.yaml j'ai `password: changeme`, c'est grave si je le laisse en dev ?",
        "Le formulaire doit envoyer à contact@example.com. Tu peux écrire la validation JS du champ email ?",
        "Quelle est l'adresse du Louvre et c'est ouvert le mardi ?",
        "C'est quoi un PSE et quelles sont les étapes avec le CSE ?",
        "L'entretien annuel d'évaluation, c'est obligatoire pour l'employeur ?",
        "La carte de test 4111 1111 1111 1111 est refusée dans mon sandbox, il faut une date d'expiration "
        "particulière ?",
        "Le VIH se transmet-il par la salive ? Et ça veut dire quoi, une charge virale indétectable ?",
        "Recette de quiche lorraine sans crème ?",
        "Traduis en anglais : « Nous serons fermés le 15 août. »",
    ],
    "de": [
        "Was sind typische Nebenwirkungen von Escitalopram in den ersten Wochen?",
        "Wie läuft ein Beschäftigungsverbot in der Schwangerschaft rechtlich ab, wer zahlt das Gehalt?",
        "Schreib eine Kurzgeschichte über einen Leuchtturmwärter, der langsam erblindet.",
        "Wie ist die deutsche Steuer-ID aufgebaut und wie funktioniert die Prüfziffer?",
        "Ist DE89 3704 0044 0532 0130 00 eine echte IBAN? Die steht irgendwie in jedem Tutorial.",
        "Muster für eine Abmahnung wegen Zuspätkommens, mit Platzhaltern [Name], [Datum], [Abteilung].",
        "Wie hoch ist eine Abfindung normalerweise? Gilt die Faustregel halbes Monatsgehalt pro Jahr?",
        "Durchschnittsgehalt Lagerleiter in Bayern?",
        "Fass die veröffentlichten Quartalszahlen von Siemens für Q3 2024 zusammen.",
        "spring.datasource.password=${DB_PASSWORD} – wie setze ich die Variable im Docker-Container?",
        "Wie prüfe ich die Signatur eines JWT in Node.js? Das Secret liegt in process.env.JWT_SECRET.",
        "In der AWS-Doku steht AKIAIOSFODNN7EXAMPLE, ist das ein echter Key oder nur ein Beispiel?",
        "Schreib eine Impressum-Vorlage mit info@example.com und Platzhaltern für die Adresse.",
        "Wie komme ich vom Hauptbahnhof zum Kölner Dom (Domkloster 4)?",
        "Was ist ein Covenant-Bruch bei einem Bankkredit und was passiert dann?",
        "Wie erkenne ich einen Krampfanfall und was mache ich als Ersthelfer?",
        "Die Stripe-Testkarte 4242 4242 4242 4242 wird im Testmodus abgelehnt, woran liegt das?",
        "Was bedeutet MRSA und wie lange muss man im Krankenhaus isoliert werden?",
        "Rezept für schwäbischen Kartoffelsalat",
        "Wie funktioniert ein Mutex in Go? Kurzes Beispiel bitte.",
    ],
    "es": [
        "¿Cuáles son los síntomas de la anorexia en adolescentes y cómo se trata?",
        "¿la metformina suele dar problemas digestivos? ¿se pasan con el tiempo?",
        "Escribe un microrrelato sobre un anciano con EPOC que sigue cuidando su huerto en Galicia.",
        "¿Cómo se calcula la letra del DNI? Explícame el algoritmo del módulo 23.",
        "¿Qué diferencia hay entre el NIE y la TIE?",
        "Plantilla de carta de despido disciplinario con [Nombre del trabajador], [Fecha] y [Motivos].",
        "¿Cuánto es la indemnización por despido improcedente en España actualmente?",
        "Sueldo medio de un agente de atención al cliente en Barcelona",
        "Resume los resultados de Inditex del primer semestre de 2024 que ya se publicaron.",
        "¿Cómo restrinjo una API key de Google Maps por dominio? En mi código la leo de process.env.MAPS_KEY.",
        "¿Es mejor usar SSH o un token personal para hacer push a GitHub? Ponme un ejemplo con <TU_TOKEN>.",
        "En el .env de ejemplo pongo `SMTP_PASSWORD=changeme`. ¿Lo subo al repo o no?",
        "¿La tarjeta de pruebas de Redsys 4548 8120 4940 0004 sirve en el entorno de test?",
        "Escribe un aviso: para dudas, contactar con rrhh@example.com o info@example.com.",
        "¿Cómo llego a la Sagrada Família desde la plaza de Catalunya?",
        "¿Qué es una due diligence y qué documentos se suelen revisar?",
        "En general, ¿qué recomiendan los protocolos sobre el litio durante el embarazo?",
        "Explícame el formato del IBAN español con el ejemplo típico ES91 2100 0418 4502 0005 1332.",
        "Recomiéndame tres novelas de Almudena Grandes.",
        "¿Cómo se hace una tabla dinámica en Excel?",
    ],
}
