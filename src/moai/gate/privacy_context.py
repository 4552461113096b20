"""The context recognizers behind `moai.gate.privacy`: health and confidential (HR / legal / financial).

These kinds have no shape to validate, only language. A sentence is flagged when it *discloses* something
about somebody (I have / my mother takes / diagnosed with; a named person's salary, a termination, a
settlement, material marked confidential) and not when it asks about a topic (symptoms of diabetes, how to
write a performance review, what "confidential" means). Lexicons cover EN, FR, DE, ES; the term scan runs
once over the whole text and sentence rules run only where a term is, to keep long chats cheap.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from moai.gate.privacy_rules import FIRST_PERSON, GENERIC_QUESTION, Hit, sentences

_I = re.IGNORECASE

# ---------------------------------------------------------------- health

_CONDITIONS = (
    # English
    r"diabetes|diabetic|cancer|tumou?r|leuka?emia|lymphoma|melanoma|chemo(?:therapy)?|radiotherapy|hiv|aids|"
    r"hepatitis [abc]?|tuberculosis|depression|depressed|anxiety(?: disorder)?|panic attacks|bipolar|schizophreni\w*|"
    r"psychosis|ptsd|ocd|adhd|autism|autistic|epilepsy|seizures|asthma|copd|dementia|alzh[eé]imer'?s?|parkinson'?s?|"
    r"multiple sclerosis|\bms\b|crohn'?s?|celiac|lupus|arthritis|hypertension|high blood pressure|heart failure|"
    r"heart attack|stroke|arrhythmia|kidney (?:disease|failure)|dialysis|cirrhosis|anorexia|bulimia|eating disorder|"
    r"addiction|alcoholism|alcoholic|opioid|overdose|suicidal|self-harm|std|sti|chlamydia|gonorrh?ea|syphilis|herpes|"
    r"hpv|pregnan(?:t|cy)|miscarriage|abortion|infertility|ivf|endometriosis|migraines?|insomnia|covid|long covid|"
    r"thyroid|hypothyroidism|hyperthyroidism|sleep apnea|obesity|concussion|fracture|surgery|biopsy|mri|"
    r"blood (?:test|work) results|positive for|"
    # medications
    r"metformin|insulin|ozempic|semaglutide|sertraline|zoloft|fluoxetine|prozac|escitalopram|lexapro|citalopram|"
    r"paroxetine|venlafaxine|bupropion|wellbutrin|xanax|alprazolam|diazepam|valium|lorazepam|lithium|quetiapine|"
    r"seroquel|olanzapine|risperidone|aripiprazole|lamotrigine|valproate|levetiracetam|methylphenidate|ritalin|"
    r"adderall|levothyroxine|warfarin|eliquis|apixaban|statins?|atorvastatin|lisinopril|amlodipine|metoprolol|"
    r"prednisone|methotrexate|humira|oxycodone|fentanyl|methadone|suboxone|buprenorphine|tramadol|morphine|"
    r"antidepressants?|antipsychotics?|antiretrovirals?|prep|truvada|birth control pill|donepezil\w*|memantin\w*|"
    r"ocrevus|rivastigmin\w*|pregabalin\w*|gabapentin\w*|"
    # French
    r"diabète|diabétique|tumeur|leucémie|chimio(?:thérapie)?|vih|sida|hépatite|dépression|déprimée?|anxiété|"
    r"trouble bipolaire|schizophrène|épilepsie|asthme|démence|sclérose en plaques|maladie d(?:e |')\w+|hypertension|"
    r"infarctus|avc|insuffisance rénale|anorexie|boulimie|alcoolisme|enceinte|grossesse|fausse couche|avortement|"
    r"ivg|infertilité|endométriose|migraines?|burn-?out|antidépresseurs?|anxiolytiques?|lévothyrox|"
    # German
    r"krebs|tumor|leukämie|chemotherapie|depressionen|depressiv|angststörung|bipolare störung|schizophrenie|"
    r"epilepsie|demenz|multiple sklerose|bluthochdruck|herzinfarkt|schlaganfall|niereninsuffizienz|magersucht|"
    r"bulimie|alkoholsucht|sucht|schwanger|schwangerschaft|fehlgeburt|abtreibung|unfruchtbarkeit|migräne|"
    r"antidepressiva|psychotherapie|"
    # Spanish
    r"cáncer|leucemia|quimioterapia|quimio|vih|sida|depresión|deprimid[oa]|ansiedad|trastorno bipolar|esquizofrenia|"
    r"epilepsia|asma|demencia|esclerosis múltiple|hipertensión|infarto|insuficiencia renal|anorexia|bulimia|"
    r"alcoholismo|adicción|embarazada|embarazo|aborto|infertilidad|migrañas?|antidepresivos?|ansiolíticos?"
)
_HEALTH_TERM = re.compile(r"\b(?:" + _CONDITIONS + r")\b", _I)
# A disclosure: somebody (I, my mother, he, a named person, a patient) has / takes / was diagnosed with ...
_DISCLOSURE = re.compile(
    r"(?<!\bcan )(?<!\bshould )(?<!\bcould )(?<!\bmay )(?<!\bif )(?<!\bdo )"
    r"\b(?:I(?:'ve| have)? (?:been )?(?:have|had|got|take|took|taking|using|started|stopped|suffer|suffering|"
    r"struggle|struggling|live|living|am on|on|treated|seeing|was "
    r"diagnosed|'m on|'m taking|am taking|'m pregnant|am pregnant|'m being treated|am being treated|tested|"
    r"found out)|I'm (?:on|taking|pregnant|diabetic|depressed|bipolar|autistic|HIV|recovering|in (?:remission|rehab))|"
    r"my (?:\w+ )?(?:diagnosis|medication|meds|prescription|doctor|therapist|psychiatrist|oncologist|gp|"
    r"test results|biopsy|treatment|condition|dose|dosage|symptoms)|diagnosed with|tested positive|"
    r"(?:he|she|they|my \w+|[A-Z][a-z]+) (?:has|had|have|is on|takes|is taking|was diagnosed|suffers|started|"
    r"is pregnant|is in (?:remission|rehab)|relapsed)|patient\b|"
    r"j'ai\b|je (?:suis|prends|souffre|fais)|mon (?:médecin|psychiatre|traitement|diagnostic|oncologue)|"
    r"ma (?:psy|maladie|dépression)|mes (?:médicaments|symptômes|résultats)|diagnostiquée?|"
    r"(?:il|elle|mon \w+|ma \w+) (?:a|est|prend|souffre|suit)\b|"
    r"ich (?:habe|hatte|nehme|leide|bin)|mein(?:e|em)? (?:arzt|ärztin|therapeut\w*|diagnose|medikamente?|psychiater\w*|"
    r"befund\w*)|diagnostiziert|(?:er|sie|mein \w+|meine \w+) (?:hat|nimmt|leidet|ist)\b|"
    r"(?:yo )?(?:tengo|tuve|tomo|estoy|sufro|padezco|me (?:diagnosticaron|recetaron))|mi (?:médic[oa]|psiquiatra|"
    r"diagnóstico|medicación|medicamento|tratamiento|terapeuta)|diagnosticad[oa]|(?:le|les|nos) diagnosticaron|"
    r"(?:él|ella|mi \w+) (?:tiene|toma|sufre|padece|está)\b)",
    _I,
)


# "I have a question about cancer", "an essay on depression": a topic, not a disclosure.
_TOPIC = re.compile(
    r"\b(?:question|questions|essay|article|paper|research|report|presentation|homework|assignment|lecture|course|"
    r"book|film|movie|documentary|podcast|talk|blog post|exposé|mémoire|frage|fragen|aufsatz|referat|vortrag|"
    r"artikel|pregunta|preguntas|ensayo|trabajo|artículo|charla)(?:\s+\w+){0,2}?\s+"
    r"(?:about|on|regarding|sur|über|zu|zum|zur|sobre)\b",
    _I,
)


def _sentences_with(rx: re.Pattern[str], text: str) -> Iterator[tuple[int, int, list[re.Match[str]]]]:
    """Sentences holding at least one match of `rx`, with those matches (offsets into `text`).

    The term scan runs once over the whole text; sentence rules run only where a term is, which keeps
    long conversations cheap."""
    terms = list(rx.finditer(text))
    if not terms:
        return
    k = 0
    for a, b in sentences(text):
        inside = []
        while k < len(terms) and terms[k].start() < b:
            if terms[k].start() >= a:
                inside.append(terms[k])
            k += 1
        if inside:
            yield a, b, inside
        if k == len(terms):
            return


def find_health(text: str) -> Iterator[Hit]:
    for a, b, terms in _sentences_with(_HEALTH_TERM, text):
        sent = text[a:b]
        if not _DISCLOSURE.search(sent) or (GENERIC_QUESTION.match(sent) and not FIRST_PERSON.search(sent)):
            continue
        topic = _TOPIC.search(sent)
        for term in terms:
            if topic and term.start() - a >= topic.end():
                continue
            yield Hit("health", term.start(), term.end(), "HEALTH",
                      f"medical detail about a person ({term.group().lower()!r} in a personal disclosure)")


# ---------------------------------------------------------------- confidential (HR / legal / financial)

_MARKER_UPPER = re.compile(
    r"\b(?:CONFIDENTIAL|STRICTLY CONFIDENTIAL|INTERNAL ONLY|INTERNAL USE ONLY|CONFIDENTIEL|VERTRAULICH|"
    r"STRENG VERTRAULICH|CONFIDENCIAL|PRIVILEGED (?:AND|&) CONFIDENTIAL)\b"
)
_MARKER = re.compile(
    r"^\s*[\[(]?(?:(?:strictly|highly|strictement|streng|estrictamente) )?"
    r"(?:confidential|internal(?: use)? only|confidentiel|diffusion restreinte|usage interne|vertraulich|"
    r"nur für den internen gebrauch|confidencial|uso interno|privileged (?:and|&) confidential)(?=[\])]?\s*[:\-—–])"
    r"|\b(?:this|the following|the attached|attached|below)(?: \w+){0,3} (?:is|are) (?:strictly |highly )?"
    r"(?:confidential|internal only|under nda|not (?:yet )?public)"
    r"|\b(?:ce|cette|ces|le|la|ci-joint)(?: \w+){0,3} (?:est|sont) (?:strictement )?confidentiel(?:le)?s?"
    r"|\b(?:dieses|diese|der|die|das|folgende|anbei)(?: \w+){0,3} (?:ist|sind) (?:streng )?vertraulich"
    r"|\b(?:este|esta|estos|el|la|adjunto)(?: \w+){0,3} (?:es|son) (?:estrictamente )?confidencial(?:es)?"
    r"|\b(?:das ist|c'est|it's|it is|esto es) (?:streng |strictement |strictly |estrictamente )?"
    r"(?:vertraulich|confidentiel|confidential|confidencial)"
    r"|\b(?:do not (?:share|forward|distribute)|not for (?:distribution|external)|ne pas (?:diffuser|transférer)|"
    r"nicht (?:weitergeben|zur weitergabe)|no (?:distribuir|reenviar|compartir) (?:fuera|externamente))"
    r"|\b(?:under (?:an? )?nda|sous nda|unter nda|bajo nda)\b",
    re.M | _I,
)
_HR_TERM = re.compile(
    r"\b(?:salary|salaries|pay rise|raise|bonus|compensation|earns|makes \$|performance review|performance "
    r"improvement plan|pip|disciplinary|written warning|termination|terminate|terminated|fire|fired|firing|let \w+ go|"
    r"laid off|layoffs?|redundan\w+|severance|settlement|lawsuit|sued|suing|litigation|harassment complaint|"
    r"grievance|misconduct|investigation|nda|non-disclosure|unreleased|not yet (?:public|announced)|before "
    r"(?:the )?(?:announcement|earnings call|release)|earnings|quarterly results|revenue figures|acquisition|merger|"
    r"buyout|insider|"
    r"salaire|prime|rémunération|gagne|entretien annuel|évaluation|avertissement|licenciement|licencier|"
    r"rupture conventionnelle|plan social|indemnité|procès|litige|transaction|harcèlement|faute grave|résultats|"
    r"chiffre d'affaires|rachat|fusion|non publiés?|"
    r"gehalt|gehälter|lohn|verdient|gehaltserhöhung|leistungsbeurteilung|mitarbeitergespräch|abmahnung|kündigung|"
    r"kündigen|entlassung|entlassen|aufhebungsvertrag|abfindung|klage|vergleich|belästigung|quartalszahlen|umsatz|"
    r"übernahme|fusion|unveröffentlicht\w*|noch nicht veröffentlicht|"
    r"salario|sueldo|gana|aumento|evaluación de desempeño|sanción|despido|despedir|finiquito|indemnización|demanda|"
    r"acuerdo extrajudicial|acoso|resultados trimestrales|facturación|adquisición|fusión|no publicad[oa]s?)\b",
    _I,
)
# Something specific: a money amount, a named person, or "our/we" (the user's own organisation).
_SPECIFIC = re.compile(
    r"[$€£]\s?\d|\d[\d.,\s]*\s?(?:k|K|€|\$|£|EUR|USD|euros?|dollars?|Euro|millones|millions?|Millionen|M)\b|"
    r"\b(?:Mr|Ms|Mrs|Dr|M|Mme|Herr|Frau|Sr|Sra)\.? [A-Z][a-z]+|\b[A-Z][a-zà-ÿ]+ [A-Z][a-zà-ÿ]+\b(?<!\bI [A-Z])|"
    r"\b(?:our|we|we're|we've|my (?:employee|colleague|direct report|coworker|team member)|"
    r"notre|nos|nous|mon (?:collègue|employé|salarié)|ma (?:collègue|salariée)|"
    r"unser\w*|wir|mein(?:e|em|en)? (?:kollegin?|mitarbeiter\w*)|"
    r"nuestr[oa]s?|nosotros|vamos a|mi (?:emplead[oa]|compañer[oa]))\b",
)
def find_confidential(text: str) -> Iterator[Hit]:
    for m in _MARKER_UPPER.finditer(text):
        yield Hit("confidential", m.start(), m.end(), "CONFIDENTIAL", "document marked confidential / internal")
    for m in _MARKER.finditer(text):
        if not GENERIC_QUESTION.match(text[text.rfind("\n", 0, m.start()) + 1:]):
            yield Hit("confidential", m.start(), m.end(), "CONFIDENTIAL", "document marked confidential / internal")
    for a, b, terms in _sentences_with(_HR_TERM, text):
        sent, term = text[a:b], terms[0]
        spec = _SPECIFIC.search(sent)
        if spec and not (GENERIC_QUESTION.match(sent) and not re.search(r"[$€£]\s?\d|\d\s?(?:k|€|\$)", sent)):
            yield Hit("confidential", term.start(), term.end(), "CONFIDENTIAL",
                      f"HR/legal/financial detail ({term.group().lower()!r}) about a specific person or organisation")
