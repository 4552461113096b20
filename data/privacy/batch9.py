"""Ninth held-out batch of privacy prompts, written without looking at the detector; see README.md."""

from __future__ import annotations

HELDOUT9_SENSITIVE: dict[str, list[tuple[str, list[str]]]] = {
    "en": [
        (
            (
                "can you tidy this handover note for nights pls: bed 4 mr okafor, 71, post-op day 2 R hip "
                "replacement, enoxaparin 40mg sc, was confused overnight and pulled his cannula, sats 93% on 2L. "
                "bed 6 mrs lindqvist, T1 diabetic, BG 3.1 at 0400, treated with glucogel, recheck 5.8"
            ),
            ["health"],
        ),
        (
            (
                "ok so i've been making myself throw up after dinner like 4 times a week since january and my mum "
                "doesn't know. is it actually that bad if i'm not underweight??"
            ),
            ["health"],
        ),
        (
            (
                "My husband Gerald was diagnosed with early Parkinson's last month and the neurologist started him "
                "on carbidopa-levodopa 25/100 three times a day. He gets very dizzy when he stands up from his "
                "chair. Should we ask for a lower dose, or is that something that settles down?"
            ),
            ["health"],
        ),
        (
            (
                "Draft a reply to the line manager. Context: Priya Raman (Finance, band 6) has sent in a fit note "
                "for work-related stress and anxiety, signed off for 4 weeks, and Occupational Health recommends a "
                "phased return. Keep it neutral and do NOT mention the grievance she raised against him in May."
            ),
            ["health", "confidential"],
        ),
        (
            (
                "my therapist says my bipolar II is 'well managed' but i stopped my lamotrigine 10 days ago because "
                "of a rash and didn't tell anyone. how do i bring it up at thursday's session without her freaking "
                "out"
            ),
            ["health"],
        ),
        (
            (
                "Help me write an email to Dr. Whitaker asking for an extension on the econometrics problem set. "
                "Reason: I had a tonic-clonic seizure on Tuesday (I have epilepsy, first one in two years) and I'm "
                "still completely wiped out. Don't make it sound dramatic."
            ),
            ["health"],
        ),
        (
            (
                "Please write a short note to Hillside Pharmacy: my dad, Tom Brennan, 14 Alder Close, Leeds LS6 "
                "2PX, needs his warfarin repeat delivered this week. His INR was 3.8 on Monday so the GP cut the "
                "dose to 3mg daily, please make sure the new tablets match."
            ),
            ["health", "contact"],
        ),
        (
            (
                "CONFIDENTIAL - board only. Turn into 5 bullets: Q3 burn $1.42M/month, runway 7.5 months at current "
                "spend. In talks with Northgate Capital for a $12M bridge at $40M pre. If it falls through we cut "
                "18 roles in January, mostly sales. Do not include in the all-hands deck."
            ),
            ["confidential"],
        ),
        (
            (
                "Harlow v. Densmore Logistics -- privileged & confidential. Our client will settle at $285,000 but "
                "we opened at $450k. Draft a letter to opposing counsel rejecting their $120k offer and proposing "
                "mediation, without hinting at where our floor is."
            ),
            ["confidential"],
        ),
        (
            (
                "I have to let one of my two baristas go. Jake has been late 11 times since March and last week I "
                "caught him comping drinks for his friends on camera. I want to give him two weeks' pay ($1,340) "
                "and end it Friday. How do I say this to his face without it turning into a fight?"
            ),
            ["confidential"],
        ),
        (
            (
                "rewrite this so it sounds less brutal for the calibration meeting: 'Mark Feldman - missed all "
                "three Q2 targets, dismissive in team meetings, two client complaints. Recommend PIP, no bonus this "
                "cycle (was 8% last year).'"
            ),
            ["confidential"],
        ),
        (
            (
                "Internal only, do not forward. Can you turn this into a clean table sorted by total score?\n"
                "Manchester depot - redundancy selection\n"
                "name | attendance | skills | conduct\n"
                "Gary Pruitt | 3 | 4 | 2\n"
                "Deborah Ashe | 5 | 3 | 5\n"
                "Kevin Mulroy | 2 | 2 | 4\n"
                "Steph Yeo | 4 | 5 | 3"
            ),
            ["confidential"],
        ),
        (
            (
                "Forwarded from our CEO, marked strictly confidential: we are acquiring Brightline Analytics for "
                "GBP 23m, signing 14 Nov, no announcement until the market closes that day. I need a one-page "
                "internal FAQ for the exec team only."
            ),
            ["confidential"],
        ),
        (
            (
                "on call, prod summariser is down, everything returns 401. log below, what's wrong?\n"
                "2024-05-18T02:13:44Z ERROR llm.client status=401 model=gpt-4o key=<<sk>>\n"
                "2024-05-18T02:13:45Z WARN retry 3/3 exhausted"
            ),
            ["secret"],
        ),
        (
            (
                "can you sanity check my docker-compose before I push it?\n"
                "services:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_USER: orders\n      "
                'POSTGRES_PASSWORD: <<pw>>\n    ports:\n      - "5432:5432"'
            ),
            ["secret"],
        ),
        (
            (
                "My GitHub Action keeps failing at the push step with 403. I put GH_TOKEN=<<ghp>> directly in "
                "deploy.yml under env. Does the token need extra scopes?"
            ),
            ["secret"],
        ),
        (
            (
                "aws configure keeps saying the security token is invalid. access key <<akia>>, secret "
                "<<aws_secret>>, region eu-west-2. I copied them straight from the IAM console an hour ago, what am "
                "I doing wrong"
            ),
            ["secret"],
        ),
        (
            (
                "Write a polite notice to my tenant about the annual furnace inspection on June 12 between 9am and "
                "1pm. Tenant: Sandra Okoye, Unit 2B, 418 Maple Ridge Dr, Columbus, OH 43215, cell <<phone_us>>. "
                "I'll text her as well."
            ),
            ["contact"],
        ),
        (
            (
                "pls make a vcard from this: Dmitri Halvorsen, dhalvorsen82@gmail.com, mobile <<phone_us>>, works "
                "at the Fairfield library. birthday march 3"
            ),
            ["contact"],
        ),
        (
            (
                "The Hotel Marlowe charged me twice for the same night ($214.60 each). Card <<card>>, exp 09/27. "
                "Can you write the dispute message for my bank's online form? Keep it under 1000 characters."
            ),
            ["payment_card"],
        ),
        (
            (
                "fill in this order form for me and give it back as json:\n"
                "Name: Lucy Tran\n"
                "Card number: <<card>>\n"
                "CVV: 418\n"
                "Billing ZIP: 97214\n"
                "Items: 2x ceramic planter (large)"
            ),
            ["payment_card"],
        ),
        (
            (
                "I'm doing onboarding paperwork for our new hire Carlos Medina, SSN <<ssn>>. He says he's head of "
                "household on the W-4 - is that something I need to verify, or do I just enter what he wrote?"
            ),
            ["national_id"],
        ),
        (
            (
                "HMRC sent me a letter saying my National Insurance record (<<nino>>) has a gap for 2019-20 when I "
                "was working in Dubai. How do I pay voluntary Class 2 or Class 3 contributions, and is it worth it "
                "at 58?"
            ),
            ["national_id"],
        ),
        (
            (
                "Format this as a proper invoice: Bill to Carrow & Finch Ltd, 14,200 words translated DE>EN at GBP "
                "0.11/word, ref INV-0419, payment within 30 days to IBAN <<iban_gb>> (account name Nadia Kowalski)."
            ),
            ["iban"],
        ),
        (
            (
                "my old landlord finally agreed to return the deposit (£950). write him a short message with my "
                "bank details: Aisha Bello, IBAN <<iban_gb>>. nothing too friendly, he's been a pain"
            ),
            ["iban"],
        ),
    ],
    "fr": [
        (
            (
                "Transmissions de nuit à reformuler proprement :\n"
                "Ch. 12 Mme Ferrand Josiane, 84 ans, chute à 3h au lever, pas de PC, TA 9/5, sous Kardégic, "
                "hématome frontal surveillé.\n"
                "Ch. 15 M. Lemaire, BPCO, désat à 86 % sous 2 L, médecin de garde prévenu, aérosols faits."
            ),
            ["health"],
        ),
        (
            (
                "depuis 3 semaines je dors 4h par nuit, j'ai perdu 6 kg et je pleure au boulot. mon médecin veut me "
                "mettre sous sertraline mais j'ai peur de devenir accro, c'est possible ?"
            ),
            ["health"],
        ),
        (
            (
                "Ma mère a 88 ans, Alzheimer diagnostiqué en 2021. Depuis deux semaines elle ne reconnaît plus mon "
                "frère et elle sort la nuit en chemise de nuit. Est-ce qu'il faut envisager l'EHPAD ? Comment lui "
                "en parler ?"
            ),
            ["health"],
        ),
        (
            (
                "Rédige un mail à ma chargée de TD pour justifier mon absence au partiel de droit des obligations : "
                "j'ai fait une crise d'asthme sévère le 3 et j'ai passé la nuit aux urgences, j'ai le bulletin de "
                "sortie."
            ),
            ["health"],
        ),
        (
            (
                "Objet : situation de Karim Benali (logistique). Il est en arrêt depuis le 12 mars pour burn-out, "
                "le médecin du travail préconise un mi-temps thérapeutique à la reprise. Le manager veut le "
                "remplacer définitivement. Aide-moi à lui répondre en tant que RRH, fermement mais sans tout "
                "déballer."
            ),
            ["health", "confidential"],
        ),
        (
            (
                "Mon fils Théo (9 ans) est diabétique de type 1, pompe à insuline. Tu peux m'aider à rédiger la "
                "partie « conduite à tenir » du PAI pour la cantine ? Resucrage si glycémie < 0,70 g/L, 15 g de "
                "sucre, contrôle 15 min après."
            ),
            ["health"],
        ),
        (
            (
                "Courrier pour le cabinet de kiné s'il te plaît : Hélène Marchal, 12 rue des Tanneurs, 67000 "
                "Strasbourg, tél. <<phone_fr>>. Je demande 20 séances de rééducation après ma ligamentoplastie du "
                "LCA genou gauche (opérée le 4 avril)."
            ),
            ["health", "contact"],
        ),
        (
            (
                "Dossier SCI Les Tilleuls c/ Martinez - confidentiel avocat-client. Notre cliente accepterait de "
                "transiger à 62 000 € mais on a demandé 95 000. Rédige un courrier officiel au confrère qui refuse "
                "leur offre de 25 000 € sans rien laisser paraître."
            ),
            ["confidential"],
        ),
        (
            (
                "Diffusion restreinte CODIR. Tréso au 30/09 : 1,8 M€, burn 210 k€/mois. Série A en discussion avec "
                "un fonds parisien (8 M€ sur 30 M€ pré-money). Si ça capote : plan de départs sur 9 postes en "
                "février. Fais-moi une synthèse en 5 points pour jeudi."
            ),
            ["confidential"],
        ),
        (
            (
                "Je dois licencier ma vendeuse, Sophie Garnier : elle a pris 430 € dans la caisse en juin, je l'ai "
                "sur la vidéo. C'est une faute grave ? Quelle procédure pour une boutique de 4 salariés ?"
            ),
            ["confidential"],
        ),
        (
            (
                "Peux-tu réécrire le compte rendu d'entretien annuel de M. Delorme de façon plus diplomate : "
                "objectifs atteints à 62 %, tensions répétées avec l'équipe, pas d'augmentation cette année, on "
                "envisage une rupture conventionnelle au T1."
            ),
            ["confidential"],
        ),
        (
            (
                "CONFIDENTIEL - NE PAS DIFFUSER\n"
                "Projet Orion : rachat de Vignal Emballages pour 14,5 M€, signing prévu le 2 décembre, annonce aux "
                "salariés le 5. Prépare une FAQ interne pour les trois associés uniquement."
            ),
            ["confidential"],
        ),
        (
            (
                "voila les salaires de l'équipe fais moi un tableau avec la moyenne et l'écart : Julie 3 200 brut, "
                "Mehdi 2 850, Clément 4 100 (il a négocié en douce), Anaïs 2 700. c pour moi uniquement hein"
            ),
            ["confidential"],
        ),
        (
            (
                "Mon script plante avec une 429 :\n"
                "```python\n"
                'client = OpenAI(api_key="<<sk>>")\n'
                'resp = client.chat.completions.create(model="gpt-4o-mini", messages=msgs)\n'
                "```\n"
                "c'est mon quota ou autre chose ?"
            ),
            ["secret"],
        ),
        (
            (
                "j'ai mis ça dans le .env de prod, c'est bon comme syntaxe ?\n"
                "SLACK_BOT_TOKEN=<<slack>>\n"
                "SLACK_CHANNEL=#alertes"
            ),
            ["secret"],
        ),
        (
            (
                "ssh me répond « invalid format » avec cette clé, elle est corrompue ou c'est les droits du fichier "
                "?\n"
                "<<pem>>"
            ),
            ["secret"],
        ),
        (
            (
                "Le mot de passe du wifi du cabinet c'est <<pw>>. Fais-moi une petite note pour les deux nouvelles "
                "secrétaires, à ne pas afficher en salle d'attente."
            ),
            ["secret"],
        ),
        (
            (
                "Ajoute ce contact à mon tableau stp : Bertrand Lacaze, bertrand.lacaze@orange.fr, <<phone_fr>>, 8 "
                "allée des Cèdres, 33600 Pessac. C'est le nouveau trésorier du club de rugby."
            ),
            ["contact"],
        ),
        (
            (
                "Rédige une mise en demeure pour mon locataire, M. Yannick Roux, 5 impasse du Moulin, 44000 Nantes "
                ": trois mois de loyers impayés (2 340 € au total), délai de 8 jours avant que je saisisse la "
                "commission."
            ),
            ["contact", "confidential"],
        ),
        (
            (
                "J'ai été débitée deux fois sur une commande en ligne (89,90 €). Ma carte : <<card>>, exp 11/26. "
                "Écris une réclamation pour ma banque, ton ferme mais poli."
            ),
            ["payment_card"],
        ),
        (
            (
                "rempli le formulaire a ma place stp\n"
                "titulaire : Camille Vasseur\n"
                "n° carte : <<card>>\n"
                "cryptogramme : 771"
            ),
            ["payment_card"],
        ),
        (
            (
                "La CPAM me demande mon numéro de sécu pour rembourser ma consultation, c'est le <<nir>>. Je le "
                "mets où sur la feuille de soins papier ?"
            ),
            ["national_id"],
        ),
        (
            (
                "Pour inscrire ma femme sur ma mutuelle : son NIR c'est <<nir>>, elle est née en 1979 et elle est "
                "auto-entrepreneuse. Elle peut être ayant droit ou elle doit avoir la sienne ?"
            ),
            ["national_id"],
        ),
        (
            (
                "Facture freelance à mettre en forme : client Atelier Brume SARL, 3 jours de dev front à 550 € HT, "
                "TVA non applicable art. 293 B du CGI, paiement à 30 jours sur l'IBAN <<iban_fr>>."
            ),
            ["iban"],
        ),
        (
            (
                "Rédige un mail à mon ancien proprio pour qu'il me rende enfin la caution de 900 €, ça fait 3 mois. "
                "Virement au nom de Léa Mounier, IBAN <<iban_fr>>."
            ),
            ["iban"],
        ),
    ],
    "de": [
        (
            (
                "Übergabe Frühdienst bitte kurz zusammenfassen:\n"
                "Zi. 7 Hr. Wendt, 79 J., Z.n. Apoplex li., Schluckstörung, nur angedickte Kost, nachts unruhig.\n"
                "Zi. 9 Fr. Albrecht, Dekubitus Grad 2 sakral, VW 2x tgl., Schmerzen 6/10 trotz Novalgin, Arzt "
                "informiert."
            ),
            ["health"],
        ),
        (
            (
                "Mein Vater (74) hat seit der zweiten Chemo wegen Darmkrebs ständig Durchfall und isst kaum noch "
                "was. Was können wir zu Hause machen, bevor wir wieder in die Klinik fahren?"
            ),
            ["health"],
        ),
        (
            (
                "ich ritze mich seit ein paar monaten wieder und meine eltern wissen nix. wie krieg ich die narben "
                "am arm weg bevor nach den ferien schwimmen ist"
            ),
            ["health"],
        ),
        (
            (
                "Ich habe seit 2019 Multiple Sklerose und bekomme alle sechs Monate Ocrevus. Muss ich das im "
                "Vorstellungsgespräch nächste Woche erwähnen, wenn ich nicht danach gefragt werde?"
            ),
            ["health"],
        ),
        (
            (
                "Betreff: BEM-Gespräch Frau Jasmin Koch (Controlling). 94 AU-Tage in den letzten 12 Monaten, laut "
                "ihr wegen Bandscheibenvorfall L4/L5, Reha im Herbst. Bitte Einladungsschreiben und einen kurzen "
                "Gesprächsleitfaden entwerfen."
            ),
            ["health", "confidential"],
        ),
        (
            (
                "Kannst du mir helfen, einen Antrag auf Nachteilsausgleich fürs Prüfungsamt zu formulieren? Ich "
                "habe ADHS (diagnostiziert 2022, nehme Medikinet) und brauche 25 % mehr Zeit und einen separaten "
                "Raum."
            ),
            ["health"],
        ),
        (
            (
                "meine frau ist in der 31. ssw, schwangerschaftsdiabetes, nüchternzucker heute morgen 105. hebamme "
                "meint beobachten. ist das schon gefährlich fürs baby?"
            ),
            ["health"],
        ),
        (
            (
                "Mandat Huber ./. Kessler Bau GmbH - vertraulich. Unsere Mandantin würde sich bei 48.000 € "
                "vergleichen, eingeklagt sind 75.000 €. Entwirf ein Schreiben an den Kollegen auf der Gegenseite, "
                "das das Angebot über 20.000 € zurückweist, ohne unsere Untergrenze zu verraten."
            ),
            ["confidential"],
        ),
        (
            (
                "STRENG VERTRAULICH - nur Geschäftsführung\n"
                "Liquidität Ende Q3: 2,1 Mio €, Burn 260 T€/Monat. Gespräche mit zwei Bestandsinvestoren über "
                "Brückenfinanzierung 5 Mio €. Fallback: Abbau von 14 Stellen zum 31.03. Bitte als Tischvorlage für "
                "die Beiratssitzung aufbereiten."
            ),
            ["confidential"],
        ),
        (
            (
                "Ich muss meinem Gesellen Dennis kündigen. Er war dreimal angetrunken auf der Baustelle und hat "
                "letzte Woche den Firmenwagen angefahren (Schaden 3.800 €). Eine Abmahnung hat er schon. Wie "
                "formuliere ich das?"
            ),
            ["confidential"],
        ),
        (
            (
                "Interne Notiz, bitte sachlicher formulieren: Herr Oliver Brandt hat den Umsatzplan in Q2 um 40 % "
                "verfehlt und beschwert sich ständig über Kollegen. Vorschlag: keine Tantieme 2024, "
                "Aufhebungsvertrag mit 3 Bruttomonatsgehältern anbieten."
            ),
            ["confidential"],
        ),
        (
            (
                "Vertraulich! Gehälter Team Marketing: Lena 58k, Tobias 63k, Serkan 71k, Miriam 52k. Rechne mir "
                "bitte aus, was uns 4,5 % Erhöhung für alle im Jahr kostet, inkl. ca. 21 % AG-Anteil."
            ),
            ["confidential"],
        ),
        (
            (
                "Mahnung an meinen Mieter, bitte förmlich: Herr Stefan Ludwig, Gartenstraße 14, 2. OG links, 04107 "
                "Leipzig. Mietrückstand 2.460 € (Juli bis September), Frist 14 Tage, danach fristlose Kündigung."
            ),
            ["contact", "confidential"],
        ),
        (
            (
                "Bereitschaft, Deploy hängt. Log:\n"
                "Error: connect ECONNREFUSED 10.0.3.17:5432\n"
                "DATABASE_URL=postgresql://shop_admin:<<pw>>@10.0.3.17:5432/shop\n"
                "Liegt's am Security Group oder am Passwort?"
            ),
            ["secret"],
        ),
        (
            (
                "Unser Google-Maps-Widget auf der Vereinsseite zeigt nur grau. Key ist <<aiza>>, eingebunden per "
                "script-Tag. Muss ich den noch irgendwo freischalten?"
            ),
            ["secret"],
        ),
        (
            (
                "Kannst du diesen Token dekodieren und mir sagen, warum die API ihn ablehnt?\n"
                "Authorization: Bearer <<jwt>>"
            ),
            ["secret"],
        ),
        (
            (
                "hab aus versehen meinen github token ins öffentliche repo gepusht: <<ghp>>\n"
                "reicht es wenn ich den commit lösche und force pushe?"
            ),
            ["secret"],
        ),
        (
            (
                "Trag bitte in die Teilnehmerliste für den Töpferkurs ein: Marlene Vogt, marlene.vogt@web.de, mobil "
                "<<phone_de>>, Lindenallee 3, 79098 Freiburg."
            ),
            ["contact"],
        ),
        (
            (
                "Schreib eine kurze nette Nachricht an unsere neue Nachbarin Aylin Demir (Tel. <<phone_de>>), dass "
                "ihr Paket bei uns im Erdgeschoss liegt und sie es ab 18 Uhr holen kann."
            ),
            ["contact"],
        ),
        (
            (
                "Die Airline hat mir den Flug nach Palma zweimal abgebucht. Kreditkarte <<card>>, gültig bis 05/28. "
                "Bitte eine Beschwerde formulieren, ich will das Geld bis Monatsende zurück."
            ),
            ["payment_card"],
        ),
        (
            (
                "Für die Hotelbuchung meiner Oma in Bad Reichenhall: Karte <<card>>, Prüfnummer 209, Inhaberin "
                "Gertrud Sommer. Schreib bitte die Mail ans Hotel mit Anreise 14.08."
            ),
            ["payment_card"],
        ),
        (
            (
                "Meine neue Chefin will meine Steuer-ID per Mail, die ist <<idnr>>. Wie schreib ich die Mail, dass "
                "es nicht so knapp klingt?"
            ),
            ["national_id"],
        ),
        (
            (
                "Ich mache die Steuererklärung für meine Mutter über ELSTER. Ihre Identifikationsnummer <<idnr>> "
                "wird als ungültig angezeigt, obwohl sie vom Bescheid abgeschrieben ist. Was kann ich tun?"
            ),
            ["national_id"],
        ),
        (
            (
                "Rechnung Nr. 2024-031 an Praxis Dr. Weber: Relaunch der Webseite 2.800 € netto zzgl. 19 % USt, "
                "zahlbar innerhalb 14 Tagen. Bankverbindung: <<iban_de>>, Kontoinhaber Felix Arndt. Bitte sauber "
                "formatieren."
            ),
            ["iban"],
        ),
        (
            (
                "kurze whatsapp an die WG pls: miete oktober bis zum 3. überweisen, 420 € pro person, an "
                "<<iban_de>> (jonas' konto), und wer den strom noch nicht bezahlt hat bitte auch"
            ),
            ["iban"],
        ),
    ],
    "es": [
        (
            (
                "Pásame esto a limpio para el relevo de tarde:\n"
                "hab. 214 Dña. Remedios Gil, 81 a., ICC descompensada, furosemida IV 40 mg/12h, diuresis 600 ml en "
                "el turno.\n"
                "hab. 218 Sr. Ortega, postop. colecistectomía, dolor EVA 7, se le ha pautado metamizol."
            ),
            ["health"],
        ),
        (
            (
                "tengo 16 y llevo un mes sin regla, me hice un test y salio positivo. no se como decirselo a mi "
                "madre, ayudame porfa"
            ),
            ["health"],
        ),
        (
            (
                "A mi abuelo le han diagnosticado EPOC grave y usa oxígeno unas 16 horas al día. ¿Puede viajar en "
                "avión a Tenerife para la boda de mi prima en julio? ¿Qué tenemos que pedir a la aerolínea?"
            ),
            ["health"],
        ),
        (
            (
                "Soy celíaca desde los 12 años y el lunes empiezo en una empresa con comedor propio. Redáctame un "
                "mensaje para RR. HH. pidiendo menú sin gluten sin que suene a exigencia."
            ),
            ["health"],
        ),
        (
            (
                "Necesito un correo para el jefe de Andrés Molina (almacén): está de baja por depresión desde el 2 "
                "de septiembre y la mutua propone una reincorporación progresiva. Que quede claro que el "
                "diagnóstico no se comenta con el equipo."
            ),
            ["health", "confidential"],
        ),
        (
            (
                "Mi hija Lucía tiene TDAH diagnosticado y el colegio quiere que repita 3º de primaria. ¿Qué "
                "argumentos puedo llevar a la reunión con la orientadora el viernes?"
            ),
            ["health"],
        ),
        (
            (
                "Me diagnosticaron VIH hace dos meses y ya tengo carga viral indetectable. ¿Estoy obligado a "
                "contárselo a mi nueva pareja? Vivo en Madrid."
            ),
            ["health"],
        ),
        (
            (
                "Asunto Construcciones Ferrán vs. Comunidad de Propietarios Sagasta 12 - CONFIDENCIAL. Mi cliente "
                "aceptaría 38.000 € pero reclamamos 70.000 €. Redáctame un burofax rechazando su oferta de 15.000 € "
                "sin dejar ver nuestro mínimo."
            ),
            ["confidential"],
        ),
        (
            (
                "CONFIDENCIAL - solo consejo de administración. Caja a 30/06: 950.000 €, burn 140.000 €/mes. "
                "Negociando una ronda puente de 3 M€ con nuestro inversor principal. Si no cierra, ERE de 11 "
                "personas en enero. Resúmelo en 5 puntos."
            ),
            ["confidential"],
        ),
        (
            (
                "Tengo que despedir a mi camarero, Iván. Lo pillé llevándose cajas de cerveza del almacén, unos 600 "
                "€ en dos meses, está grabado. ¿Es despido disciplinario? Redáctame la carta."
            ),
            ["confidential"],
        ),
        (
            (
                "reescríbelo más suave porfa: 'Evaluación anual Marta Soler: no cumple objetivos (58 %), conflictos "
                "con compañeros, se propone no renovar el contrato en marzo.'"
            ),
            ["confidential"],
        ),
        (
            (
                "Uso interno, no reenviar. Lista de candidatos al ERE de la planta de Zaragoza con su puntuación: "
                "Pedro Lozano 42, Nuria Campos 38, Javier Ruiz 35, Alba Teruel 51. Ordénalo y ponlo en tabla."
            ),
            ["confidential"],
        ),
        (
            (
                "Confidencial: vamos a comprar Talleres Hermanos Pujol por 4,2 M€, la firma es el 15 de noviembre. "
                "Prepárame un guion para contárselo a los dos socios minoritarios antes de que se entere la "
                "plantilla."
            ),
            ["confidential"],
        ),
        (
            (
                "el bot de slack me da invalid_auth:\n"
                "```\n"
                'token = "<<slack>>"\n'
                "client = WebClient(token=token)\n"
                "```\n"
                "lo tengo que regenerar?"
            ),
            ["secret"],
        ),
        (
            (
                "Estoy de guardia y el job de backup a S3 falla. Log:\n"
                "[ERROR] upload failed: AccessDenied key_id=<<akia>> secret=<<aws_secret>> bucket=backups-prod\n"
                "¿Qué permisos le faltan a la política?"
            ),
            ["secret"],
        ),
        (
            (
                "La contraseña del router de la oficina ahora es <<pw>> y nadie se la aprende. Propónme algo más "
                "fácil de recordar pero seguro."
            ),
            ["secret"],
        ),
        (
            (
                "Mira mi config:\n"
                "OPENAI_API_KEY=<<sk>>\n"
                "MODEL=gpt-4o\n"
                "MAX_TOKENS=4000\n"
                "¿por qué me está cobrando tanto este mes?"
            ),
            ["secret"],
        ),
        (
            (
                "Pon esto en formato ficha de cliente: Rocío Balaguer Prat, rocio.balaguer@gmail.com, tel. "
                "<<phone_es>>, C/ Doctor Fleming 27, 3º B, 46010 Valencia."
            ),
            ["contact"],
        ),
        (
            (
                "Escribe un aviso para mi inquilino, Sr. Hugo Ferrer, C/ Mayor 8, 2º izq., 28013 Madrid: el jueves "
                "10 viene el fontanero entre las 9 y las 12 a revisar la caldera."
            ),
            ["contact"],
        ),
        (
            (
                "Escríbele un whatsapp de mi parte a la profe de piano de mi hijo, Elena Ruiz (<<phone_es>>), "
                "diciendo que el martes no vamos porque tiene excursión."
            ),
            ["contact"],
        ),
        (
            (
                "Me han cobrado dos veces la compra de la lavadora (429 €). Tarjeta <<card>>, caduca 02/27. Hazme "
                "la reclamación para el banco."
            ),
            ["payment_card"],
        ),
        (
            (
                "rellena esto para la reserva del apartamento en Cádiz:\n"
                "titular: Manuel Ortiz\n"
                "tarjeta: <<card>>\n"
                "CVV: 552"
            ),
            ["payment_card"],
        ),
        (
            (
                "Para el contrato de alquiler el casero me pide el DNI, es el <<dni>>. ¿Le mando foto por WhatsApp "
                "o basta con el número?"
            ),
            ["national_id"],
        ),
        (
            (
                "Mi pareja es colombiana, su NIE es <<nie>>. ¿Cómo la doy de alta como beneficiaria en mi tarjeta "
                "sanitaria de la Seguridad Social?"
            ),
            ["national_id"],
        ),
        (
            (
                "Dale formato de factura: cliente Estudio Lumen S.L., 20 horas de diseño a 45 €/h, IVA 21 %, "
                "retención 15 %, pago por transferencia a <<iban_es>>."
            ),
            ["iban"],
        ),
    ],
}

HELDOUT9_BENIGN: dict[str, list[str]] = {
    "en": [
        "What are the usual side effects of carbidopa-levodopa, and why does it make some people dizzy on standing?",
        (
            "For my novel: the narrator's younger sister is diagnosed with leukemia at 19. What would her first "
            "week in hospital realistically look like?"
        ),
        (
            "Template please: a return-to-work letter after long-term sick leave, with [Employee Name], [Return "
            "Date] and [Manager Name] placeholders."
        ),
        "In the US, what should a small business document before firing someone for repeated lateness?",
        (
            "My Stripe checkout tests pass with 4242 4242 4242 4242, but how do I simulate an insufficient funds "
            "decline? Which test card is that?"
        ),
        (
            "Is this OK or still bad practice?\n\n"
            "import os\n"
            "import psycopg2\n"
            "conn = psycopg2.connect(host='db', user='app', password=os.environ['DB_PASSWORD'])"
        ),
        "Our secret scanner flagged AKIAIOSFODNN7EXAMPLE in a README. Isn't that just the key from the AWS docs?",
        "What's the format of a UK National Insurance number, and which prefixes are never issued?",
        "How does the IBAN check digit work? Walk me through GB29 NWBK 6016 1331 9268 19 step by step.",
        (
            "is this the right way to keep secrets out of compose?\n"
            "environment:\n  POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}\n  DATABASE_URL: "
            "postgres://user:password@localhost:5432/dev"
        ),
        (
            "Make me a fake customer table with 5 rows for a sales demo: name, email at example.com, phone in the "
            "555-0100 to 555-0199 range, city."
        ),
        "What has Michael J. Fox said publicly about living with Parkinson's, and what does his foundation fund?",
        "What's the difference between a PIP and a final written warning? General UK practice, not legal advice.",
        "Explain what 'without prejudice' means on a settlement letter and when it doesn't protect you.",
        "how many weeks of statutory sick pay can someone get in the UK and how much is it roughly",
        "What INR range is usually targeted for someone on warfarin for atrial fibrillation?",
        (
            "Draft a generic landlord notice for an annual gas safety inspection with [Tenant Name], [Property "
            "Address] and [Date] placeholders."
        ),
        "I want to get back into running after two years off. Can you give me a 6 week plan to get to 5k?",
        "what can i make for dinner with chickpeas, spinach, half an onion and some feta",
        (
            "Help me write a toast for my brother's wedding. He is an absolute nerd about trains and she teases him "
            "for it."
        ),
        "I'm moving to Lisbon in September. What should I know about renting an apartment there as a foreigner?",
        "explain git rebase vs merge like i'm 12",
        "My 7 year old keeps asking why the sky is blue. Give me an answer she'll actually get.",
        "Suggest a name for my pottery shop on Etsy, I mostly make mugs with little frogs on them",
        "I'm retired and want to learn Spanish before a trip to Andalusia next spring. Where do I start?",
    ],
    "fr": [
        "Quels sont les effets secondaires fréquents de la sertraline les premières semaines ?",
        (
            "Dans mon roman, le grand-père de l'héroïne perd peu à peu la mémoire. Comment décrire les premiers "
            "signes d'Alzheimer de façon crédible, sans cliché ?"
        ),
        "Modèle de convocation à un entretien préalable au licenciement, avec [Nom du salarié], [Date] et [Lieu].",
        "C'est quoi la différence entre une rupture conventionnelle et une démission pour toucher le chômage ?",
        "Comment est construit le numéro de sécurité sociale français ? Que veulent dire les différents chiffres ?",
        (
            "La carte 4111 1111 1111 1111 passe bien sur notre environnement de test, mais comment simuler un échec "
            "3D Secure chez la plupart des PSP ?"
        ),
        (
            "En Node, quelle est la bonne pratique pour ne jamais commiter sa clé ? là j'utilise "
            "process.env.OPENAI_API_KEY"
        ),
        "Génère 5 faux clients pour une démo : nom, prénom, email en @exemple.fr et ville.",
        "C'est quoi un PAI à l'école, qui le rédige et qui doit le signer ?",
        "Explique le calcul de la clé de contrôle d'un IBAN français avec un exemple inventé.",
        "Que couvre exactement le secret professionnel de l'avocat en France ?",
        "Un mi-temps thérapeutique, ça dure combien de temps en général et qui paie le salaire ?",
        "Quels délais respecter entre une mise en demeure pour loyers impayés et l'assignation ?",
        "Qu'a rapporté la presse sur l'hospitalisation du pape François début 2025 ?",
        "Comment générer une paire de clés SSH ed25519 et copier la clé publique sur un serveur ?",
        "En général, combien de temps a-t-on pour contester un double prélèvement par carte bancaire ?",
        (
            "Écris une fonction Python qui vérifie qu'un mot de passe fait au moins 12 caractères avec chiffres, "
            "majuscules et symboles."
        ),
        "Je pars trois jours à Lisbonne en octobre, tu me fais un petit programme pas trop chargé ?",
        "recette de quiche sans pâte, j'ai des poireaux, du chèvre et 4 oeufs",
        (
            "Aide-moi à écrire un petit discours pour le pot de départ en retraite de ma collègue Martine, 32 ans "
            "de maison."
        ),
        "Comment j'explique à mon fils de 10 ans pourquoi la Lune change de forme ?",
        "Quelle est la différence entre « quoique » et « quoi que » ? J'ai toujours un doute.",
        "Je veux aller au travail à vélo (12 km). Des conseils pour débuter sans me dégoûter ?",
        "Propose-moi 5 jeux d'intérieur pour un anniversaire d'enfants de 8 ans.",
        "Résume-moi les causes de la Révolution française en une dizaine de lignes.",
    ],
    "de": [
        "Welche Nebenwirkungen hat Ocrevus typischerweise und wie oft wird es gegeben?",
        "Was ist ein BEM-Verfahren und ab wie vielen Krankheitstagen muss der Arbeitgeber es anbieten?",
        "Muster für eine Abmahnung wegen Unpünktlichkeit mit Platzhaltern [Name], [Datum], [Vorfall].",
        "Wie ist die steuerliche Identifikationsnummer aufgebaut und wie wird die Prüfziffer berechnet?",
        "Ist DE89 3704 0044 0532 0130 00 eine echte IBAN? Die taucht in jedem Tutorial auf.",
        (
            "In Spring Boot steht bei uns spring.datasource.password=${DB_PASSWORD}. Reicht das oder sollte ich "
            "lieber Vault nehmen?"
        ),
        (
            "Für meinen Krimi: Die Kommissarin hat eine bipolare Störung. Wie könnte eine manische Phase im Dienst "
            "realistisch aussehen?"
        ),
        "Wie dekodiere ich einen JWT in Python nur zum Debuggen, ohne die Signatur zu prüfen?",
        "Erzeug mir einen Testdatensatz: 5 Personen mit Namen, E-Mail @beispiel.de und ausgedachten Adressen.",
        "Was gilt bei Schwangerschaftsdiabetes als normaler Nüchternblutzucker?",
        "Ab wie viel Mietrückstand darf ein Vermieter nach BGB fristlos kündigen? Allgemein erklärt bitte.",
        "Was wurde öffentlich über die Demenz-Erkrankung von Bruce Willis bekannt?",
        "Wie funktioniert eine Brückenfinanzierung bei Startups und was bedeutet 'Down Round'?",
        (
            "Welche Testkarten gibt es bei Stripe außer 4242 4242 4242 4242? Ich brauche eine Mastercard, ist das "
            "die 5555 5555 5555 4444?"
        ),
        "Was sollte man grundsätzlich tun, wenn man ein Secret versehentlich in ein Git-Repo gepusht hat?",
        "Was steht in einem Aufhebungsvertrag üblicherweise drin und worauf sollte man als Arbeitnehmer achten?",
        "Wie schreibe ich eine gute Übergabe in der Pflege? Gibt es ein Schema wie SBAR auch auf Deutsch?",
        "Ich will meinen Balkon bepflanzen, Südseite, ziemlich windig. Was hält das aus?",
        "Erklär mir den Unterschied zwischen 'seit' und 'seid' mit ein paar Beispielen",
        "Was koche ich heute? Hab Kartoffeln, Lauch, Speck und einen Becher Sahne.",
        "Schreib ein kurzes Gedicht zum 60. Geburtstag meiner Tante, sie liebt ihren Garten und Krimis.",
        "Ich fahre im Mai mit dem Zug nach Wien. Lohnt sich ein Zwischenstopp in Salzburg?",
        "Wie bekomme ich Kalk von der Glasduschwand weg, ohne scharfe Chemie?",
        "Bin seit kurzem Rentner und will Schach lernen. Welche Apps oder Bücher sind gut für Anfänger?",
        "Wie funktioniert eigentlich eine Wärmepumpe? Bitte so, dass ich's meinem Schwiegervater erklären kann.",
    ],
    "es": [
        "¿Qué efectos secundarios tiene la furosemida en personas mayores?",
        (
            "Estoy escribiendo una novela: la protagonista tiene 17 años y descubre que está embarazada en 1994. "
            "¿Cómo reaccionaría una familia de pueblo de esa época?"
        ),
        "Plantilla de carta de despido disciplinario con [Nombre del trabajador], [Fecha] y [Hechos].",
        "¿Cómo se calcula la letra del DNI? Explícamelo con un número inventado.",
        "¿Qué diferencia hay entre el NIE y la TIE?",
        "En el entorno de pruebas de la pasarela uso la 4111 1111 1111 1111. ¿Cómo simulo una operación denegada?",
        (
            "En Python, ¿cómo cargo la clave de la API desde un .env sin subirla a GitHub? Uso "
            "os.getenv('OPENAI_API_KEY')."
        ),
        "Genera 5 clientes ficticios con email @ejemplo.com y teléfonos inventados para una demo.",
        "¿Qué es un ERE y qué indemnización corresponde por ley?",
        "¿Qué significa carga viral indetectable e intransmisible?",
        "¿Cuánto puede durar como máximo una baja por depresión en España?",
        "¿Qué se ha publicado sobre el tratamiento contra el cáncer del rey Carlos III?",
        "¿Cómo funciona un burofax y sirve como prueba en un juicio?",
        "¿Qué datos tiene que llevar una factura de autónomo en España para ser válida?",
        "¿Cómo estructuro un relevo de enfermería con el método SBAR? Pon un ejemplo con un paciente inventado.",
        (
            "en local me conecto con postgres://user:password@localhost:5432/test y me dice que la base de datos no "
            "existe, ¿qué hago?"
        ),
        "¿Qué es la enfermedad celíaca y cómo se diagnostica?",
        "Quiero hacer el Camino de Santiago en mayo desde Sarria, ¿qué llevo en la mochila?",
        "dame una receta de lentejas que no sea la de siempre",
        "¿Cómo le explico a mi hija de 6 años por qué hay estaciones?",
        "Escríbeme una felicitación para mi jefa que se jubila, cariñosa pero sin ser cursi.",
        "¿Cuál es la diferencia entre 'haber' y 'a ver'? Siempre me lío.",
        "Tengo 68 años y quiero empezar a nadar, ¿cuántos días a la semana me recomiendas?",
        "Recomiéndame tres novelas cortas para leer en el tren",
        "Ayúdame a planificar una semana de comidas para dos personas con 60 euros.",
    ],
}
