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
from itertools import islice

from moai.gate import privacy_scan as scan
from moai.gate.privacy_rules import (
    FICTION,
    FIRST_PERSON,
    GENERIC_AT,
    GENERIC_QUESTION,
    Hit,
    is_template,
    sentence_around,
    translated_quotes,
)
from moai.gate.privacy_rules import words as _words
from moai.gate.privacy_scan import gated

_I = re.IGNORECASE

# ---------------------------------------------------------------- health

# Conditions, procedures and drugs, as stems where the four languages share one (diabet- covers diabetes,
# diabetic, diabète, diabétique, Diabetiker, diabético). Acronyms that are also ordinary words or code
# (MS for milliseconds, STD for std::, AIDS for hearing aids, PrEP for prep) match in capitals only.
_CONDITIONS = (
    r"(?-i:HIV|AIDS|STI|STD|PrEP|MS|ADHS|TDAH|VIH|SIDA|IVG|AVC|PTSD|OCD|COPD|TOC|TEPT|TEA|TSA|ASD)|"
    # shared stems
    r"diab[eéè]t\w*|canc[eé]r\w*|c[aá]ncer|tumou?r\w*|tumeur\w*|leu[ck]\w*mi\w*|lymphom\w*|linfoma|melanom\w*|"
    r"chemo\w*|chimio\w*|quimio\w*|radiother\w*|radioterap\w*|hepati\w*|h[eé]patite|tuberculo\w*|"
    r"depress\w*|d[eé]pressi\w*|depresi[oó]n|deprimid[oa]|d[eé]prim[eé]e?|anxi\w*|angst\w*st[oö]rung|ansiedad|"
    r"panic attacks?|crises? d'angoisse|panikattacke\w*|ataques? de p[aá]nico|bipola\w*|schizo\w*|esquizo\w*|"
    r"psychos\w*|psicosis|adhd|autis\w*|autist\w*|[eé]pilep\w*|seizures?|crises? d'[eé]pilepsie|anfall|anf[aä]lle|"
    r"asthm\w*|asma\w*|dement\w*|d[eé]mence|demenz|alzh[eé]imer\w*|p[aá]rkinson\w*|multiple sclerosis|"
    r"scl[eé]rose en plaques|multiple sklerose|esclerosis m[uú]ltiple|crohn\w*|c[eo]liac\w*|lupus|arthri\w*|"
    r"insuffisance (?:cardiaque|r[eé]nale|respiratoire)|herzinsuffizienz|vorhofflimmern|atrial fibrillation|"
    r"insuficiencia (?:card[ií]aca|renal)|fibrilaci[oó]n auricular|(?-i:T[12]DM)|hba1c|"
    r"hypertension|hipertensi[oó]n|high blood pressure|bluthochdruck|heart (?:failure|attack)|infarct\w*|"
    r"infarto|herzinfarkt|stroke|schlaganfall|arrhythmi\w*|kidney (?:disease|failure)|insuffisance r[eé]nale|"
    r"niereninsuffizienz|insuficiencia renal|dialys\w*|di[aá]lisis|cirrho\w*|cirrosis|anore\w*|bulimi\w*|"
    r"boulimi\w*|magersucht|eating disorder|troubles? alimentaires?|essst[oö]rung\w*|addict\w*|adicci[oó]n|"
    r"addiction|alcoholi\w*|alcoh[oó]lic[oa]|alcool\w*|alkohol(?:sucht|abh[aä]ngig\w*|iker\w*|krank\w*)|"
    r"s[uü]chtig|drogensucht|spielsucht|suchterkrankung|opioid\w*|overdose|suicid\w*|self-harm|automutilation|"
    r"chlamydia|gonorrh?oea|syphilis|s[iy]filis|herpes|hpv|pregnan\w*|enceinte|grossesse|schwanger\w*|"
    r"embarazad[oa]|embarazo|miscarriage|fausse couche|fehlgeburt|aborto espont[aá]neo|abortion|avortement|"
    r"abtreibung|aborto|infertil\w*|unfruchtbar\w*|ivf|fiv|endometrio\w*|endom[eé]tri\w*|migra[iñ]\w*|"
    r"migr[aä]ne|insomni\w*|schlafst[oö]rung\w*|covid\w*|long covid|thyro\w*|thyroï\w*|tiroid\w*|"
    r"hypothyr\w*|hyperthyr\w*|hipotiroid\w*|hipertiroid\w*|schilddr[uü]s\w*|sleep apnea|apn[eé]e du sommeil|"
    r"obesity|concussion|biops\w*|mri|irm|blood (?:test|work) results|positive for|s[eé]ropositi\w*|"
    r"seropositiv\w*|hiv-positiv\w*|burn-?out|psychotherap\w*|psicoterapia|psychiatri\w*|psiqui[aá]tric\w*|"
    r"enfermedad de \w+|maladie d(?:e |')\w+|krankheit|"
    # drugs
    r"metformin\w*|insulin\w*|ozempic|semaglutid\w*|sertralin\w*|zoloft|fluoxetin\w*|prozac|escitalopram|"
    r"lexapro|citalopram|paroxetin\w*|venlafaxin\w*|bupropion|wellbutrin|xanax|alprazolam|diazepam|valium|"
    r"furos[eé]mid\w*|carboplatin\w*|cisplatin\w*|tamoxif\w*|"
    r"lorazepam|lithium(?![- ](?:ion|batter|polymer|akku))|litio|quetiapin\w*|seroquel|olanzapin\w*|"
    r"risperidon\w*|aripiprazol\w*|lamotrigin\w*|valpro\w*|levetiracetam|methylphenidat\w*|metilfenidato|"
    r"ritalin\w*|adderall|levothyrox\w*|levotiroxina|l-thyroxin|warfarin\w*|eliquis|apixaban|atorvastatin\w*|"
    r"lisinopril|amlodipin\w*|metoprolol|prednis\w*|methotrexat\w*|metotrexato|humira|oxycodon\w*|fentanyl|"
    r"methadon\w*|metadona|suboxone|buprenorphin\w*|tramadol|morphin\w*|morfina|levodopa|donepezil\w*|"
    r"memantin\w*|rivastigmin\w*|pregabalin\w*|gabapentin\w*|ocrevus|truvada|antiretrovira\w*|antirretrovira\w*|"
    r"antidepress\w*|antid[eé]presseur\w*|antidepresiv\w*|anxiolyti\w*|ansiol[ií]tic\w*|antipsychoti\w*|"
    r"neurolepti\w*|antipsic[oó]tic\w*|birth control pill"
)
_HEALTH_TERM = gated(re.compile(r"\b(?:" + _CONDITIONS + r")\b", _I))
# A disclosure: somebody (I, my mother, he, a named person, a patient) has / takes / was diagnosed with ...
# It must be followed closely by a health term (see `find_health`), so broad verbs like "is" stay safe.
_DISCLOSURE_VERB = gated(re.compile(
    r"\b(?:has|had|have|is|was|seems|might|may|takes|took|suffers|started|got|relapsed)\b", _I))


def _disclosure_starts(ix: scan.Index) -> Iterator[int]:
    """Where "Anna has", "Anna's brother was" can start: the words (up to four) before such a verb. The other
    ways a disclosure starts are found from their own first words."""
    for at in scan.anchor_positions(ix, _DISCLOSURE_VERB):
        yield from scan.back_words(ix.text, at, " ", 4)


_DISCLOSURE = gated(re.compile(
    r"(?<!\bcan )(?<!\bshould )(?<!\bcould )(?<!\bif )(?<!\bdo )(?<!\bdoes )\b(?:"
    # English
    r"I(?:'ve| have)? (?:been )?(?:have|had|got|take|took|taking|using|started|stopped|suffer\w*|struggl\w*|"
    r"liv\w*|on|treated|seeing|diagnosed|tested|found out)|I(?:'m| am) (?:\w+ )?|"
    r"(?:he|she|they|(?:my|our|his|her|their) \w+|(?-i:[A-Z][a-z]+))(?: \w+){0,3}? (?:has|had|have|is|was|seems|"
    r"might be|may be|takes|took|is taking|suffers|started|got|relapsed)|"
    r"I (?:start|begin|began|finish|finished|get|got)\b|diagnosed with|tested positive|"
    # a named patient: "Patient Robert Hale", "Mr. Alan Brooks, 58,", "Mme Dumas, 72 ans,", "Herr Brandt, 66,"
    r"(?-i:[Pp]atient(?:in|e)? [A-Z][a-z]+)|(?-i:(?:Mr|Mrs|Ms|M|Mme|Mlle|Herr|Frau|Sr|Sra|Srta)\.? [A-Z][\w-]+"
    r"(?: [A-Z][\w-]+)?),? \d{1,3}\b|"
    r"je (?:commence|débute|termine|finis|reprends)|ich (?:fange|fang|beginne|starte|bekomme|kriege)\b|"
    r"(?:empiezo|comienzo|termino|acabo|empecé)\b|"
    # French
    r"j'ai\b|je (?:suis|prends|souffre|fais|vis|sors)|on m'a (?:diagnostiqu\w+|trouv\w+|d[eé]tect\w+)|"
    r"(?:il|elle|(?:mon|ma|mes|son|sa|notre) \w+)(?: [\w']+){0,3}? (?:a|est|prend|souffre|suit|fait|vit)\b|"
    r"depuis (?:mon|ma) |diagnostiqu\w+|"
    # German
    r"ich (?:habe|hatte|nehme|leide|bin|war)|bei mir|bei (?:meine[mr]?|unsere[mr]?) \w+|"
    r"(?:er|sie|(?:mein|meine|meinem|unser|unsere) \w+)(?: \w+){0,3}? (?:hat|hatte|nimmt|leidet|ist|war)\b|"
    r"diagnostiziert|festgestellt|"
    # Spanish
    r"(?:yo )?(?:tengo|tuve|tomo|estoy|sufro|padezco)\b|me (?:diagnosticaron|recetaron|han (?:diagnosticado|"
    r"detectado|encontrado))|(?:le|les|nos) (?:diagnosticaron|detectaron|han diagnosticado|han detectado)|"
    r"(?:él|ella|(?:mi|mis|su|nuestr[oa]) \w+)(?: \w+){0,3}? (?:tiene|toma|sufre|padece|está|es)\b|"
    r"diagnosticad[oa])",
    _I,
), partial=True, extra=_disclosure_starts)
# The asker's (or a relative's) own clinician or treatment: a disclosure wherever it stands in the sentence.
_CARE = gated(re.compile(
    r"\b(?:(?:my|his|her|their|our) (?:\w+ )?(?:doctor|pediatrician|paediatrician|therapist|psychiatrist|"
    r"oncologist|neurologist|cardiologist|gp|surgeon|diagnosis|medication|meds|prescription|test results|"
    r"treatment|dose|dosage|symptoms)|(?:mon|ma|son|sa|notre) (?:m[eé]decin|psychiatre|psy|oncologue|"
    r"neurologue|cardiologue|p[eé]diatre|g[eé]n[eé]raliste|traitement|diagnostic|ordonnance)|"
    r"(?:mes|ses) (?:m[eé]dicaments|sympt[oô]mes|r[eé]sultats)|(?:mein|meine|sein|seine|ihr|ihre) "
    r"(?:arzt|[aä]rztin|hausarzt|haus[aä]rztin|kinderarzt|kinder[aä]rztin|therapeut\w*|psychiater\w*|onkolog\w*|"
    r"diagnose|medikament\w*|befund\w*)|(?:mi|su) (?:m[eé]dic[oa]|psiquiatra|terapeuta|onc[oó]log[oa]|pediatra|"
    r"neur[oó]log[oa]|diagn[oó]stico|medicaci[oó]n|medicamento|tratamiento))\b",
    _I,
))
_POSSESSIVE_BEFORE = re.compile(
    r"\b(?:my|his|her|their|mon|ma|mes|son|sa|ses|mein\w*|sein\w*|ihr\w*|mi|mis|su|sus)\s+(?:[\w-]+\s+)?$", _I,
)
_NEAR_CHARS = 60  # a disclosure verb and its health term sit within this many characters


# "I have a question about cancer", "an essay on depression": a topic, not a disclosure.
_TOPIC = gated(re.compile(
    r"\b(?:question|questions|essay|article|paper|research|report|presentation|homework|assignment|lecture|course|"
    r"book|film|movie|documentary|podcast|talk|blog post|exposé|mémoire|frage|fragen|aufsatz|referat|vortrag|"
    r"artikel|pregunta|preguntas|ensayo|trabajo|artículo|charla)(?:\s+\w+){0,2}?\s+"
    r"(?:about|on|regarding|sur|über|zu|zum|zur|sobre)\b",
    _I,
))


def _sentences_with(rx: re.Pattern[str], text: str) -> Iterator[tuple[int, int, list[re.Match[str]]]]:
    """Sentences holding at least one match of `rx`, with those matches (offsets into `text`).

    The term scan runs once over the whole text; sentence rules run only where a term is, and only those
    sentences are cut out (from the end of the last one, not from the text's start), which keeps long texts
    and long conversations cheap."""
    terms = list(scan.finditer(rx, text))
    start, k = 0, 0
    while k < len(terms):
        a, b = sentence_around(text, terms[k].start(), start)
        inside = []
        while k < len(terms) and terms[k].start() < b:
            inside.append(terms[k])
            k += 1
        yield a, b, inside
        start = b


def find_health(text: str) -> Iterator[Hit]:
    """Health terms in sentences that disclose something about somebody (not topics, fiction or quizzes)."""
    quoted = translated_quotes(text)
    for a, b, terms in _sentences_with(_HEALTH_TERM, text):
        terms = [t for t in terms if not any(qa <= t.start() < qb for qa, qb in quoted)]
        if not terms:
            continue
        sent = text[a:b]  # (a long sentence is read with gated scans too)
        if (GENERIC_QUESTION.match(sent) and not scan.search(FIRST_PERSON, sent)) or scan.search(FICTION, sent):
            continue
        rel = [t.start() - a for t in terms]
        owned = any(_POSSESSIVE_BEFORE.search(text, max(a, t.start() - 30), t.start()) for t in terms)
        if not owned and not scan.search(_CARE, sent) and not any(
                d.start() < r <= d.end() + _NEAR_CHARS for d in scan.finditer(_DISCLOSURE, sent) for r in rel):
            continue
        topic = scan.search(_TOPIC, sent)
        for term in terms:
            if topic and term.start() - a >= topic.end():
                continue
            yield Hit("health", term.start(), term.end(), "HEALTH",
                      "medical detail about a person (a condition, treatment or drug in a personal disclosure)")


# ---------------------------------------------------------------- confidential (HR / legal / financial)

_MARKER_UPPER = gated(re.compile(
    r"\b(?:CONFIDENTIAL|STRICTLY CONFIDENTIAL|INTERNAL ONLY|INTERNAL USE ONLY|CONFIDENTIEL|VERTRAULICH|"
    r"STRENG VERTRAULICH|CONFIDENCIAL|PRIVILEGED (?:AND|&) CONFIDENTIAL)\b"
))
# Every `_MARKER` match holds one of these words: the first word of a marker line (after the line's spaces and
# an opening bracket), or a word of a marker phrase with only words, spaces, apostrophes and hyphens between
# the phrase's start and it ("the attached file is under NDA", "no distribuir fuera").
_MARKER_WORDS = gated(re.compile(
    r"\b(?:strictly|highly|strictement|streng|estrictamente|confidential|internal|confidentiel|diffusion|usage|"
    r"vertraulich|nur|confidencial|uso|privileged|nda|public|share|forward|distribute|distribution|external|"
    r"diffuser|transférer|weitergeben|weitergabe|fuera|externamente)", _I,
))


def _marker_starts(ix: scan.Index) -> Iterator[int]:
    """Where a `_MARKER` match can start, read back from each of `_MARKER_WORDS`: the words before it, and
    the first line start in the spaces before it (and its bracket): from any of those the pattern reads the
    same, so the first is the one a full scan would find."""
    text = ix.text
    for at in scan.anchor_positions(ix, _MARKER_WORDS):
        yield from scan.back_words(text, at)
        j = at - 1 if at and text[at - 1] in "[(" else at
        i = j
        while i > 0 and text[i - 1].isspace():
            i -= 1
        if i == 0 or text[i - 1] == "\n":
            yield i
        elif (nl := text.find("\n", i, j)) != -1:
            yield nl + 1


_MARKER = gated(re.compile(
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
), anchors_only=True, extra=_marker_starts)
_MONEY = r"(?=[^!?\n]{0,40}?(?:[$€£]\s?\d|\d\s?(?:k|K|€|\$|£|EUR|USD|euros?|dollars?)))"
_HR_TERM = gated(re.compile(
    # Words that are also code or everyday words ("raise", "terminate()", "fire an event", "pip", "Vergleich" =
    # comparison, "demanda" = demand, "gagne" = wins) are bound to a form or an amount, or kept out.
    r"\b(?:salary|salaries|pay rise|(?:a|pay|salary) raise|raise (?:to|of) [$€£\d]|bonus|compensation|"
    r"(?:earns|makes|gagne|verdient|gana|cobra)" + _MONEY + r"|performance review|performance improvement plan|"
    r"(?-i:PIP)|disciplinary|written warning|termination|terminated|(?:fire|fired|firing) (?:him|her|them)|"
    r"(?:get|got|getting|be|been) fired|let \w+ go|let go|letting go|dismiss\w*|gross salary|annual salary|"
    r"laid off|layoffs?|redundancy|redundancies|made redundant|severance|settlement|lawsuit|sued|suing|litigation|"
    r"harassment complaint|grievance|misconduct|investigation|nda|non-disclosure|unreleased|"
    r"not yet (?:public|announced)|before (?:the )?(?:announcement|earnings call|release)|earnings|"
    r"quarterly results|revenue figures|acquisition|merger|buyout|insider|"
    # French
    r"salaire|augmentation|brut|prime de \w+|rémunération|entretien annuel|évaluation (?:annuelle|individuelle|"
    r"de performance)|avertissement (?:disciplinaire|écrit)|licenciement|licencier|rupture conventionnelle|"
    r"plan social|indemnité|procès|litige|harcèlement|faute grave|résultats (?:financiers|trimestriels|annuels|"
    r"semestriels|du T\d|non publiés)|chiffre d'affaires|rachat|fusion|non publiés?|"
    # German
    r"gehalt|gehälter|lohn|brutto|gehaltserhöhung|leistungsbeurteilung|mitarbeitergespräch|abmahnung|kündigung|"
    r"kündigen|entlassung|entlassen|aufhebungsvertrag|abfindung|klage|außergerichtlicher vergleich|"
    r"vergleichssumme|belästigung|quartalszahlen|umsatz\w*|übernahme|unveröffentlicht\w*|"
    r"noch nicht veröffentlicht|"
    # Spanish
    r"salario|sueldo|bruto|aumento (?:de sueldo|salarial)|subida salarial|evaluación de desempeño|sanción|despido|"
    r"despedir|finiquito|indemnización|demanda (?:judicial|laboral|contra|por)|demandar\w*|acuerdo extrajudicial|"
    r"acoso|resultados trimestrales|facturación|adquisición|fusión|no publicad[oa]s?)\b",
    _I,
))
# Something specific: a money amount, a named person, or "our/we" (the user's own organisation).
_SPECIFIC = re.compile(
    r"[$€£]\s?\d|\d[\d.,\s]*\s?(?:k|K|€|\$|£|EUR|USD|euros?|dollars?|Euro|millones|millions?|Millionen|Mio|M)(?!\w)|"
    r"\b(?:Mr|Ms|Mrs|Dr|M|Mme|Herr|Frau|Sr|Sra)\.? [A-Z][a-z]+|"
    r"\b(?:our|we|we're|we've|my (?:employee|colleague|direct report|coworker|team member)|"
    r"notre|nos|nous|mon (?:collègue|employé|salarié)|ma (?:collègue|salariée)|"
    r"unser\w*|wir|mein(?:e|em|en)? (?:kollegin?|mitarbeiter\w*)|"
    r"nuestr[oa]s?|nosotros|vamos a|mi (?:emplead[oa]|compañer[oa]))\b",
)
_FULL_NAME = re.compile(r"\b([A-ZÀ-Ý][a-zà-ÿ]+) ([A-ZÀ-Ý][a-zà-ÿ]+)\b")
# Capitalised words that start sentences or name things, not people ("If False", "On Windows", "Das Gehalt").
_NOT_NAME = _words(
    "If On In At The This That These Those For When While And But Or With Without See Note Return Returns True False "
    "None Windows Linux Python Please Our We You Your My His Her Their It Its Is Are Was Le La Les Un Une Des Ce "
    "Cette Pour Dans Sur Mon Ma Mes Notre Nos Votre Der Die Das Ein Eine Für Mit Und Im Am Unser Unsere Mein Meine "
    "El La Los Las Un Una Para Con En Mi Mis Nuestro Nuestra Su Sus Dear Hi Hello Bonjour Hallo Hola Draft Write "
    "Help Summarise Summarize Translate Rewrite Redacta Rédige Schreib Escribe Formuliere Prépare"
)


_AMOUNT = re.compile(r"[$€£]\s?\d|\d\s?(?:k|€|\$)")


def _specific(sent: str) -> bool:
    """A money amount, a title + name, a full name, or "we/our": the sentence is about someone in particular."""
    if _SPECIFIC.search(sent):
        return True
    return any(a not in _NOT_NAME and b not in _NOT_NAME for a, b in _FULL_NAME.findall(sent))


# "Don't tell anyone but we're being acquired": confided news about an organisation or a colleague.
_CONFIDE = gated(re.compile(
    r"\b(?:don'?t tell anyone|between (?:us|you and me)|off the record|keep (?:this|it) (?:quiet|to yourself)|"
    r"entre nous|ne le dis à personne|que ça reste entre nous|unter uns|sag(?:'s| es)? niemandem|"
    r"que no salga de aquí|entre nosotros|no se lo digas a nadie)\b", _I,
))
_EVENT = gated(re.compile(
    r"\b(?:acquired|being bought|bought out|takeover|merger|layoffs?|laid off|fired|restructuring|bankrupt\w*|"
    r"rachet\w*|rachat|fusion|licenci\w*|plan social|faillite|übernomm\w*|übernahme|fusion|entlass\w*|"
    r"kündig\w*|insolven\w*|nos compra|compra(?:rá|n)?|adquiri\w*|fusión|despid\w*|(?-i:ERE)|quiebra)\b", _I,
))


# A pasted pay table: a header naming a pay column, then rows with a person's full name and an amount.
_PAY_WORD = (r"(?:salary|salaries|base|bonus|compensation|pay|wage|salaire|rémunération|prime|gehalt|brutto|lohn|"
             r"jahresgehalt|sueldo|salario|bruto|retribución)")
_PAY_WORDS = gated(re.compile(r"(?<![^\W_])" + _PAY_WORD, _I))


def _pay_line_starts(ix: scan.Index) -> Iterator[int]:
    """The start of each line holding a pay word (a header is one whole line)."""
    for at in scan.anchor_positions(ix, _PAY_WORDS):
        yield ix.text.rfind("\n", 0, at) + 1


_PAY_HEADER = gated(re.compile(
    r"^(?=[^\n]*[,;|\t])[^\n]*(?<![^\W_])" + _PAY_WORD + r"(?![^\W\d_])[^\n]*$",
    _I | re.M,
), anchors_only=True, extra=_pay_line_starts)
# A row: a full name, then a separator, then a number of 4 digits or more. The first name, the first separator
# after it and the first such number after that are taken and kept (atomic groups): any later ones could only
# do as well, and trying them all made a long line cost its length squared, or cubed.
_PAY_ROW = re.compile(r"^(?>[^\n]*?\b[A-ZÀ-Ý][a-zà-ÿ]+ [A-ZÀ-Ý][a-zà-ÿ]+\b)(?>[^\n]*?[,;|\t])[^\n]*?\d{4}[^\n]*$",
                      re.M)


def _pay_table(text: str) -> re.Match[str] | None:
    """The header of a table of named people's pay (two or more such rows after it), else None."""
    head = scan.search(_PAY_HEADER, text)
    if head is None or scan.search(FICTION, text):
        return None
    return head if next(islice(_PAY_ROW.finditer(text, head.end()), 1, None), None) is not None else None


def find_confidential(text: str) -> Iterator[Hit]:
    """Confidentiality markers, confided corporate news, and HR/legal/financial details about someone."""
    pay = _pay_table(text)
    if pay:
        yield Hit("confidential", pay.start(), pay.end(), "CONFIDENTIAL", "table of named people's pay")
    confide = scan.search(_CONFIDE, text)
    if confide and scan.search(_EVENT, text):
        yield Hit("confidential", confide.start(), confide.end(), "CONFIDENTIAL",
                  "news confided off the record about an organisation or a colleague")
    for m in scan.finditer(_MARKER_UPPER, text):
        yield Hit("confidential", m.start(), m.end(), "CONFIDENTIAL", "document marked confidential / internal")
    for m in scan.finditer(_MARKER, text):
        if not GENERIC_AT.match(text, text.rfind("\n", 0, m.start()) + 1):  # the line read in place, not copied
            yield Hit("confidential", m.start(), m.end(), "CONFIDENTIAL", "document marked confidential / internal")
    if is_template(text):  # "[Employee Name]", "[Abfindungsbetrag]": a form about nobody yet
        return
    for a, b, terms in _sentences_with(_HR_TERM, text):
        sent, term = text[a:b], terms[0]
        # A general question ("How is severance calculated?") stays benign unless it names an amount.
        if _specific(sent) and not (GENERIC_QUESTION.match(sent) and not _AMOUNT.search(sent)):
            yield Hit("confidential", term.start(), term.end(), "CONFIDENTIAL",
                      "HR/legal/financial detail about a specific person or organisation")
