"""Seventh held-out batch of privacy prompts, written without looking at the detector; see README.md."""

from __future__ import annotations

HELDOUT7_SENSITIVE: dict[str, list[tuple[str, list[str]]]] = {
    "en": [
        (
            "can you help me word a text to my sister? mum's biopsy came back and it's stage 2 breast cancer, "
            "she starts chemo on the 14th at St Luke's. I don't want to scare her but she needs to know before "
            "sunday lunch. dad doesn't know yet",
            ["health"],
        ),
        (
            'Please rewrite this letter in plain English so my dad can understand it:\n\n"Dear Dr Okafor, I '
            "reviewed Mr Harold Pennington (DOB 03/11/1951) in the cardiology clinic today. Echo shows "
            "moderate aortic stenosis, peak velocity 3.6 m/s, LVEF 45%. He reports breathlessness on one "
            "flight of stairs. Plan: continue bisoprolol 2.5 mg, add furosemide 20 mg od, repeat echo in 6 "
            'months and refer to the TAVI MDT."',
            ["health"],
        ),
        (
            "HR question. One of my direct reports, Priya Raman (analyst, 3 yrs with us), told me in our 1:1 "
            "that she was diagnosed with bipolar II in the spring and is asking to drop to 4 days a week on "
            "80% pay. Draft a reply that agrees to a 3-month trial and mentions Occupational Health.",
            ["health", "confidential"],
        ),
        (
            "got diagnosed with type 1 diabetes last month (at 34, who knew) and my HbA1c was 11.2. I work "
            "night shifts as a paramedic. what should I be eating before a 12h shift so I don't go hypo at 4am?",
            ["health"],
        ),
        (
            "tidy up this SOAP note pls, keep it concise:\nS: 8yo M, 3/7 fever up to 39.4, L ear pain, pulling "
            "at ear, eating less. Mum (Mrs Kowalczyk) gave ibuprofen.\nO: L TM bulging + erythematous, R TM "
            "normal. Chest clear.\nA: acute otitis media L\nP: amoxicillin 80mg/kg/day div BD x 5 days, "
            "safety-net advice, review if not better 72h",
            ["health"],
        ),
        (
            "Make this sound more professional for my manager Glen: 'hi glen, im going to be off from monday "
            "for about 6 weeks because im having a hysterectomy (fibroids finally got bad enough), fit note to "
            "follow, sorry for the short notice'",
            ["health"],
        ),
        (
            "CONFIDENTIAL - BOARD PACK Q3, ITEM 4. Summarise in 5 bullets for the chair: Project Heron, "
            "proposed acquisition of Lindqvist Marine Ltd for £42m (7.5x EBITDA). Due diligence flagged a "
            "£6.1m defined-benefit pension deficit and a pending HSE investigation at the Grimsby yard. "
            "Recommendation: proceed subject to a £4m price chip.",
            ["confidential"],
        ),
        (
            "We're letting Darren Whitfield go from the warehouse team on Friday (repeated no-shows, final "
            "written warning in June). Settlement agreed with his union rep is £8,400 plus 3 months' pay in "
            "lieu of notice. Can you draft the termination letter? Keep it short and not harsh.",
            ["confidential"],
        ),
        (
            "Our company (Brightwater Logistics Ltd) got a letter before action from a former driver, Kevin "
            "Marsh, claiming unfair dismissal and unpaid holiday, he's asking for £23,000. Our ops manager "
            "admits the disciplinary hearing was never minuted. What are our options, settle or defend?",
            ["confidential"],
        ),
        (
            "here's our team salary sheet, which of these look below market for London?\n\n"
            "name,role,base,bonus\nAmira Shah,Senior Engineer,92000,12%\nTom Beckett,Engineer II,61000,8%\n"
            "Ruth Adeyemi,Staff Engineer,118000,15%\nLiam O'Rourke,Engineer I,47500,5%",
            ["confidential"],
        ),
        (
            "Internal only, do not forward. Help me write the talking points for managers: we are closing the "
            "Leeds contact centre on 31 January, 38 roles at risk, consultation starts Monday, redeployment "
            "offered to Manchester with £3k relocation. Staff must not hear about this before the Monday "
            "briefing.",
            ["confidential"],
        ),
        (
            "why does my app keep saying invalid api key?? this is my .env:\n\nOPENAI_API_KEY=<<sk>>\n"
            "DATABASE_URL=postgres://app_admin:<<pw>>@db-prod-01.internal:5432/billing\nNODE_ENV=production\n\n"
            "and I load it with dotenv in index.js",
            ["secret"],
        ),
        (
            'curl -H "Authorization: token <<ghp>>" '
            "https://api.github.com/repos/acme-tools/infra/actions/runs\n\nreturns 403 resource not accessible "
            "by integration. the token has repo scope, what am I missing",
            ["secret"],
        ),
        (
            'terraform plan fails with InvalidClientTokenId, here\'s my provider block:\n\nprovider "aws" {\n'
            '  region     = "eu-west-2"\n  access_key = "<<akia>>"\n  secret_key = "<<aws_secret>>"\n}\n'
            "\nI copied them from the IAM console 10 minutes ago",
            ["secret"],
        ),
        (
            "Fix the formatting of the header on my CV, it looks messy:\n\nMarcus T. Delgado\n2217 W Belmont "
            "Ave, Apt 3R, Chicago IL 60618 | <<phone_us>> | marcus.delgado88@outlook.com | "
            "linkedin.com/in/mdelgado",
            ["contact"],
        ),
        (
            "Turn this into a cute invitation: Grandma Rose is turning 90!! party at our house, 14 Larkspur "
            "Close, Didcot OX11 7GH, Saturday 2pm, bring a photo of you with her. RSVP to me at "
            "jen.halloway@gmail.com",
            ["contact"],
        ),
        (
            "The gym charged my card twice in March (£39.99 each). Card is <<card>>, exp 09/27. Write me a "
            "chargeback request to my bank, I already emailed the gym and got nothing back.",
            ["payment_card"],
        ),
        (
            "can you fill in the W-4 details into a table so I can copy them? Latisha Brooks, SSN <<ssn>>, "
            "4410 Magnolia Dr, Tulsa OK 74105, single, 1 dependent under 17, no other jobs",
            ["national_id", "contact"],
        ),
        (
            "the payroll portal keeps rejecting my NI number, I'm typing <<nino>> with no spaces. Is there "
            "something wrong with the format or is it their system?",
            ["national_id"],
        ),
        (
            "Write a quick WhatsApp to my landlord Mr Hussain: from November the rent will come from my new "
            "account, name Tomasz Wiśniewski, IBAN <<iban_gb>>, standing order on the 1st as usual.",
            ["iban"],
        ),
    ],
    "fr": [
        (
            "tu peux m'aider à écrire un message à mon frère ? papa a fait un AVC jeudi soir, il est au CHU de "
            "Nantes en neuro, hémiplégie droite et il n'arrive plus à parler. les médecins disent qu'on saura "
            "d'ici 15 jours s'il récupère. je veux pas qu'il l'apprenne par maman au téléphone",
            ["health"],
        ),
        (
            "Peux-tu me résumer ce compte rendu d'hospitalisation de ma mère en langage simple ?\n\n« Mme "
            "Colette Brunet, 78 ans, admise le 02/04 pour décompensation cardiaque gauche sur FA rapide. "
            "Antécédents : HTA, insuffisance rénale chronique stade 3. Sortie sous furosémide 40 mg, apixaban "
            "2,5 mg x2. Consultation cardio à 1 mois. »",
            ["health"],
        ),
        (
            "j'ai une sclérose en plaques depuis 2019 (forme rémittente, traitement par ocrelizumab) et les "
            "poussées me fatiguent beaucoup. est-ce que je suis obligée d'en parler à mon employeur pour "
            "demander 2 jours de télétravail ? comment je formule ça sans tout dire",
            ["health"],
        ),
        (
            "Reformule mes notes de consultation en un courrier propre pour le médecin traitant : M. Karim "
            "Haddad, 45 ans, cariste, lombosciatique gauche L5 depuis 3 semaines, Lasègue positif à 40°, pas "
            "de déficit moteur. Arrêt de travail 15 jours, tramadol 50 mg, IRM demandée.",
            ["health"],
        ),
        (
            "Note RH – confidentiel. Mme Sandrine Leroy, comptable chez nous depuis 11 ans, est en arrêt "
            "maladie depuis 3 mois pour épuisement professionnel. La direction envisage de lui proposer une "
            "rupture conventionnelle avec une indemnité de 14 500 €. Aide-moi à préparer l'entretien sans que "
            "ça ressemble à une pression.",
            ["health", "confidential"],
        ),
        (
            "Corrige ce mail pour la maîtresse stp : Bonjour Mme Garnier, je vous rappelle que Lucas est "
            "allergique à l'arachide, il a fait un choc anaphylactique en 2022. L'Anapen est dans son "
            "cartable, le PAI est signé. En cas de souci vous pouvez me joindre au <<phone_fr>> à tout moment. "
            "Cordialement, Aurélie Fontaine",
            ["health", "contact"],
        ),
        (
            "CONFIDENTIEL — Comité de direction du 12 mars. Fais-moi une synthèse d'une demi-page : projet de "
            "fermeture du site de Roubaix fin 2025, 112 postes concernés, budget PSE estimé à 9,8 M€, "
            "transfert de la production vers l'usine de Poznań. Annonce aux syndicats prévue le 3 avril, "
            "aucune fuite avant.",
            ["confidential"],
        ),
        (
            "On a reçu une mise en demeure de notre fournisseur Textiles Ardent SAS, ils réclament 47 300 € "
            "d'impayés plus pénalités. En vrai on conteste deux livraisons défectueuses (bons du 14/01 et "
            "02/02). Aide-moi à rédiger notre réponse, ton ferme mais pas fermé à un accord.",
            ["confidential"],
        ),
        (
            "je dois faire l'entretien annuel de Julien Moreau vendredi et lui dire qu'il n'aura pas "
            "d'augmentation cette année (objectifs atteints à 62 %) et qu'on prolonge pas son statut cadre. il "
            "va mal le prendre. tu me proposes une trame ?",
            ["confidential"],
        ),
        (
            "Résultats S1 non publiés — ne pas diffuser avant le 28 juillet. CA 18,4 M€ (-12 %), EBITDA 1,1 "
            "M€, covenant bancaire à la limite. Prépare-moi 3 slides pour le conseil avec un message rassurant "
            "mais honnête.",
            ["confidential"],
        ),
        (
            "mon docker-compose ne démarre pas, le conteneur api dit connexion refusée :\n\nservices:\n  db:\n"
            "    image: postgres:16\n    environment:\n      POSTGRES_USER: compta\n      POSTGRES_PASSWORD: "
            "<<pw>>\n  api:\n    environment:\n      DATABASE_URL: postgresql://compta:<<pw>>@db:5432/compta\n"
            "\nune idée ?",
            ["secret"],
        ),
        (
            "mon bot ne poste rien dans le channel #alertes, voici le bout de code :\n\nclient = "
            'WebClient(token="<<slack>>")\nclient.chat_postMessage(channel="#alertes", text="test")\n\n'
            "j'ai bien invité le bot dans le channel",
            ["secret"],
        ),
        (
            'ssh me dit "invalid format" quand j\'essaie de me connecter au serveur de prod, voici le contenu '
            "de mon fichier id_rsa, tu vois un problème ?\n\n<<pem>>",
            ["secret"],
        ),
        (
            "Corrige l'orthographe de mon annonce : Vend vélo cargo Babboe, très bon état, 1200€, à venir "
            "chercher chez moi : Élodie Marchand, 27 rue des Tanneurs, 67000 Strasbourg. Me contacter par mail "
            "elodie.marchand67@orange.fr",
            ["contact"],
        ),
        (
            "rédige un petit mot à glisser dans les boîtes aux lettres : nous sommes la famille Benali, on "
            "emménage au 3e étage du 8 allée des Peupliers à Villeurbanne samedi, désolés pour le bruit, en "
            "cas de souci appelez Samir au <<phone_fr>>",
            ["contact"],
        ),
        (
            "pour le formulaire de la mutuelle ils demandent le numéro de sécu, le mien c'est <<nir>>. je le "
            "mets avec la clé ou sans ? il y a 15 cases",
            ["national_id"],
        ),
        (
            "Prépare la fiche pour la DPAE : Thomas Girard, né le 12/09/1994 à Rennes, NIR <<nir>>, CDI à "
            "temps plein à partir du 1er juin, salaire brut mensuel 3 250 €, période d'essai 4 mois. Présente "
            "ça en tableau.",
            ["national_id", "confidential"],
        ),
        (
            "Écris un mail à mon locataire pour lui dire que j'ai changé de banque et que le loyer doit "
            "maintenant être viré sur ce compte : IBAN <<iban_fr>>, titulaire Bernard Fabre. Merci de modifier "
            "le virement avant le 5.",
            ["iban"],
        ),
        (
            "J'ai été débitée deux fois de 148 € par un site de billetterie sur ma carte <<card>>. Aide-moi à "
            "écrire la réclamation à ma banque, j'ai les deux lignes sur mon relevé du 17.",
            ["payment_card"],
        ),
        (
            "peux-tu écrire un message gentil à mon père pour qu'il fasse le virement de l'acompte du traiteur "
            "pour le mariage ? 2 400 € sur le compte <<iban_fr>> (Traiteur Delorme), référence MARIAGE-JUIN",
            ["iban"],
        ),
    ],
    "de": [
        (
            "Kannst du mir helfen, eine WhatsApp an meine Schwester zu formulieren? Bei Mama wurde gestern in "
            "der Uniklinik Freiburg Alzheimer im Frühstadium festgestellt. Der Neurologe hat Donepezil "
            "verschrieben und meint, sie sollte nicht mehr Auto fahren. Ich will nicht, dass es zu dramatisch "
            "klingt.",
            ["health"],
        ),
        (
            "Bitte erklär mir diesen Arztbrief von meinem Vater in einfachen Worten:\n\nPatient: Herr Günther "
            "Albrecht, geb. 14.06.1958\nDiagnosen: Z.n. NSTEMI 02/2024, koronare 3-Gefäß-KHK, Diabetes "
            "mellitus Typ 2 (HbA1c 8,1 %), arterielle Hypertonie\nEmpfehlung: ASS 100 mg, Ticagrelor 90 mg "
            "1-0-1 für 12 Monate, Metformin 1000 mg 1-0-1",
            ["health"],
        ),
        (
            "ich bin in der 11. ssw und hatte heute morgen leichte blutungen, keine schmerzen. meine "
            "frauenärztin ist im urlaub. muss ich sofort in die klinik oder kann ich bis montag warten?",
            ["health"],
        ),
        (
            "Fass mir das Übergabeprotokoll für den Spätdienst kurz zusammen: Bewohnerin Frau Hildegard "
            "Wenzel, Zi. 214, Dekubitus Grad 2 sakral, MRSA-positiv (Isolierung!), BZ heute früh 243, Insulin "
            "8 IE gespritzt, trinkt schlecht, Tochter kommt um 16 Uhr.",
            ["health"],
        ),
        (
            "BEM-Gespräch vorbereiten: unser Mitarbeiter Stefan Brückner (Lager, 52) war dieses Jahr 74 Tage "
            "krank, erst Bandscheibenvorfall L4/L5, dann wegen einer Depression. Wie spreche ich das an, ohne "
            "dass er sich unter Druck gesetzt fühlt? Er hat Angst um seinen Job.",
            ["health", "confidential"],
        ),
        (
            "Unser Sohn Jonas (7) hat letzte Woche die Diagnose ADHS bekommen und nimmt jetzt Medikinet 10 mg "
            "morgens. Hilf mir, einen Brief an die Klassenlehrerin zu schreiben, damit sie Bescheid weiß, "
            "falls er mittags unruhig wird.",
            ["health"],
        ),
        (
            "VERTRAULICH – Aufsichtsratsvorlage TOP 3. Bitte eine Executive Summary auf Deutsch und Englisch: "
            "Erwerb von 100 % der Kröger Antriebstechnik GmbH, Kaufpreis 61 Mio. €, Finanzierung über "
            "Schuldschein 40 Mio. €, Closing geplant Q2. Risiko: laufendes Kartellverfahren gegen Kröger in "
            "Polen.",
            ["confidential"],
        ),
        (
            "ich muss Herrn Yilmaz aus der Buchhaltung abmahnen, er hat am 3. und 17. März unentschuldigt "
            "gefehlt und am 24. März die Zeiterfassung manipuliert. Kannst du die Abmahnung formulieren, "
            "rechtssicher bitte",
            ["confidential"],
        ),
        (
            "Gehälter Team Vertrieb Süd (nur intern):\nMüller, Key Account, 68.000\nSchneider, Key Account, "
            "72.500\nÖzdemir, Inside Sales, 49.000\nBauer, Inside Sales, 58.000\n\nWer liegt unter dem Tarif "
            "ERA Bayern EG 11? Ich muss das bis Freitag dem GF erklären.",
            ["confidential"],
        ),
        (
            "Wir vertreten die Hofmann Bau GmbH gegen die Stadtwerke Kassel, Streitwert 1,2 Mio. €. Die "
            "Gegenseite hat heute einen Vergleich über 400.000 € angeboten, unser Mandant hätte gern 650.000 "
            "€. Entwirf mir eine Antwort an die Gegenseite, die Spielraum lässt.",
            ["confidential"],
        ),
        (
            "warum bekomme ich 401 unauthorized? hier mein fetch:\n\nconst res = await "
            "fetch('https://api.lagerwelt.de/v2/orders', {\n  headers: { Authorization: 'Bearer <<jwt>>' }\n"
            "});\n\nder token ist von heute morgen",
            ["secret"],
        ),
        (
            "Spring Boot startet nicht, Access denied for user. application.yml:\n\nspring:\n  datasource:\n"
            "    url: jdbc:mysql://10.0.3.15:3306/erp\n    username: erp_prod\n    password: <<pw>>\n\nMit dem "
            "gleichen Passwort komme ich über DBeaver rein.",
            ["secret"],
        ),
        (
            'Google Maps lädt auf unserer Seite nur grau mit "This page can\'t load Google Maps correctly". '
            "Eingebunden so: <script "
            'src="https://maps.googleapis.com/maps/api/js?key=<<aiza>>&callback=initMap"></script>. Was '
            "mache ich falsch?",
            ["secret"],
        ),
        (
            "Schreib mir eine Kündigung für meinen Handyvertrag zum nächstmöglichen Zeitpunkt. Absender: "
            "Katrin Vogt, Lindenstraße 42, 04177 Leipzig, katrin.vogt@gmx.de, Kundennummer 88213390",
            ["contact"],
        ),
        (
            "Mach mir einen Einladungstext fürs Klassentreffen (Abi 2004, Gymnasium Rosenheim). Anmeldung bis "
            "15. Mai bei Jörg Brandt, Am Mühlbach 7, 83022 Rosenheim, Tel. <<phone_de>>",
            ["contact"],
        ),
        (
            "ELSTER meckert bei meiner Steuer-ID, ich hab <<idnr>> eingegeben, genau so wie auf dem Brief vom "
            "Bundeszentralamt. Kann die Nummer falsch sein oder liegt das an ELSTER?",
            ["national_id"],
        ),
        (
            "Formatier mir das als CSV-Zeile für den Import ins Lohnprogramm: Lena Kowalski; geb. 03.02.2001; "
            "Steuer-ID <<idnr>>; IBAN <<iban_de>>; Minijob ab 01.10.",
            ["national_id", "iban"],
        ),
        (
            "Schreib bitte an meinen Vermieter, Herrn Kraus, dass die Wohnung am 30.9. übergeben wurde und er "
            "mir die Kaution (2.100 €) auf mein neues Konto überweisen soll: IBAN <<iban_de>>. Freundlich, "
            "aber bestimmt.",
            ["iban"],
        ),
        (
            'Meine Bestellung hängt seit gestern auf "Zahlung wird geprüft". Ich hab die Kreditkarte '
            "<<card>>, gültig bis 11/26, Prüfnummer 381 eingegeben. Soll ich nochmal bestellen oder abwarten?",
            ["payment_card"],
        ),
        (
            "Interne Mail an den Betriebsrat vorbereiten: die Kündigung von Frau Petra Lang (Lager, 12 Jahre "
            "Betriebszugehörigkeit) ist betriebsbedingt zum 30.06. geplant, Abfindungsangebot 0,5 "
            "Monatsgehälter pro Jahr. Anhörung nach § 102 BetrVG, bitte formal korrekt.",
            ["confidential"],
        ),
    ],
    "es": [
        (
            "ayúdame a escribirle a mi tía Maribel, no sé cómo decírselo: a mi padre le han diagnosticado un "
            "cáncer de colon con metástasis en el hígado, empieza la quimio el lunes en La Fe. no quiere que "
            "lo sepa la abuela todavía",
            ["health"],
        ),
        (
            "Resúmeme este informe de alta de mi abuela para explicárselo a mis primos:\n\nPaciente: Dolores "
            "Ruiz Pardo, 82 años. Motivo de ingreso: neumonía bilateral. Antecedentes: EPOC, FA anticoagulada. "
            "Saturación al ingreso 88 %. Tratamiento al alta: levofloxacino 500 mg 7 días, oxigenoterapia "
            "domiciliaria 16 h/día.",
            ["health"],
        ),
        (
            "tengo ansiedad generalizada y tomo escitalopram 15 mg desde hace un año. el sábado es la boda de "
            "mi hermano, ¿pasa algo si me tomo un par de copas de vino o mejor nada?",
            ["health"],
        ),
        (
            "Pásame a limpio estas notas de fisio: Andrés Molina, 31 a, futbolista aficionado, rotura parcial "
            "LCA rodilla dcha (RM 12/05), derrame leve, flexión 100°, extensión completa. Plan: 3 "
            "sesiones/semana, fortalecimiento cuádriceps, revisión traumatólogo en 6 semanas.",
            ["health"],
        ),
        (
            "Consulta de RRHH: nuestra empleada Marta Quintana (administrativa, 8 años en la empresa) nos ha "
            "entregado un informe médico, está en tratamiento de radioterapia por cáncer de mama y pide "
            "adaptar su jornada a mañanas durante 4 meses. ¿Cómo le contestamos? Queremos decir que sí.",
            ["health", "confidential"],
        ),
        (
            "escríbeme una nota para la cuidadora nueva: mi madre, Carmen, tiene diabetes tipo 2 y se pone "
            "Lantus 20 unidades por la noche, si está sudorosa o confusa dale zumo y llámame enseguida al "
            "<<phone_es>>. Que suene claro pero amable",
            ["health", "contact"],
        ),
        (
            "CONFIDENCIAL – borrador de acta del consejo de administración del 18 de octubre. Redáctalo en "
            "estilo formal: se aprueba una ampliación de capital de 3,5 M€ con entrada del fondo Atalaya "
            "Capital con un 22 %, y el cese del director financiero, Sr. Ledesma, con efectos 31/12.",
            ["confidential"],
        ),
        (
            "Vamos a despedir a Raúl Ortega, comercial de la zona de Levante, por bajo rendimiento (ha "
            "cumplido un 40 % del objetivo dos años seguidos). Tiene 9 años de antigüedad. Redacta la carta de "
            "despido objetivo con la indemnización de 20 días por año.",
            ["confidential"],
        ),
        (
            "Nos ha llegado una papeleta de conciliación: un ex-empleado de Grupo Alvear SL, Iván Pastor, "
            "reclama 41.000 € en horas extra de 2022 y 2023. La verdad es que no teníamos registro de jornada. "
            "¿Qué nos conviene, ofrecer un acuerdo en el SMAC o ir a juicio?",
            ["confidential"],
        ),
        (
            "Tabla de bonus 2024 – USO INTERNO\nLucía Fernández | 6.000 €\nJorge Sanz | 4.500 € (antes 7.000)\n"
            "Pilar Ibáñez | 5.200 €\n\n¿cómo le explico a Jorge en la reunión del jueves que se le baja el "
            "bonus sin que se desmotive?",
            ["confidential"],
        ),
        (
            "mi script de node no conecta a la base de datos, me sale MongoServerError: bad auth. la uri es "
            "esta:\n\nmongodb+srv://admin_prod:<<pw>>@cluster0.x7k2q.mongodb.net/tienda?retryWrites=true\n\n"
            "¿hay que escapar algún carácter?",
            ["secret"],
        ),
        (
            "¿Por qué me da error 429 si apenas hago llamadas? Mi código:\n\nfrom openai import OpenAI\nclient "
            '= OpenAI(api_key="<<sk>>")\nresp = client.chat.completions.create(model="gpt-4o-mini", '
            'messages=[{"role": "user", "content": "hola"}])',
            ["secret"],
        ),
        (
            "En el workflow de GitHub Actions puse el token directamente porque con secrets no me iba:\n\n"
            "      - run: git push https://x-access-token:<<ghp>>@github.com/hermanos-soto/web.git\n\ny ahora "
            "dice Bad credentials, ¿qué está mal?",
            ["secret"],
        ),
        (
            "Corrige este anuncio para Idealista: Se alquila habitación en piso compartido, calle Sagasta 18, "
            "3º B, 28004 Madrid, 450 € con gastos. Preguntar por Nerea, nerea.villalba93@hotmail.com",
            ["contact"],
        ),
        (
            "Haz un mensaje para el grupo de padres de 2º B: la delegada este curso es Beatriz Ocaña, para la "
            "excursión podéis dejar el dinero en su casa (Avda. de la Constitución 45, 2º izq., Sevilla) o "
            "llamarla al <<phone_es>>",
            ["contact"],
        ),
        (
            "en la sede electrónica de la Seguridad Social me pide el DNI y pongo <<dni>> pero dice que la "
            "letra no corresponde. ¿se me está escapando algo?",
            ["national_id"],
        ),
        (
            "Soy italiana y vivo en Valencia desde marzo. Mi NIE es <<nie>>, ¿me ayudas a rellenar la "
            "solicitud de empadronamiento? ¿En qué casilla va el NIE y en cuál el pasaporte?",
            ["national_id"],
        ),
        (
            "Redacta un aviso para los inquilinos del local: a partir de enero la renta se ingresa en la "
            "cuenta <<iban_es>>, titular Francisco Gil Moreno, concepto «alquiler + mes».",
            ["iban"],
        ),
        (
            "Me han cobrado 29,99 € de una suscripción que nunca pedí en la tarjeta <<card>>, caduca 04/28. "
            "¿Cómo lo reclamo al banco? Escríbeme el texto.",
            ["payment_card"],
        ),
        (
            "Orden de pago urgente – confidencial. Redacta el correo para tesorería: transferir hoy 18.750 € a "
            "Construcciones Benítez SL, IBAN <<iban_es>>, certificación n.º 4 de la obra de Alcobendas. Que no "
            "se entere compras hasta el cierre de mes.",
            ["iban", "confidential"],
        ),
    ],
}

HELDOUT7_BENIGN: dict[str, list[str]] = {
    "en": [
        "what are the early signs of breast cancer and from what age is screening offered in the UK?",
        "In general terms, what does an ejection fraction of 45% mean? Is that heart failure?",
        (
            "Give me a template letter for agreeing a reasonable adjustment for an employee with a mental "
            "health condition. Use placeholders like [Employee Name], [Adjustment], [Review Date]."
        ),
        (
            "I'm writing a thriller where the detective has type 1 diabetes. What would a bad hypo look like "
            "in the middle of a foot chase, realistically? I want it to feel accurate."
        ),
        (
            "Draft a redundancy termination letter template for the UK with placeholders: [Employee Name], "
            "[Job Title], [Last Working Day], [Redundancy Payment]."
        ),
        "what's the difference between unfair dismissal and wrongful dismissal in the UK, short answer",
        (
            "stripe test mode: payment with 4242 4242 4242 4242, any future expiry and cvc 123 still fails "
            "with 'card_declined'. is there a setting I'm missing on the PaymentIntent?"
        ),
        (
            "How do I stop hardcoding the DB connection? right now I have\n\nconn = "
            'psycopg2.connect("postgresql://user:password@localhost:5432/mydb")\n\nand I want to read it '
            "from os.environ['DATABASE_URL'] with a sensible error if it's missing"
        ),
        (
            "The AWS docs show aws_access_key_id = AKIAIOSFODNN7EXAMPLE in ~/.aws/credentials. How do I set up "
            "two profiles, one for dev and one for prod, and switch between them in the CLI?"
        ),
        "How is a US social security number structured? Do the first three digits still mean the state?",
        "Break down GB29 NWBK 6016 1331 9268 19 for me, which part is the sort code and what's the check digit for?",
        "write a python regex that validates UK National Insurance numbers, including the disallowed prefixes",
        (
            "Outline a board paper template for proposing an acquisition: executive summary, rationale, "
            "valuation, risks, recommendation. Just headings and one line on each."
        ),
        "easy sourdough recipe for a total beginner, I don't have a dutch oven",
        (
            "write a polite email to the hotel's reservations address (reservations@example.com) asking "
            "whether a late checkout at 2pm is possible on the 12th"
        ),
        (
            "my function to mask card numbers before logging is off by one, can you fix it?\n\ndef mask(pan: "
            "str) -> str:\n    return '*' * (len(pan) - 3) + pan[-3:]"
        ),
        "How long is recovery after a hysterectomy usually, and when are you allowed to drive again?",
        "Summarise the plot of Hamlet in five bullet points for a Year 10 revision sheet.",
        (
            "Make me a fake salary spreadsheet with 10 made-up employees (names, department, salary, bonus) so "
            "I can teach pivot tables to my team"
        ),
        (
            "In my screenplay the villain leaves a voicemail: 'call me back at 555-0143'. Does that number "
            "format look believable for a film set in Ohio?"
        ),
    ],
    "fr": [
        "Quels sont les signes d'un AVC ? J'ai entendu parler d'un moyen mnémotechnique, VITE je crois",
        "C'est quoi la différence entre insuffisance cardiaque à fraction d'éjection préservée et réduite ?",
        (
            "Comment fonctionne une rupture conventionnelle ? Délai de rétractation, homologation, indemnité "
            "minimale, et est-ce possible pendant un arrêt maladie ?"
        ),
        (
            "Donne-moi un modèle de lettre de convocation à entretien préalable à licenciement, avec [Nom du "
            "salarié], [Date de l'entretien], [Lieu] en champs à remplir"
        ),
        (
            "J'écris un roman : l'héroïne, infirmière à Lyon, apprend qu'elle a une sclérose en plaques à 29 "
            "ans. Aide-moi à écrire la scène de l'annonce du diagnostic, du point de vue de la neurologue."
        ),
        (
            "Comment est construit le numéro de sécurité sociale en France ? À quoi correspondent les 13 "
            "chiffres et la clé ?"
        ),
        (
            "écris une fonction python qui vérifie la clé de contrôle d'un IBAN (modulo 97), teste-la avec "
            "l'exemple classique FR14 2004 1010 0505 0001 3M02 606"
        ),
        (
            "Mes tests Cypress échouent en sandbox avec la carte 5555 5555 5555 4444, erreur « invalid expiry "
            "». Quelle date faut-il mettre pour les cartes de test Mastercard ?"
        ),
        (
            "dans mon docker-compose j'ai mis POSTGRES_PASSWORD: ${POSTGRES_PASSWORD} mais la variable arrive "
            "vide dans le conteneur. le fichier .env est à côté du compose, pourquoi ça marche pas ?"
        ),
        "Quelle est la différence entre un PAI et un PAP à l'école ? Qui les rédige ?",
        "Recette de blanquette de veau à l'ancienne pour 6 personnes, sans crème si possible",
        (
            "Rédige un mail au service client (contact@exemple.fr) pour demander le remboursement d'une "
            "commande jamais livrée, numéro de commande [NUMÉRO]"
        ),
        "Quels éléments doivent obligatoirement figurer dans un procès-verbal de réunion du CSE ? Donne une trame.",
        "Quelles sont les obligations de l'employeur quand un salarié signale un risque de burn-out ?",
        "Comment générer une clé SSH ed25519 et l'ajouter à mon compte GitLab ? Je suis sous Windows 11",
        "Quelle est la dose maximale de paracétamol par jour pour un adulte de 50 kg ?",
        (
            "En PHP, comment éviter que les numéros de carte se retrouvent dans les logs d'erreur ? On doit "
            "passer l'audit PCI DSS le mois prochain"
        ),
        "Traduis en anglais le poème « Chanson d'automne » de Verlaine en gardant le rythme si possible",
        "planning de révisions pour le bac de philo, il me reste 3 semaines et je suis nul en dissertation",
        (
            "Comment utiliser un token Slack stocké dans une variable d'environnement avec slack_sdk en Python "
            "? os.environ['SLACK_BOT_TOKEN'] renvoie KeyError"
        ),
    ],
    "de": [
        "Was sind typische Frühsymptome von Alzheimer und ab wann sollte man zum Neurologen gehen?",
        "Was bedeutet „Z.n.“ in einem Arztbrief und was ist der Unterschied zwischen NSTEMI und STEMI?",
        "Wie läuft ein BEM-Verfahren ab? Ab wie vielen Krankheitstagen ist der Arbeitgeber dazu verpflichtet?",
        (
            "Muster für eine Abmahnung wegen wiederholter Unpünktlichkeit, mit Platzhaltern [Name], [Datum], "
            "[Vorfall] – bitte ohne konkrete Namen"
        ),
        (
            "Für meinen Krimi: die Kommissarin leidet an einer Panikstörung und bekommt während einer "
            "Vernehmung eine Attacke. Schreib mir die Szene, ca. 300 Wörter, aus ihrer Sicht."
        ),
        "Wie ist die steuerliche Identifikationsnummer aufgebaut und wie wird die Prüfziffer berechnet?",
        (
            "Ist DE89 3704 0044 0532 0130 00 eigentlich eine echte IBAN? Die steht in jedem Tutorial. Darf ich "
            "die in meinen Unit-Tests verwenden?"
        ),
        (
            'Adyen Sandbox lehnt die Testkarte 4111 1111 1111 1111 ab mit "Refused". Welche Ablaufdaten und '
            "CVC muss man bei deren Testkarten angeben?"
        ),
        (
            "Spring Boot: wie lese ich das DB-Passwort aus einer Umgebungsvariable statt es ins "
            "application.yml zu schreiben? Reicht password: ${DB_PASSWORD} oder braucht man da mehr?"
        ),
        "Wie schränke ich einen Google Maps API-Key auf unsere Domain ein (HTTP-Referrer)? Schritt für Schritt bitte",
        "Rezept für Zwetschgendatschi mit Hefeteig, so wie bei Oma",
        (
            "Vorlage für eine Kündigung im Fitnessstudio mit Platzhaltern [Name], [Adresse], "
            "[Mitgliedsnummer], fristgerecht zum nächstmöglichen Termin"
        ),
        (
            "Schreib eine E-Mail an info@beispiel.de mit der Bitte um ein Angebot für eine "
            "Dachrinnenreparatur, Einfamilienhaus, ca. 14 m Rinne"
        ),
        "Sind leichte Blutungen im ersten Trimester normal? Wann sollte man unbedingt zum Arzt?",
        (
            "Erklär mir JWT: was steht im Header, was im Payload, wie funktioniert die Signatur? Und warum "
            "sollte man keine Geheimnisse in den Payload packen?"
        ),
        (
            "Wie hoch ist eine übliche Abfindung in Deutschland? Gibt es die Faustformel mit 0,5 Gehältern "
            "wirklich gesetzlich?"
        ),
        "Wie dosiert man Ibuprofen-Saft bei Kindern nach Körpergewicht? Allgemein gefragt",
        "Übersetze „Aufsichtsratsvorlage“, „Beschlussvorschlag“ und „Tagesordnungspunkt“ ins Englische",
        (
            "Schreib eine Python-Funktion, die Kreditkartennummern mit dem Luhn-Algorithmus prüft, plus "
            "pytest-Tests mit den üblichen Testnummern"
        ),
        "wie ist das wetter an der ostsee im september normalerweise? lohnt sich usedom da noch zum baden",
    ],
    "es": [
        "¿Cuáles son los síntomas de alarma del cáncer de colon y a partir de qué edad se hace el cribado en España?",
        "Pregunta general: ¿se puede beber alcohol tomando antidepresivos tipo ISRS?",
        (
            "Plantilla de carta de despido objetivo por causas económicas, con [Nombre del trabajador], [Fecha "
            "de efectos] e [Importe de la indemnización] como campos"
        ),
        "¿Cuánto es la indemnización por despido improcedente ahora mismo en España? ¿Sigue siendo 33 días?",
        (
            "Estoy escribiendo una novela: el protagonista es un médico de Bilbao con ELA. ¿Cómo podría "
            "mostrar la progresión de la enfermedad a lo largo de tres años sin que sea un manual médico?"
        ),
        "¿Cómo se calcula la letra del DNI? Pásame una función en JavaScript que la valide",
        "¿Qué diferencia hay entre el NIE y la TIE? Me hago un lío con los dos",
        (
            "En Node, ¿cómo leo la cadena de conexión de MongoDB desde process.env.MONGODB_URI con dotenv y "
            "que falle bonito si no está definida?"
        ),
        (
            "Estoy probando la pasarela en modo test con la 4242 4242 4242 4242 y me devuelve "
            "'requires_action'. ¿Cómo simulo un pago con 3D Secure que pase directamente?"
        ),
        "¿ES91 2100 0418 4502 0005 1332 es un IBAN válido? Lo he visto en la Wikipedia como ejemplo",
        "Receta de lentejas con chorizo como las de mi abuela, para olla exprés",
        (
            "Escribe un correo a soporte@ejemplo.com reclamando un pedido que llegó roto, con un tono educado "
            "pero firme. Deja [Número de pedido] como hueco."
        ),
        "¿Qué tiene que incluir obligatoriamente el acta de un consejo de administración de una SL? Dame una plantilla",
        (
            "¿Cómo funciona la adaptación de jornada del artículo 34.8 del Estatuto de los Trabajadores? ¿La "
            "empresa puede negarse?"
        ),
        (
            "Hazme una función en Python que enmascare números de tarjeta para los logs, dejando solo los 4 "
            "últimos dígitos, y que no rompa si vienen con espacios"
        ),
        "¿Qué es un fine-grained personal access token de GitHub y cómo lo guardo en los secrets de Actions?",
        "¿Cuánto se tarda en recuperarse de una rotura parcial del ligamento cruzado anterior sin operar, más o menos?",
        "ideas de regalo para mi abuela que cumple 85, le gusta la costura y las plantas",
        "Traduce al inglés: «Se alquila habitación luminosa en piso compartido, gastos incluidos, zona centro».",
        "Explícame qué es la hemoglobina glicosilada y qué valores se consideran normales",
    ],
}
