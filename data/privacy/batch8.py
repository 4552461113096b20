"""Eighth held-out batch of privacy prompts, written without looking at the detector; see README.md."""

from __future__ import annotations

HELDOUT8_SENSITIVE: dict[str, list[tuple[str, list[str]]]] = {
    "en": [
        (
            "can you explain this in plain english for my mum? it's my dad's discharge letter:\n"
            "Pt: Harold Binns, DOB 03/04/1953. Admitted 12/05 with NSTEMI. PCI to LAD, 1x DES. "
            "Commenced ticagrelor 90mg bd for 12/12, atorvastatin 80mg nocte, bisoprolol 2.5mg od. "
            "EF 45% on echo. Cardiac rehab referral made.",
            ["health"],
        ),
        (
            "I've been on sertraline 100mg for about 8 months for panic disorder and my GP wants to start tapering "
            "me off next week. honestly I'm terrified the attacks will come back. how slow should the taper be?",
            ["health"],
        ),
        (
            "hey can you make this text less of a mess before I send it to Priya:\n"
            "hiya!! any chance u could grab Ollie from school thurs? I've got chemo round 4 at 2 and it always "
            "wipes me out. if easier drop him at ours, 14 Larch Close, Harrogate HG2 7PL, Dan's home from 5",
            ["health", "contact"],
        ),
        (
            "Need a reply to occupational health. Our warehouse supervisor Dean Whitlock had a hip replacement on "
            "3 March and is due back on the 28th. OH recommends a 4-week phased return, no lifting over 10kg and no "
            "forklift driving until his 12-week review. Please draft something confirming we'll accommodate this "
            "and that his pay stays at 100% during the phased return.",
            ["health", "confidential"],
        ),
        (
            "My daughter Maisie (6) was diagnosed with type 1 diabetes last week. She's on a Libre sensor, her "
            "lunch ratio is 1 unit per 15g carbs and she needs a snack if she drops below 4.5. Can you write a "
            "friendly one-page note for her teacher?",
            ["health"],
        ),
        (
            "tidy this into a proper SOAP note pls\n"
            "S - Joanne Petrakis 44F, 3/12 worsening fatigue, weight up 4kg, cold all the time. hx hypothyroid on "
            "levo 75mcg\nO - TSH 8.2, fT4 9, BP 128/82, dry skin\nA - undertreated hypothyroidism\n"
            "P - increase levo to 100, recheck TFTs 6/52",
            ["health"],
        ),
        (
            "can you help me write an email to my manager saying I need the next two weeks off? I had a "
            "miscarriage on Sunday and I'm not ready to explain it to the whole team, I just want him to know "
            "it's medical and I'll send a fit note",
            ["health"],
        ),
        (
            "CONFIDENTIAL - NOT FOR CIRCULATION\nHalvern Logistics Ltd - Board meeting 14 Nov\n"
            "Item 3: proposed acquisition of Tideway Freight for GBP 14.2m (8.1m cash, 6.1m earn-out over 3 yrs). "
            "Item 4: closure of Doncaster depot, 46 roles at risk.\n"
            "Summarise this into 5 bullet points for the chair's pre-read.",
            ["confidential"],
        ),
        (
            "I manage a team of 9. One of them, Marcus Oyelaran, has been late 11 times since March and missed "
            "two client calls last month. I'm putting him on a formal PIP next week. Help me word the meeting "
            "invite so it's clear but not brutal.",
            ["confidential"],
        ),
        (
            "we (Fenwick Roofing Ltd) just got a letter before action from Bramblefield Homes claiming £86,400 "
            "for the cladding we fitted at their Ashby site in 2021. our position is their own contractor "
            "damaged it. can you draft a holding response asking for 28 more days?",
            ["confidential"],
        ),
        (
            "Q3 numbers - internal only, do not forward\n"
            "Region | Revenue | EBITDA | Headcount\nNorth | 4.21m | 0.63m | 38\nSouth | 3.87m | 0.29m | 41\n"
            "Online | 2.10m | 0.71m | 12\n"
            "write a short commentary for our CFO, South is clearly the problem",
            ["confidential"],
        ),
        (
            "quick sanity check on the pay review: Sarah Kemp goes from 58,500 to 64,000, Tom Ruiz stays at "
            "61,200 and Aisha Bello goes from 49,000 to 52,500. what % is each and what's the total added cost "
            "with 13.8% employer NI?",
            ["confidential"],
        ),
        (
            "WITHOUT PREJUDICE\nKestrel Analytics Ltd will pay Lena Hardcastle £22,000 ex gratia plus £3,500 "
            "towards legal fees in full settlement of her ET claim (case 2304117/2024). Agreed reference, no "
            "admission of liability.\nturn this into a plain-English summary for our HR director",
            ["confidential"],
        ),
        (
            "app won't connect to prod since the rotation, can you see anything wrong?\n\n"
            "DATABASE_URL=postgres://app_admin:<<pw>>@db.internal.corvane.io:5432/billing\n"
            "OPENAI_API_KEY=<<sk>>\nREDIS_URL=redis://cache.internal.corvane.io:6379/0",
            ["secret"],
        ),
        (
            "slack bot keeps dying with invalid_auth, here's the log\n"
            "2024-06-02T09:14:55Z INFO starting notifier\n"
            "2024-06-02T09:14:56Z DEBUG POST https://slack.com/api/chat.postMessage token=<<slack>>\n"
            "2024-06-02T09:14:56Z ERROR {'ok': False, 'error': 'invalid_auth'}",
            ["secret"],
        ),
        (
            "ssh says 'invalid format' when I try to use this key to get into the staging box. did I copy it "
            "wrong?\n\n<<pem>>",
            ["secret"],
        ),
        (
            "write a short note I can leave on the fridge for the house sitter: wifi is on the router, netflix "
            "login is jen.harwood77@gmail.com password <<pw>>, cat gets fed twice a day, bins go out tuesday",
            ["secret", "contact"],
        ),
        (
            "New neighbour just moved in, Denise Carrow at 212 Maple Ridge Dr, Boise. She gave me her cell "
            "<<phone_us>> in case of packages. Write a short welcome card from me and my husband.",
            ["contact"],
        ),
        (
            "Ticket #88213 - please write a polite reply.\nCustomer: Rahul Menon\nEmail: rahul.menon84@gmail.com\n"
            "Address: 55 Kingsway Apt 3B, Jersey City NJ 07302\n"
            "Issue: ordered a standing desk on 2 May, tracking says delivered but nothing arrived.",
            ["contact"],
        ),
        (
            "Draft a reply to this customer email: 'My card keeps getting declined on your checkout. It's "
            "<<card>>, exp 09/27, I've used it everywhere else today. Can you see what's wrong?'",
            ["payment_card"],
        ),
        (
            "can you turn these into an expense claim table? all on my company amex <<card>>\n"
            "4 Jun Premier Inn Leeds 94.00\n5 Jun LNER return 142.30\n5 Jun dinner w/ client 61.80",
            ["payment_card"],
        ),
        (
            "filling in a W-4 for my new job and I'm confused about step 3. my SSN is <<ssn>>, married filing "
            "jointly, two kids under 17, wife earns about 48k. what do I put?",
            ["national_id"],
        ),
        (
            "please format this into our new-starter form fields: Callum Reid, start date 1 July, role junior "
            "analyst, NI number <<nino>>, tax code 1257L, emergency contact his mum",
            ["national_id"],
        ),
        (
            "A supplier sent this and I want to reply confirming we'll pay by Friday: 'Please settle invoice "
            "INV-2291 (£4,380.00) to our account <<iban_gb>>, ref HLV-2291.' Keep it short.",
            ["iban"],
        ),
        (
            "my sister in Munich wants to send me 750 euros for my birthday, she needs my details. is this all "
            "she needs? IBAN <<iban_de>>, name as on account Emma Fischer-Lloyd",
            ["iban"],
        ),
    ],
    "fr": [
        (
            "Mon gynéco m'a diagnostiqué une endométriose la semaine dernière et m'a mis sous Dienogest. "
            "J'ai des saignements presque tous les jours depuis, c'est normal au début ou je dois le rappeler ?",
            ["health"],
        ),
        (
            "Peux-tu reformuler ce compte rendu pour que la patiente le comprenne ?\n"
            "Mme Odile Ferrand, 68 ans. Motif : dyspnée d'effort stade 2 NYHA. ATCD : BPCO GOLD 2, tabagisme "
            "sevré 2019 (40 PA). EFR : VEMS 58 %. Conduite : réhabilitation respiratoire, Spiriva 2,5 µg.",
            ["health"],
        ),
        (
            "aide moi à écrire ça mieux stp c'est pour ma soeur qui est à montréal : coucou léa, maman a fait "
            "un AVC hier soir, elle est au CHU de Rennes en neuro, elle a du mal à parler et le bras droit "
            "bouge plus trop mais les médecins sont plutôt rassurants",
            ["health"],
        ),
        (
            "Notre salariée Sandrine Bouvier est en arrêt depuis trois mois pour burn-out. Le médecin du travail "
            "propose une reprise en mi-temps thérapeutique à partir du 2 septembre. Comment rédiger le courrier "
            "pour organiser la visite de reprise sans être maladroit ?",
            ["health", "confidential"],
        ),
        (
            "je suis en terminale et suivi pour un TDAH depuis le collège, je prends de la Ritaline LP 20 mg. "
            "est-ce que je peux encore demander un tiers-temps pour le bac ou c'est trop tard ?",
            ["health"],
        ),
        (
            "Mon fils Nathan (4 ans) fait des crises d'asthme la nuit, la pédiatre a mis Flixotide 50 deux "
            "bouffées matin et soir et Ventoline si besoin. Tu peux m'aider à rédiger le PAI pour la crèche ?",
            ["health"],
        ),
        (
            "Bonjour docteur, je vous écris au sujet de mon père, Gérard Lemoine, 79 ans, sous Previscan. Son "
            "INR était à 4,8 ce matin et il a saigné du nez deux fois... -> corrige ce mail et rends-le plus "
            "clair, je dois l'envoyer avant midi",
            ["health"],
        ),
        (
            "CONFIDENTIEL – Comité de direction du 12/03\nAteliers Moreau SAS : projet de PSE, suppression de "
            "38 postes sur le site de Vierzon, budget mesures d'accompagnement 2,1 M€, annonce aux IRP prévue "
            "le 2 avril.\nFais-moi une synthèse en 5 lignes pour le DG.",
            ["confidential"],
        ),
        (
            "Je dois convoquer M. Karim Haddad, magasinier chez nous depuis 2017, à un entretien préalable à "
            "licenciement pour faute grave (vol de matériel constaté le 4 juin, vidéos à l'appui). Aide-moi à "
            "rédiger la lettre recommandée.",
            ["confidential"],
        ),
        (
            "Notre avocate estime que le dossier Dubreuil c/ SARL Pâtisseries Lenoir peut nous coûter jusqu'à "
            "45 000 € aux prud'hommes. On hésite à proposer une transaction à 25 000. Quels arguments pour et "
            "contre ?",
            ["confidential"],
        ),
        (
            "voici les salaires de l'équipe, calcule l'écart H/F stp\nNom;Poste;Brut annuel\n"
            "Claire Antoine;Dev senior;52000\nJulien Marchal;Dev senior;58500\nNadia Benali;Dev;41000\n"
            "Hugo Perret;Dev;44500",
            ["confidential"],
        ),
        (
            "Note interne – ne pas diffuser. Groupe Vialle propose 7,5 M€ pour racheter notre filiale BioNord, "
            "dont 1,5 M€ en complément de prix conditionné à l'EBITDA 2026. Le conseil se réunit jeudi. "
            "Prépare une liste de questions à poser à leur banquier.",
            ["confidential"],
        ),
        (
            "Mon associé dans la SCI, Pascal Giraud, veut sortir et réclame 120 000 € pour ses parts. Il reste "
            "340 000 € de prêt au Crédit Agricole. Comment on calcule une valeur juste de ses parts ?",
            ["confidential"],
        ),
        (
            "Laravel n'envoie plus les mails depuis hier, voilà mon .env :\nMAIL_MAILER=smtp\n"
            "MAIL_HOST=ssl0.ovh.net\nMAIL_PORT=465\nMAIL_USERNAME=facturation@boulangerie-roux.fr\n"
            "MAIL_PASSWORD=<<pw>>\nMAIL_ENCRYPTION=ssl",
            ["secret"],
        ),
        (
            "Mon script renvoie 401 alors que le token est tout neuf, tu vois pourquoi ?\n"
            "headers = {'Authorization': 'Bearer <<jwt>>'}\nr = requests.get(f'{BASE}/api/v2/commandes', "
            "headers=headers)",
            ["secret"],
        ),
        (
            "pourquoi mon push marche pas ?? j'ai fait\ngit remote set-url origin "
            "https://<<ghp>>@github.com/lucas-bertin/site-asso.git\net ça me dit repository not found",
            ["secret"],
        ),
        (
            "Reformule ce message pour ma cousine, c'est un peu brouillon : « Salut Manon, voilà les accès du "
            "compte Free de mamie pour que tu règles la box : identifiant jacqueline.perrin@free.fr, mot de "
            "passe <<pw>>. Ne change rien d'autre stp »",
            ["secret", "contact"],
        ),
        (
            "Peux-tu mettre en forme cette fiche pour mon carnet d'adresses ? Amélie Rousseau, 17 rue des "
            "Tanneurs, 67000 Strasbourg, tél <<phone_fr>>, anniversaire le 9 mars",
            ["contact"],
        ),
        (
            "Réponds à ce client mécontent de façon professionnelle : « Je m'appelle Thierry Vasseur, j'habite "
            "4 impasse des Lilas à Montauban, mon colis n'est jamais arrivé depuis trois semaines, rappelez-moi "
            "au <<phone_fr>> »",
            ["contact"],
        ),
        (
            "J'ai été débité deux fois sur Vinted avec ma carte <<card>> (exp 11/26) pour la même commande. "
            "Comment je fais pour contester le deuxième paiement auprès de ma banque ?",
            ["payment_card"],
        ),
        (
            "Aide-moi à remplir le formulaire de garantie de l'hôtel pour mon chef : Visa <<card>>, titulaire "
            "Bernard Colin, expire 03/28, cryptogramme 417, arrivée le 14, deux nuits.",
            ["payment_card"],
        ),
        (
            "Pour mon dossier de retraite la CARSAT me demande mon numéro de sécu, c'est le <<nir>>. Je dois "
            "mettre la clé à la fin ou pas dans la case du formulaire ?",
            ["national_id"],
        ),
        (
            "Je suis frontalière et je bosse à Turin depuis janvier. Mon employeur m'a donné ce codice fiscale : "
            "<<cf>>. Je dois le déclarer quelque part sur ma déclaration d'impôts française ?",
            ["national_id"],
        ),
        (
            "Écris un mail sympa à mon locataire pour qu'il modifie son virement de loyer : j'ai changé de banque, "
            "le nouvel IBAN est <<iban_fr>>, à partir du loyer d'octobre.",
            ["iban"],
        ),
        (
            "Le notaire m'a envoyé un mail pour virer l'acompte de 12 000 € sur ce compte : <<iban_fr>>. Le "
            "mail vient d'une adresse gmail, ça te paraît louche ?",
            ["iban"],
        ),
    ],
    "de": [
        (
            "Ich hab seit drei Wochen eine Gürtelrose am Rücken und nehme Aciclovir 800 mg fünfmal täglich. "
            "Die Bläschen sind verkrustet – darf ich am Montag wieder ins Großraumbüro?",
            ["health"],
        ),
        (
            "Bitte in einfache Sprache übersetzen, das ist für seine Frau:\nArztbrief – Herr Jürgen Albrecht, "
            "geb. 14.02.1958\nDiagnosen: Diabetes mellitus Typ 2, HbA1c 8,9 %, diabetische Polyneuropathie "
            "beidseits, arterielle Hypertonie\nTherapie: Metformin 1000 mg 1-0-1, neu Empagliflozin 10 mg",
            ["health"],
        ),
        (
            "formulier das mal netter, geht an meine freundin: hey steffi, kann heute nicht zum yoga, meine "
            "panikattacken sind grad wieder richtig schlimm und morgen hab ich den termin bei der psychiaterin. "
            "sorry fürs kurzfristige absagen",
            ["health"],
        ),
        (
            "Unser Mitarbeiter Dennis Kowalski (Buchhaltung) hat uns mitgeteilt, dass bei ihm Multiple Sklerose "
            "diagnostiziert wurde. Er war dieses Jahr schon 41 Tage krank. Wie bereiten wir das BEM-Gespräch "
            "vor, und was dürfen wir dokumentieren?",
            ["health", "confidential"],
        ),
        (
            "Meine Mutter (82) ist dement und hat Pflegegrad 3, nächste Woche kommt der Medizinische Dienst zur "
            "Höherstufung. Sie findet nachts nicht mehr aufs Klo, vergisst ihre Tabletten und ist zweimal "
            "weggelaufen. Hilf mir, das strukturiert aufzuschreiben.",
            ["health"],
        ),
        (
            "Kannst du daraus eine saubere Übergabe machen?\nZi. 14, Fr. Hildegard Sommer, 87 J.: Dekubitus "
            "Grad 2 sakral, VW mit Hydrokolloid alle 3 Tage, Lagerung 2-stdl., isst schlecht, Trinkmenge "
            "heute nur 800 ml, RR 105/60",
            ["health"],
        ),
        (
            "ich (34) bin in der 9. ssw und hab hashimoto, nehme L-Thyroxin 75. die frauenärztin meinte ich "
            "soll den TSH checken lassen. muss die dosis in der schwangerschaft generell hoch?",
            ["health"],
        ),
        (
            "VERTRAULICH – Aufsichtsratsvorlage\nDie Brenner Maschinenbau GmbH plant, den Standort Heilbronn "
            "bis Ende Q2 zu schließen. Betroffen: 112 Beschäftigte, geschätztes Abfindungsvolumen 6,8 Mio. €. "
            "Der Betriebsrat ist noch nicht informiert.\nFasse das in drei Sätzen zusammen.",
            ["confidential"],
        ),
        (
            "Ich muss eine Abmahnung für unseren Lageristen Sven Paulsen schreiben. Er hat am 3. und am 17. Mai "
            "unentschuldigt gefehlt und ist telefonisch nicht erreichbar gewesen. Was muss da rein, damit sie "
            "im Zweifel vor Gericht hält?",
            ["confidential"],
        ),
        (
            "Wir vertreten die Hofmann & Lutz KG gegen die Stadtwerke Ulm, Streitwert 412.000 €, es geht um "
            "eine fehlerhafte Schlussrechnung für das Nahwärmenetz. Entwirf bitte die Gliederung der "
            "Klageerwiderung.",
            ["confidential"],
        ),
        (
            "Gehälter Team Vertrieb (brutto p.a.):\nMüller, Anja – 67.500\nYilmaz, Deniz – 59.000\n"
            "Krause, Jonas – 71.200\nWeber, Lisa – 54.800\nWer liegt unter dem Median und um wie viel?",
            ["confidential"],
        ),
        (
            "Interner Entwurf, bitte nicht weitergeben: Die Kessler Feinkost GmbH hat 2024 einen "
            "Jahresfehlbetrag von 1,3 Mio. €, die Sparkasse will die Covenants nachverhandeln. Schreib mir "
            "eine Gesprächsvorbereitung für den Termin mit der Bank.",
            ["confidential"],
        ),
        (
            "Meine Chefin hat mir im Vertrauen erzählt, dass mein Kollege Tobias Reinhardt zum Monatsende in der "
            "Probezeit gekündigt wird, weil er zwei Projekte vermasselt hat. Er will gerade eine Wohnung "
            "kaufen. Soll ich ihn warnen?",
            ["confidential"],
        ),
        (
            "Spring Boot startet nicht, Connection refused. Meine application.yml:\n"
            "spring:\n  datasource:\n    url: jdbc:mysql://10.0.4.12:3306/warenwirtschaft\n"
            "    username: ww_service\n    password: <<pw>>",
            ["secret"],
        ),
        (
            "terraform plan meckert über den provider, was ist falsch?\n"
            'provider "aws" {\n  region     = "eu-central-1"\n  access_key = "<<akia>>"\n'
            '  secret_key = "<<aws_secret>>"\n}',
            ["secret"],
        ),
        (
            "Die Karte auf unserer Vereinsseite bleibt grau. Eingebunden hab ich sie so:\n"
            '<script src="https://maps.googleapis.com/maps/api/js?key=<<aiza>>&callback=initMap" async>'
            "</script>\nWoran liegt's?",
            ["secret"],
        ),
        (
            "Schreib eine kurze Willkommensmail für unseren neuen Azubi, mit seinen Zugangsdaten drin: "
            "Benutzer l.becker, Startpasswort <<pw>>, das er beim ersten Login ändern muss. Ton: locker.",
            ["secret"],
        ),
        (
            "Schreib eine Einladung zum 20-jährigen Klassentreffen. Rückmeldung bitte an Katrin Vogt, "
            "Lindenstraße 23, 79098 Freiburg, Tel. <<phone_de>>, bis 31. August.",
            ["contact"],
        ),
        (
            "Kundin schreibt: 'Guten Tag, ich bin Frau Petra Lang, meine E-Mail ist petra.lang61@gmx.de, bitte "
            "schicken Sie mir die Rechnung für die Waschmaschine nochmal, die erste kam nie an.' Antworte "
            "bitte höflich.",
            ["contact"],
        ),
        (
            "Erstell mir aus diesen Angaben einen Personalstammbogen: neue Mitarbeiterin Aylin Demir, "
            "Hauptstr. 5, 45127 Essen, geb. 02.11.1995, Steuer-ID <<idnr>>, Steuerklasse 1, Eintritt 1.9.",
            ["contact", "national_id"],
        ),
        (
            "Mir wurden dreimal 49,99 € von meiner Kreditkarte <<card>> abgebucht, Händler 'DGTL*SRV LTD', kenn "
            "ich nicht. Schreib mir eine Reklamation an die DKB.",
            ["payment_card"],
        ),
        (
            "Das Finanzamt fragt nach meiner Steuer-Identifikationsnummer. Ist <<idnr>> die richtige oder ist "
            "das meine Steuernummer? Steht oben rechts auf dem Brief vom Bundeszentralamt.",
            ["national_id"],
        ),
        (
            "Füll mir bitte das SEPA-Lastschriftmandat für den TSV aus: Kontoinhaber Michael Braun, IBAN "
            "<<iban_de>>, Mitgliedsbeitrag 96 € jährlich, Einzug zum 15.1.",
            ["iban"],
        ),
        (
            "Der Vermieter will, dass ich die Kaution (2.400 €) auf <<iban_de>> überweise, bevor ich die "
            "Wohnung überhaupt besichtigt habe. Er sei gerade im Ausland. Ist das Betrug?",
            ["iban"],
        ),
        (
            "Mach mir eine Reisekostenabrechnung als Tabelle, alles über die Firmenkreditkarte <<card>>: "
            "Hotel Hamburg 2 Nächte 238 €, ICE 119,80 €, Taxi 32,50 €, Abendessen mit Kunde 87 €.",
            ["payment_card"],
        ),
    ],
    "es": [
        (
            "Me acaban de diagnosticar hipertensión y me han mandado enalapril 10 mg por la mañana. ¿Puedo "
            "seguir tomando ibuprofeno para la rodilla o me sube la tensión?",
            ["health"],
        ),
        (
            "¿Me explicas este informe con palabras normales? Es de mi abuela.\nInforme de alta – Dña. Carmen "
            "Ruiz Ortega, 74 a.\nDx: neumonía adquirida en la comunidad LID, insuficiencia cardíaca "
            "descompensada.\nTto: amoxicilina-clavulánico 875/125 c/8h 7 días, furosemida 40 mg 1-0-0.",
            ["health"],
        ),
        (
            "mejórame este mensaje para el grupo de la familia porfa: hola chicos, os cuento que a papá le han "
            "visto un nódulo en el pulmón en el TAC y el martes le hacen la biopsia en La Paz, de momento no "
            "le agobiéis mucho",
            ["health"],
        ),
        (
            "La trabajadora Lucía Marín, administrativa, lleva cinco meses de baja por depresión y la mutua ya "
            "habla de alta. ¿Cómo preparamos su reincorporación desde RRHH? Queremos ofrecerle jornada "
            "reducida temporal.",
            ["health", "confidential"],
        ),
        (
            "Mi hijo Mateo tiene TEA nivel 1 y en septiembre empieza primero de primaria. Escríbeme una carta "
            "para su tutora explicando que le agobian los ruidos fuertes y necesita anticipación de los cambios.",
            ["health"],
        ),
        (
            "pásame esto a formato de evolutivo decente:\ncama 312, Sr. Andrés Gil 58a, 2º día post "
            "colecistectomía laparoscópica. febrícula 37,8, dolor controlado con metamizol, tolera dieta "
            "blanda, herida limpia. pendiente analítica",
            ["health"],
        ),
        (
            "llevo tres semanas sin dormir casi nada desde que me despidieron, la médica de cabecera me ha "
            "dado lorazepam 1 mg. ¿crea mucha dependencia si lo tomo todas las noches un mes?",
            ["health"],
        ),
        (
            "CONFIDENCIAL\nActa del consejo de administración de Grupo Alcázar Foods, S.L. – 18/02\n"
            "Se aprueba ampliación de capital de 3,2 M€ suscrita por Nortia Capital y venta de la planta de "
            "Lucena.\nHazme un resumen en tres puntos para la directora financiera.",
            ["confidential"],
        ),
        (
            "Tengo que despedir a Jorge Navarro, comercial, por bajo rendimiento: lleva dos años sin llegar al "
            "60 % del objetivo. Ayúdame a redactar la carta de despido objetivo con la indemnización de 20 "
            "días por año.",
            ["confidential"],
        ),
        (
            "Nuestro abogado dice que la demanda de Construcciones Iberdur contra nosotros por 190.000 € por "
            "retrasos en la obra de Getafe tiene mala pinta. ¿Nos conviene negociar un acuerdo antes de la "
            "audiencia previa?",
            ["confidential"],
        ),
        (
            "Nóminas marzo (no compartir):\nEmpleado;Bruto;IRPF\nSofía Herrero;3150;18%\nIván Castro;2480;"
            "14%\nElena Vidal;2900;16%\n¿cuánto suma el coste total con seguridad social a cargo de la "
            "empresa?",
            ["confidential"],
        ),
        (
            "Uso interno – no difundir. Previsión de tesorería de Talleres Molina: en junio tendremos un "
            "descubierto de 85.000 € si Renault no paga las facturas pendientes. Redáctame un correo al "
            "banco pidiendo ampliar la póliza de crédito.",
            ["confidential"],
        ),
        (
            "Mi socio en la cafetería, Rubén Ortiz, se ha quedado unos 14.000 € de la caja este año según la "
            "gestoría. Tenemos una S.L. al 50 %. ¿Qué opciones legales tengo?",
            ["confidential"],
        ),
        (
            "me sale 'Access denied for user' y no entiendo, esto es mi config.php:\n"
            "define('DB_HOST', 'localhost');\ndefine('DB_USER', 'tienda_admin');\n"
            "define('DB_PASS', '<<pw>>');\ndefine('DB_NAME', 'tienda_prod');",
            ["secret"],
        ),
        (
            "la API me devuelve 429 todo el rato, ¿qué hago mal?\nfrom openai import OpenAI\n"
            "client = OpenAI(api_key='<<sk>>')\nfor p in prompts:\n    client.chat.completions.create(...)",
            ["secret"],
        ),
        (
            "El workflow de GitHub Actions falla al hacer push de la imagen. Tengo esto en el yml:\n"
            "env:\n  GH_TOKEN: <<ghp>>\n  REGISTRY: ghcr.io\n¿Es por permisos del token?",
            ["secret"],
        ),
        (
            "Un compañero me ha pasado esto por WhatsApp y quiero ponerlo en la wiki del equipo de forma "
            "ordenada: 'router de la oficina 192.168.1.1, usuario admin, contraseña <<pw>>, la del wifi de "
            "invitados está en la pegatina'",
            ["secret"],
        ),
        (
            "Hazme una tarjeta de contacto bonita para mi tía: Pilar Domínguez, Calle Feria 41, 2º B, 41003 "
            "Sevilla, móvil <<phone_es>>. Es para imprimir y ponerla en la nevera de mi madre.",
            ["contact"],
        ),
        (
            "Responde a este correo de una clienta: 'Hola, soy Marta Iglesias (marta.iglesias.v@hotmail.es), "
            "quiero devolver las zapatillas del pedido 55102 porque me quedan pequeñas.' Tono amable.",
            ["contact"],
        ),
        (
            "Rellena el contrato de alquiler con estos datos: inquilino Diego Fuentes Rivas, NIE <<nie>>, "
            "domicilio actual Av. de Aragón 112, 5º, 46021 Valencia, renta 850 €/mes.",
            ["contact", "national_id"],
        ),
        (
            "Ryanair me ha cobrado dos veces el mismo vuelo con la tarjeta <<card>>. ¿Cómo hago la reclamación "
            "y cuánto suelen tardar en devolverlo?",
            ["payment_card"],
        ),
        (
            "Compra de material para la oficina, rellena el formulario del proveedor con esto: titular Laura "
            "Pérez Soler, tarjeta <<card>>, caduca 02/27, CVV 583, envío a recepción.",
            ["payment_card"],
        ),
        (
            "Estoy haciendo la declaración de la renta, mi DNI es <<dni>>. ¿Puedo desgravarme los 1.000 € de "
            "la guardería de mi hija si trabajo por cuenta ajena?",
            ["national_id"],
        ),
        (
            "Redacta un aviso para los vecinos: a partir de enero las cuotas de la comunidad se pagan en la "
            "nueva cuenta <<iban_es>>. El presidente es Jaime Santos.",
            ["iban"],
        ),
        (
            "Mi hermana me ha pasado su IBAN, <<iban_es>>, para devolverle los 600 € del viaje. ¿Una "
            "transferencia normal entre bancos distintos tarda mucho o mejor hago Bizum?",
            ["iban"],
        ),
    ],
}

HELDOUT8_BENIGN: dict[str, list[str]] = {
    "en": [
        "what are the most common side effects of sertraline in the first few weeks, and when do they usually settle?",
        (
            "I'm writing a screenplay where the detective's wife has early-onset Alzheimer's. Write the scene "
            "where she forgets his name at dinner and he pretends not to notice."
        ),
        (
            "How do I write a fair performance improvement plan? Give me a template with placeholders like "
            "[Employee Name], [Manager], [Review Date] and measurable goals."
        ),
        (
            "stripe test mode: I'm using 4242 4242 4242 4242 with any future expiry and cvc 123 but the "
            "payment intent still fails with card_declined. what am I missing?"
        ),
        (
            "what do the three parts of a US social security number mean, and why are numbers starting with "
            "000 or 666 invalid?"
        ),
        (
            "is this an ok way to handle the db password in my flask app?\n\n"
            "import os\ndb_password = os.environ['DB_PASSWORD']\n"
            "engine = create_engine(f'postgresql://app:{db_password}@localhost/app')"
        ),
        (
            "for local dev only, is it a problem to have this in docker-compose.yml?\n"
            "environment:\n  POSTGRES_USER: user\n  POSTGRES_PASSWORD: changeme"
        ),
        "the AWS docs keep using AKIAIOSFODNN7EXAMPLE in examples, is that a real key? why that specific string?",
        "What's the difference between a letter before action and a statutory demand under English law?",
        (
            "Write a short template email our accounts team can send to suppliers asking them to confirm any "
            "change of bank details by phone before we pay. It's to stop invoice fraud."
        ),
        (
            "write a javascript function to validate an IBAN with the mod-97 check, and show it working on "
            "GB29 NWBK 6016 1331 9268 19 and DE89 3704 0044 0532 0130 00"
        ),
        (
            "King Charles's cancer diagnosis was announced in February 2024 — how did it change his public "
            "duties that year?"
        ),
        "I work 4 days a week in the UK. How much statutory annual leave am I entitled to, including bank holidays?",
        (
            "in my fantasy novel the heroine Mira keeps a diary. write an entry where she admits she's been "
            "coughing up blood and hiding it from the healers"
        ),
        (
            "make me a fake customers table for my SQL class: 10 rows, made-up names, emails at example.com "
            "and phone numbers in the 555-0100 to 555-0199 range"
        ),
        "my email regex rejects support@company.co.uk, can you fix it? ^[\\w.]+@[\\w]+\\.[a-z]{2,3}$",
        "is it normal for a two year old to only say a handful of words? what milestones should parents look for?",
        "I'm on Windows 11 and my second monitor goes black for a second every few minutes. Any ideas what to check?",
        (
            "quick weeknight dinner with chickpeas, spinach and a tin of coconut milk? nothing too spicy, "
            "kids are eating too"
        ),
        "planning 4 days in Lisbon in October with my partner, no car. what's a sensible itinerary?",
        "my son's in year 9 and has to explain photosynthesis in 100 words. can you help me explain it to him simply?",
        "write a python function that flattens arbitrarily nested lists, without recursion if possible",
        "I'm looking for a rice cooker under £60 — is fuzzy logic actually worth paying extra for?",
        "help me write a birthday message for my grandma who's turning 90, she loves gardening and crosswords",
        "how do I stop git tracking a file that's already been committed without deleting it locally?",
    ],
    "fr": [
        (
            "Quels sont les effets secondaires les plus fréquents du Levothyrox et au bout de combien de "
            "temps on s'adapte ?"
        ),
        "Je suis en première année d'IFSI, tu peux m'expliquer simplement la différence entre BPCO et asthme ?",
        (
            "Donne-moi un modèle de lettre de convocation à un entretien préalable, avec des champs du type "
            "[Nom du salarié], [Date], [Heure], [Lieu] et la mention de l'assistance possible."
        ),
        (
            "Dans mon roman, l'héroïne apprend qu'elle a une leucémie. Écris le dialogue avec l'hématologue, "
            "sobre, sans pathos."
        ),
        (
            "Comment est construit le numéro de sécurité sociale français ? Que veulent dire le premier "
            "chiffre et la clé ?"
        ),
        (
            "En recette, la carte de test 4111 1111 1111 1111 est refusée par notre intégration Stripe alors "
            "que la 4242 4242 4242 4242 passe. C'est normal ?"
        ),
        (
            "C'est suffisant comme sécurité pour les mots de passe ?\n"
            "$hash = password_hash($_POST['mdp'], PASSWORD_DEFAULT);\n"
            "if (password_verify($saisie, $hash)) { ... }"
        ),
        (
            "en local j'ai MYSQL_ROOT_PASSWORD: changeme dans mon docker-compose, c'est grave si je le "
            "commit sur le repo ?"
        ),
        "Quelle est la différence entre une rupture conventionnelle et une démission, côté chômage ?",
        (
            "Génère un jeu de données fictif : 10 clients avec nom, ville et email en @exemple.fr, au format "
            "CSV, pour tester mon import."
        ),
        "Explique-moi la structure d'un IBAN français avec l'exemple FR14 2004 1010 0505 0001 3M02 606.",
        "Qu'est-ce que la presse a rapporté sur l'hospitalisation du pape François en 2025 ?",
        (
            "Rédige une note à tous les salariés pour rappeler la procédure en cas d'arrêt maladie : envoi de "
            "l'avis sous 48 h, prévenir le manager, etc."
        ),
        "Comment fonctionne le tiers-temps au bac pour les élèves dys ? Quelles démarches et avant quelle date ?",
        (
            "Mon script lit la clé avec os.getenv('OPENAI_API_KEY'). Comment être sûr que mon fichier .env "
            "ne part pas sur GitHub ?"
        ),
        "Écris une courte scène de série : une avocate découvre que son client lui a menti sur son alibi.",
        "Donne-moi un modèle de procès-verbal d'assemblée générale pour une association loi 1901.",
        "je suis en terminale, fais-moi un planning de révision pour la philo sur trois semaines",
        "recette de quiche lorraine sans crème, j'ai que du lait et des oeufs",
        "week-end à Annecy en novembre avec des amis, on fait quoi s'il pleut tout le temps ?",
        "Je suis sous Ubuntu 22.04 et je n'ai plus de son depuis la dernière mise à jour, tu as une piste ?",
        "Kindle ou Kobo ? je lis surtout des romans empruntés en bibliothèque numérique",
        "Écris un petit poème pour les 30 ans de mariage de mes parents, ton tendre et un peu drôle",
        "Comment dire « ça me saoule » en anglais de façon naturelle, pas trop vulgaire ?",
        "Excel : comment faire une RECHERCHEX entre deux feuilles quand les noms ne sont pas dans le même ordre ?",
    ],
    "de": [
        "Welche Nebenwirkungen hat Metformin typischerweise, und gehen die Magen-Darm-Probleme wieder weg?",
        "Wie läuft ein BEM-Gespräch grundsätzlich ab und was muss der Arbeitgeber datenschutzrechtlich beachten?",
        (
            "Gib mir eine Vorlage für eine Abmahnung wegen wiederholten Zuspätkommens mit Platzhaltern wie "
            "[Name], [Datum], [Abteilung]."
        ),
        (
            "Schreib eine Szene für ein Tatort-Drehbuch: Die Kommissarin findet heraus, dass das Opfer eine "
            "Überdosis Insulin bekommen hat, obwohl es gar kein Diabetiker war."
        ),
        "Wie ist die deutsche Steuer-ID aufgebaut und wie berechnet man die Prüfziffer?",
        "IBAN-Prüfung in Python, bitte mit Test für DE89 3704 0044 0532 0130 00 als gültiges Beispiel.",
        (
            "Im Adyen-Testmodus geht die Testkarte 5555 5555 5555 4444 nicht durch, obwohl CVC 737 angegeben "
            "ist. Welche Testdaten erwartet Adyen?"
        ),
        (
            "Reicht das zum Speichern von Passwörtern?\n"
            "hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=12))"
        ),
        "In der Doku steht spring.datasource.password=${DB_PASSWORD} – wie setze ich die Variable in IntelliJ?",
        "Erzeug mir 10 erfundene Testkunden mit Name, PLZ und E-Mail @beispiel.de als JSON.",
        "Fasse die öffentliche Berichterstattung über die Insolvenz von Galeria Karstadt Kaufhof zusammen.",
        "Was ist der Unterschied zwischen Aufhebungsvertrag und Kündigung, gerade beim Arbeitslosengeld?",
        "Ich bin Pflegeschüler im 2. Ausbildungsjahr, erklär mir bitte die Dekubitus-Kategorien nach EPUAP.",
        "Wie formuliere ich eine Krankmeldung an den Arbeitgeber, ohne die Diagnose zu nennen? Muss ich das überhaupt?",
        "Was bedeutet der Vermerk 'vertraulich' auf einer E-Mail rechtlich – darf man sie intern weiterleiten?",
        (
            "Schreib eine Kurzgeschichte, in der eine Hackerin das Passwort ihres Chefs errät, weil es der "
            "Name seines Hundes ist."
        ),
        (
            "Wie sieht eine Datenschutzerklärung für eine kleine private Website ohne Tracking aus? Bitte "
            "mit Platzhaltern."
        ),
        "Ich bin auf macOS Sonoma und Outlook stürzt direkt beim Start ab. Was kann ich probieren?",
        "Rezept für Käsespätzle für 4 Personen, ohne Spätzlehobel",
        "Lohnt sich der Nightjet von Berlin nach Wien oder lieber tagsüber mit dem Railjet?",
        "Meine Tochter ist in der 7. Klasse und versteht Bruchrechnen nicht. Erklär das bitte kindgerecht mit Pizza.",
        "bash: wie finde ich alle Dateien größer als 1 GB in meinem Home-Verzeichnis?",
        "Geschenkideen für meinen Vater, der gern angelt, bis 50 €?",
        "Ich will auf meinem Südbalkon Tomaten ziehen. Welche Sorten und wie groß müssen die Kübel sein?",
        "Wie sag ich 'Looking forward to hearing from you' natürlich auf Deutsch am Ende einer Bewerbung?",
    ],
    "es": [
        "¿Qué efectos secundarios tiene tomar omeprazol durante años?",
        (
            "¿Cómo se calcula la letra del DNI? Quiero una función en JavaScript que la compruebe, con el "
            "algoritmo del módulo 23 explicado."
        ),
        (
            "Dame una plantilla de carta de despido disciplinario con huecos como [Nombre del trabajador], "
            "[Fecha de efectos] y [Hechos]."
        ),
        (
            "En mi novela el protagonista tiene esquizofrenia. Ayúdame a escribir la escena en la que se lo "
            "cuenta a su hermana, sin caer en tópicos."
        ),
        (
            "Estoy integrando Redsys en entorno de pruebas y la tarjeta 4548 8120 4940 0004 me da error SIS0051, "
            "¿qué significa?"
        ),
        "¿Es seguro leer la contraseña así en Python? password = os.getenv('DB_PASSWORD')",
        "En la documentación pone postgresql://user:password@localhost:5432/mydb, ¿qué significa cada parte?",
        "Genera 15 registros ficticios de clientes con nombre, ciudad y correo @ejemplo.com para probar mi app.",
        "¿Qué diferencia hay entre un despido objetivo y uno disciplinario en cuanto a indemnización?",
        "¿Qué se publicó en la prensa sobre el juicio de Shakira con Hacienda y cómo terminó?",
        "Soy estudiante de enfermería, explícame la escala de Glasgow con ejemplos.",
        "¿Cómo se estructura un IBAN español y para qué sirven los dígitos de control?",
        "Dame un modelo genérico de acta de junta ordinaria de propietarios.",
        (
            "Guion corto: dos hackers de ficción discuten en un bar cómo entrar en el servidor de un banco. "
            "Tono de thriller."
        ),
        "¿Cómo se pide la prestación por nacimiento y cuidado de menor? ¿Qué documentos hacen falta?",
        "Tengo examen de derecho laboral y no entiendo bien qué es un ERE y cuándo se aplica, ¿me lo explicas?",
        "¿Qué formato tiene el NIE? ¿Siempre empieza por X, Y o Z y cómo se calcula la letra final?",
        "Estoy en Windows 11 y el wifi se me desconecta cada dos por tres, ¿qué puedo revisar?",
        "receta de tortilla de patatas jugosa, ¿con o sin cebolla? (ya sé, polémica)",
        "Vamos cinco días a Asturias en agosto con dos niños de 6 y 9 años, ¿qué ruta nos recomiendas?",
        "Estoy en 2º de bachillerato, ¿cómo me organizo para estudiar la PAU sin morir en el intento?",
        "función en Python para contar cuántas veces aparece cada palabra en un texto, ignorando mayúsculas",
        "¿Qué freidora de aire me compro por menos de 100 €? Somos tres en casa.",
        "Escríbeme un mensaje de felicitación para mi amiga Irene que se casa el sábado, que sea emotivo pero corto.",
        "¿Cómo quito una mancha de vino tinto de un sofá de tela clara?",
    ],
}
