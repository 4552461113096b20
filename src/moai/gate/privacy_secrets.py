"""Secrets and credentials: vendor keys, JWTs, PEM private keys, credentials in URLs, and passwords or tokens
given in context.

Vendor key formats come from detect-secrets' plugins (kept up to date upstream), plus a few it lacks. Own
rules, in EN/FR/DE/ES, cover what no library does: a password after "password is" or "Passwort:", one handed
over with a login or on a command line, a secret value under a secret-named key in code or in a .env, shell,
YAML or JSON line (`DJANGO_SECRET_KEY=…`, `client_secret: …`). Placeholder credentials (`user:password@`,
`<your-key>`, `${VAR}`), vendors' `…EXAMPLE…` values, code that reads a password or names one, and passwords
in fiction are not secrets.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator

from moai.gate import privacy_scan as scan
from moai.gate.privacy_scan import gated
from moai.gate.privacy_text import FICTION, Hit, words

_I = re.IGNORECASE


def _vendor_patterns() -> list[tuple[re.Pattern[str], str]]:
    """Key formats from detect-secrets' plugins (kept up to date upstream), plus a few it lacks."""
    from detect_secrets.plugins import (
        aws,
        azure_storage_key,
        discord,
        github_token,
        gitlab_token,
        mailchimp,
        npm,
        openai,
        pypi_token,
        sendgrid,
        slack,
        square_oauth,
        stripe,
        telegram_token,
        twilio,
    )

    out: list[tuple[re.Pattern[str], str]] = [(aws.AWSKeyDetector.denylist[0], "AWS access key id")]
    for plugin in (azure_storage_key.AzureStorageKeyDetector, discord.DiscordBotTokenDetector,
                   github_token.GitHubTokenDetector, gitlab_token.GitLabTokenDetector, mailchimp.MailchimpDetector,
                   npm.NpmDetector, openai.OpenAIDetector, pypi_token.PypiTokenDetector, sendgrid.SendGridDetector,
                   slack.SlackDetector, square_oauth.SquareOAuthDetector, stripe.StripeDetector,
                   telegram_token.TelegramBotTokenDetector, twilio.TwilioKeyDetector):
        out.extend((rx, plugin.secret_type) for rx in plugin.denylist)
    extra = {
        r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}": "OpenAI API key",
        r"\bsk-ant-[A-Za-z0-9_-]{32,}": "Anthropic API key",
        r"\bAIza[0-9A-Za-z_-]{35}": "Google API key",
        r"\bhf_[A-Za-z0-9]{30,}": "Hugging Face token",
        r"\bgithub_pat_[A-Za-z0-9_]{40,}": "GitHub fine-grained token",
        r"\bxox[abposre]-[A-Za-z0-9-]{10,}": "Slack token",
        r"\b[rs]k_(?:live|test)_[0-9a-zA-Z]{24,}": "Stripe key",
        r"\bAKIA[0-9A-Z]{16}\b": "AWS access key id",
    }
    out.extend((re.compile(p), why) for p, why in extra.items())
    for rx, _ in out:
        gated(rx, **_VENDOR_GATES.get(rx.pattern, {}))  # type: ignore[arg-type]
    return out


def _npm_starts(ix: scan.Index) -> Iterator[int]:
    """The first "//" of each line holding "/:_authToken=": a match can start there if anywhere in the line
    (its `.+` takes any characters but a line break), and trying each "//" rescanned the line each time."""
    text = ix.text
    at = text.find("/:_authToken=")
    while at != -1:
        first = text.find("//", text.rfind("\n", 0, at) + 1, at)
        if first != -1:
            yield first
        at = text.find("/:_authToken=", at + 1)


def _discord_starts(ix: scan.Index) -> Iterator[int]:
    """24 to 26 characters before a "." that has another "." 7 characters on."""
    for m in _DOTTED.finditer(ix.text):
        yield from (m.start() - 24, m.start() - 25, m.start() - 26)


def _telegram_starts(ix: scan.Index) -> Iterator[int]:
    """8 to 10 characters before a ":" that follows a digit."""
    text = ix.text
    for m in _COLON_KEY.finditer(text):
        if m.start() and text[m.start() - 1].isdecimal():
            yield from (m.start() - 8, m.start() - 9, m.start() - 10)


_DOTTED = re.compile(r"\.(?=[\w-]{6}\.)")
_COLON_KEY = re.compile(r":(?=[0-9A-Za-z_-]{35})")
# Where the detect-secrets patterns that start with no fixed string can start, for these exact patterns (a
# changed pattern upstream is scanned in full, which is slower, never wrong).
_VENDOR_GATES: dict[str, dict[str, object]] = {
    r"[MNO][a-zA-Z\d_-]{23,25}\.[a-zA-Z\d_-]{6}\.[a-zA-Z\d_-]{27}": {"anchors_only": True, "extra": _discord_starts},
    r"[0-9a-z]{32}-us[0-9]{1,2}": {"anchors_only": True, "finds": [("-us", False, [-32])]},
    r"\/\/.+\/:_authToken=\s*((npm_.+)|([A-Fa-f0-9-]{36})).*": {"anchors_only": True, "extra": _npm_starts},
    r"\d{8,10}:[0-9A-Za-z_-]{35}": {"anchors_only": True, "extra": _telegram_starts},
}


_VENDOR: list[tuple[re.Pattern[str], str]] | None = None
_JWT = gated(re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"))
_PEM = gated(re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END [A-Z0-9 ]*-----)?", re.S))


def _conn_starts(ix: scan.Index) -> Iterator[int]:
    """A URL's scheme, 2 to 21 characters before its "://"."""
    text = ix.text
    at = text.find("://")
    while at != -1:
        yield from range(max(0, at - 21), at - 1)
        at = text.find("://", at + 1)


_CONN = gated(re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://([^\s:/@'\"]+):([^\s@'\"]+)@[\w.-]+"),
              anchors_only=True, extra=_conn_starts)
_PLACEHOLDER = re.compile(
    r"^(?:pass(?:word|wd)?|pwd|secret|changeme|xxx+|\*+|\.+|<[^>]*>|\{[^}]*\}|\$\{?[\w:-]+\}?|%[\w()]+s?|your[_-]?\w*|"
    r"mot_?de_?passe|passwort|contrase[ñn]a|\[[^\]]*\]|example|test|dummy|foo|bar)$",
    _I,
)
_PW_KEY = (
    r"(?:password|passwd|passcode|passphrase|pwd|pw(?=\s*[:=])|pin(?: code)?|mot de passe|mdp|code pin|passwort|"
    r"kennwort|zugangscode|contraseña|contrasena|"
    # Spanish "clave" is also "key": only "mi clave", "clave de acceso", "clave del wifi" ...
    r"(?:(?<=\bmi )|(?<=\btu )|(?<=\bsu ))clave|clave(?= (?:de acceso|secreta|del? (?:wifi|wi-fi|correo|banco|router|"
    r"email|red|m[oó]vil|tarjeta))))"
)
_PW_KEYS = gated(re.compile(r"(?<![^\W_])" + _PW_KEY, _I))  # where a key can start


def _words_before_key(text: str, at: int, tokens: int = 3) -> list[int]:
    """Where "my"/"the" can start before a password key at `at`: the last word of each of the `tokens`
    whitespace-separated [\\w-]+ tokens before it (`_PW` allows two words between "my" and the key)."""
    out: list[int] = []
    i = at
    for _ in range(tokens):
        j = i
        while j > 0 and text[j - 1].isspace():
            j -= 1
        end = j
        if end == i:  # no space before: the key is glued to what precedes it (read before walking a long name)
            break
        while j > 0 and (text[j - 1].isalnum() or text[j - 1] in "_-"):
            j -= 1
        if j == end:
            break
        w = end
        while w > j and (text[w - 1].isalnum() or text[w - 1] == "_"):
            w -= 1
        out.append(w)
        i = j
    return out


def _pw_starts(ix: scan.Index) -> list[int]:
    """Each password key, and the words before it that may say whose password it is."""
    keys = scan.anchor_positions(ix, _PW_KEYS)
    return keys + [w for at in keys for w in _words_before_key(ix.text, at)]


_PW = gated(re.compile(
    # "my (gmail) password", "the wifi password": a particular one, so even a plain word after it counts.
    # ("Your password is inactive" is a system message talking to the user: no such credit.)
    r"(?:(?:(?P<own>\b(?:my|our|mon|ma|notre|mein\w*|unser\w*|mi|nuestr[oa])\b)|"
    r"(?P<det>\b(?:the|le|la|das|der|el)\b))(?:\s+[\w-]+){0,2}?\s+)?"
    # DB_PASSWORD=, WLAN-Passwort: the key may be glued to a prefix by _ or -, not to letters.
    r"(?<![^\W_])" + _PW_KEY + r"(?![^\W\d_])(?:"
    # "password (for my bank) is X" / "mot de passe est X" / "Passwort lautet X"
    r"(?:\s+(?:for|of|to|on|at|pour|de|du|des|für|von|vom|zu|zum|zur|bei|para|del|en)(?:\s+[\w.@'-]+){1,3}?)?"
    r"\s+(?P<verb>is|was|est|était|ist|lautet|war|es|era)\b\s*:?"
    # "password of the home wifi: X" / "Passwort=X" / 'PASSWORD': 'X'
    r"|(?:\s+[^\W\d][\w'.@-]*){0,5}?[\"']?\s*(?:[:=]|->)"
    # an unquoted value may hold a quote after its first character (Ab"cd1234!)
    r")\s*(?P<q>[\"'`«„“])?\s*(?P<v>(?(q)[^\s\"'`»“”]{3,64}|[^\s\"'`»“”][^\s»“”]{2,63}))",
    _I,
), anchors_only=True, extra=_pw_starts)
# Words that follow "password is ..." in questions and advice, never a password.
_PW_STOP = words("""
locked blocked disabled enabled active inactive gesperrt bloqué bloqueado activo inactivo aktiv inaktiv
too not a an the very weak strong correct incorrect wrong invalid expired required needed missing
empty long short safe secure insecure stored hashed encrypted being still always never
case-sensitive reset changed forgotten lost what how where which when why who enough better best
good bad ok okay same different used shown visible hidden trop pas un une le la très faible fort
forte correct incorrect invalide expiré requis obligatoire vide court long sûr stocké chiffré haché
toujours jamais oublié perdu changé quoi comment quel quelle zu nicht ein eine der die das sehr
schwach stark richtig falsch ungültig abgelaufen erforderlich leer kurz lang sicher gespeichert
verschlüsselt gehasht immer nie vergessen geändert was wie welches demasiado no un una el la muy
débil fuerte correcta incorrecta inválida caducada requerida vacía corta larga segura guardada
cifrada siempre nunca olvidada cambiada qué cómo cuál
""")
# "user admin / pass Blue!3830", "identifiant admin, mot de passe Falke114", "Benutzer m.keller - Passwort X":
# a login and its password handed over together, with no "is" or ":" between key and value.
# `curl -u admin:S3cr3t`, `--user admin:S3cr3t`, `wget --password=…`: a password on a command line.
_CLI_CRED = gated(re.compile(
    r"(?:(?<!\S)(?:-u|--user)\s*[\"']?[^\s:\"']{1,64}:|--(?:http-)?password[= ])[\"']?(?P<v>[^\s\"']{3,64})"
), anchors_only=True, finds=[("-u", False, [0, -1]), ("--password", False, [0]), ("--http-password", False, [0])])
# "my login is mlefebvre and password X", "mon identifiant est jdupont et mon mot de passe X": "is" may stand
# between each key and its value, and "my"/"the" before the password key.
# Every run of spaces is taken whole (possessive): a run can be followed by one thing only, and "login" before
# 32,000 spaces made the engine try each split of them (7 s holding the server).
_CRED_IS = r"(?:\s++(?:is|est|ist|lautet|es))?"
_CRED_PAIR = gated(re.compile(
    r"\b(?:user(?:name)?|login|identifiant|utilisateur|benutzer(?:name)?|usuario|nom d'utilisateur)" + _CRED_IS +
    r"\s*+[:=]?\s*+[^\s,;/|]{2,40}\s*+(?:[,;/|-]|\b(?:and|et|und|y)\b)?\s*+"
    r"(?:(?:my|the|mon|ma|le|mein|das|mi|la)\s++)?"
    # German compounds: Startpasswort, Initialkennwort
    r"(?:pass(?:word)?|pwd|mot de passe|mdp|\w*passwort|\w*kennwort|contraseña|contrasena|clave|pin)\b" + _CRED_IS +
    r"\s*+[:=]?\s*+(?P<v>[^\s\"'`]{3,64})",
    _I,
))
# define('DB_PASS', 'x'), ("SMTP_PASSWORD", "x"), "api_token": "x": a quoted secret-named key, then its value.
_QUOTED_KEY = r"(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key)"
_QUOTED_KEYS = gated(re.compile(r"(?<![^\W_])" + _QUOTED_KEY, _I))


def _quoted_starts(ix: scan.Index) -> Iterator[int]:
    """The quote before each secret-named key: right before it, or before the `\\w*[_-]` prefix it has.

    Keys glued in one long name (`MY_SECRET_ACCESS_KEY_MY_SECRET_…`) share that prefix's start: the walk back
    from a key stops where the walk from the key before it began and takes its start, so a name is read once,
    not once per key in it (1,500 keys in 32 KB took 1.8 s)."""
    text = ix.text
    walked_from, walked_to = -1, -1  # the last walk back: from where, to which start
    for at in scan.anchor_positions(ix, _QUOTED_KEYS):
        if at and text[at - 1] in "\"'":
            yield at - 1
        elif at and text[at - 1] in "_-":
            i = at - 1
            while i > 0:
                if i == walked_from:
                    i = walked_to
                    break
                if not (text[i - 1].isalnum() or text[i - 1] == "_"):
                    break
                i -= 1
            walked_from, walked_to = at - 1, i
            if i:
                yield i - 1


# The pattern reads a quoted name whole and what follows it, and takes none of it: whether the name is secret-named
# is `_secret_name`'s to say. A key inside the pattern (`["'](?:\w*[_-])?KEY(?:[_-]\w*)?["']`) was tried after
# each "_" of a long glued name, each try reading the rest of it (`'A_TOKEN_A_TOKEN_…`: 6 s at 64 KB).
_QUOTED_PAIR = gated(re.compile(
    r"[\"'](?=(?P<name>[\w-]++)[\"']\s*+[,:=]>?\s*+[\"'](?P<v>[^\"'\s]{3,64})[\"'])",
    _I,
), anchors_only=True, extra=_quoted_starts)
_QUOTED_KEY_AT = re.compile(_QUOTED_KEY, _I)
_NAME_SEPARATOR = re.compile(r"[_-]")


def _secret_name(name: str) -> bool:
    """Whether a quoted name is secret-named: a key alone or after a `\\w*[_-]` prefix, before a `[_-]\\w*`
    suffix or none (`DB_PASS`, `x-api-key`, `SMTP_PASSWORD_FILE`; not `passport`, `bypass`, `my-db-pass`). One
    pass: each place after a separator is tried once (a key that matches reads a few characters)."""
    first_dash, last_dash = name.find("-"), name.rfind("-")
    starts = [0] + [m.end() for m in _NAME_SEPARATOR.finditer(name)]
    for p in starts:
        if first_dash != -1 and first_dash < p - 1:  # the prefix's `\w*` would hold a "-"
            break
        key = _QUOTED_KEY_AT.match(name, p)
        if key is not None:
            q = key.end()  # the suffix is nothing, or a separator and `\w*` (no "-" after it)
            if q == len(name) or (name[q] in "_-" and last_dash <= q):
                return True
    return False


def _token_name(name: str) -> bool:
    """A name of a token only (`api_token`, `csrfToken`), none of a password, secret or key."""
    low = name.lower()
    return "token" in low and not any(word in low for word in ("pass", "pwd", "secret", "key"))


_SECRET_KEY = gated(re.compile(
    r"\b(?:api[_ -]?key|secret(?:[_ -]?key)?|access[_ -]?token|auth[_ -]?token|bearer|token|clé api|clé secrète|"
    r"api-schlüssel|clave api|clave secreta)\s*(?:is|est|ist|es|[:=])\s*[\"'`]?(?P<v>[A-Za-z0-9_\-./+=]{20,})",
    _I,
))
# `AWS_SECRET_ACCESS_KEY=…`, `export GITLAB_TOKEN="…"`, YAML `client_secret: …`, JSON `"smtp_pass": "…"`, a
# keyword argument `api_key="…"`: a name whose last parts name a secret, whatever comes before them (`DJANGO_`,
# `MY_SERVICE_`: glued by `_`, `-` or `.`), then `=`, `:` or `=>` and the value. A name that goes on names
# something else (`TOKEN_URL`, `max_tokens`, `password_length`, `token_count`).
_ENV_NAME = (
    r"secret(?:[_.-]?access)?(?:[_.-]?key)?|token|api[_.-]?key|"
    r"(?:private|access|encryption|signing|master|hmac|auth|app|account|subscription|license)[_.-]?key|"
    r"pass(?:word|wd|phrase|code)?|pwd|credentials?"
)
_NOT_A_KEY = re.compile(r"^(?:\d+|0x[0-9a-f]+|v?\d+(?:\.\d+)+(?:[-+.][\w.]+)?|\d{4}-\d\d-\d\d(?:[t ][\d:.]+z?)?)$", _I)
_ENV_PAIR = gated(re.compile(
    r"(?<![^\W_])(?P<name>" + _ENV_NAME + r")[\"']?[ \t]*(?P<sep>=>?|:(?![:=]))[ \t]*"
    r"(?P<q>[\"'`])?(?P<v>[^\s\"'`]{1,200})(?(q)(?P=q))",
    _I,
))
# Values that stand for a secret without being one: examples and templates (`your-api-key-here`, `changeme`,
# `sk-...`, `xxxx`, `<token>`, `{{ token }}`, `%(pw)s`).
_ENV_PLACEHOLDER = re.compile(
    r"example|sample|placeholder|your[_-]|[_-]here$|change[_-]?(?:me|it|this)|replace[_-]?me|redacted|dummy|"
    r"\.\.\.|…|x{4,}|\*{3}|<|>|\$\{|\{\{|%\(",
    _I,
)
# Words, identifiers and dotted names (`api_key`, `myToken`, `ctx.token`, `same-origin`, `text/plain`,
# `TOKEN_V2`, `rsa.RSAPrivateKey`, `ed25519.Ed25519PrivateKey`): code or prose, not a secret. (A random key of
# letters alone is one in twenty or fewer: its digits tell it from a name.)
_CODE_NAME = re.compile(r"^[A-Za-z_]+(?:[_.:/-](?:[A-Za-z_]+|[A-Za-z]?\d{1,4}))*$|^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")
_SECRET_CHARS = re.compile(r"\d|[^\w\s.:/-]")  # a digit, or a symbol other than the separators of names
_NUMBERISH = re.compile(r"^[\d.,:/+-]+$")  # 3.14, 2024-01-01, 12:30, +33612345678
_URL_OR_PATH = re.compile(
    r"^(?:[a-z][a-z0-9+.-]*://|arn:|~/|\.{1,2}/|/(?:etc|home|usr|var|run|opt|tmp|mnt|srv|root|users|secrets?|data|app|"
    r"config|dev|proc)\b)",
    _I,
)


# A regular expression literal under a token's name (`token: /^[a-z]+$/`, `API_TOKEN=/[0-9a-f]+/i` in a YAML or
# JS validation rule): the shape a token must have, not one. Only a token's: under a password, secret or key name
# (`password: /^(?=.*\d).{8,}$/`) such a literal stays a secret, since a password may be any string, slashes
# and dollars included (`/Tr0ub4dor&3/i`), and a pattern taken for one costs a placeholder, a password taken
# for a pattern a leak. Read from the value's first "/" within `_REGEX_MAX` characters: a space only inside a
# class (`[a-z ]`), a class of at most 64 characters, so one value never reads on to a later "/" of its line.
_REGEX_LITERAL = re.compile(r"/(?![/*])(?:[^\s/\\\[]|\\\S|\[(?:[^\]\\\n]|\\.){1,64}\])+/[dgimsuvy]*")
# What no token holds: a class or a class escape under a quantifier (`[a-z]+`, `\d{6}`, `[0-9a-f]?`).
_QUANTIFIED_CLASS = re.compile(r"(?:\[(?:[^\]\\\n]|\\.){1,64}\]|\\[dDwWsS])(?:[+*?]|\{\d+(?:,\d*)?\})")
_REGEX_MAX = 256


def _regex_literal(text: str, start: int, end: int) -> bool:
    """Whether the value `text[start:end]` is a regular expression literal, `/…/` and its flags, holding a
    quantified class (a token wrapped in slashes, `/Zx81(kq)!/`, `/^hunter2$/`, has none and stays a secret).
    The literal must end where the value does, or run on past it only through a class holding a space
    (`/^[a-z ]+$/`, whose value ends at that space): `/K7MDENG/g+PxRf…` is one base64 value, not `/K7MDENG/g`."""
    if not text.startswith("/", start):
        return False
    m = _REGEX_LITERAL.match(text, start, min(len(text), start + _REGEX_MAX))
    if m is None or m.end() < end or (m.end() > end and not text[end].isspace()):
        return False
    if m.end() < len(text) and (text[m.end()].isalnum() or text[m.end()] in "_/"):
        return False
    return _QUANTIFIED_CLASS.search(text, start, m.end()) is not None


def _looks_like_secret(v: str) -> bool:
    """A value under a secret-named key that could be one: not a placeholder, a reference to one (`${VAR}`,
    `os.environ[...]`, a path, a URL), a word, an identifier or a number of fewer than six digits."""
    if (len(v) < 6 or v[0] in "<{[()]}$%*!&#@:\\" or _documented(v) or _PLACEHOLDER.match(v)
            or _ENV_PLACEHOLDER.search(v) or _CODE_EXPR.match(v) or _URL_OR_PATH.match(v)):
        return False
    if v.isdecimal():
        return True  # six digits or more: a PIN or a numeric password
    if _NUMBERISH.match(v):
        return False
    return not _CODE_NAME.match(v) and _SECRET_CHARS.search(v) is not None


# `password = os.environ["PW"]`, `password: Optional[str]`, `pwd = self.pwd`: code reading a password, not one.
_CODE_EXPR = re.compile(
    r"^(?:[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*[(\[]|(?:self|this|os|args|config|settings|request|env|process|cfg|opts?)\."
    r"|(?:str|string|bytes|none|null|true|false|undefined|optional|varchar|text|secretstr)\b)",
    _I,
)


# A plain word after "password is" is usually prose ("Your password is inactive."); a value with a digit,
# a symbol or inner capitals, a quoted one, one standing alone at the end of a line, or one after "my
# password" is taken as a password.
_STRONG = re.compile(r"\d|[^\w\s]|(?<=[a-z])[A-Z]")
_ALONE = re.compile(r"[.!]?\s*(?:$|\n)|[,;]")


def _documented(v: str) -> bool:
    """Values printed in vendors' docs as the example (AWS's `wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY`)."""
    return "EXAMPLE" in v.upper()


def _looks_like_password(v: str) -> bool:
    """Not a stop word, a placeholder or a code expression: something that could be typed as a password."""
    if v.endswith(":") or _documented(v):  # "Password: Username:" is a form label, the value is missing
        return False
    v = v.rstrip(".,;!?)")
    return not (len(v) < 4 or v[0] in "<{[$%*(" or v.lower() in _PW_STOP or _PLACEHOLDER.match(v)
                or _CODE_EXPR.match(v))


def _jwt_ok(token: str) -> bool:
    """A JWT whose header decodes to JSON with an `alg`: cheap proof it is a real token, not prose."""
    head = token.split(".")[0]
    try:
        return "alg" in json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, UnicodeDecodeError):
        return False


def find_secrets(text: str) -> Iterator[Hit]:
    """Vendor keys, JWTs, PEM keys, credentials in URLs, and passwords/tokens given in context."""
    global _VENDOR
    if _VENDOR is None:
        _VENDOR = _vendor_patterns()
    for rx, why in _VENDOR:
        for m in scan.finditer(rx, text):
            if len(m.group()) >= 16 and not _documented(m.group()):  # AWS docs' AKIAIOSFODNN7EXAMPLE
                yield Hit("secret", m.start(), m.end(), "SECRET", f"{why} (vendor key format)")
    for m in scan.finditer(_JWT, text):
        if _jwt_ok(m.group()):
            yield Hit("secret", m.start(), m.end(), "SECRET", "JSON Web Token (header decodes)")
    for m in scan.finditer(_PEM, text):
        yield Hit("secret", m.start(), m.end(), "SECRET", "PEM private key block")
    for m in scan.finditer(_CONN, text):
        if not _PLACEHOLDER.match(m.group(2)) and not _documented(m.group(2)):
            yield Hit("secret", m.start(2), m.end(2), "PASSWORD", "credentials embedded in a connection string")
    for m in scan.finditer(_PW, text):
        v = m.group("v") if m.group("q") else m.group("v").rstrip(".,;!?)")  # quoted: the quotes delimit it
        if not m.group("q") and sum(v.count(c) for c in "\"'`") == 1 and v[-1] in "\"'`":
            v = v[:-1]  # a closing quote after the value, not part of it
        end = m.start("v") + len(v)
        line = text.rfind("\n", 0, m.start()) + 1  # the line up to the key, read in place (not copied)
        if _looks_like_password(v) and not scan.search(FICTION, text, line, m.start()) and (
                m.group("own") or m.group("q") or _STRONG.search(v)
                or ((m.group("det") or not m.group("verb")) and _ALONE.match(text, end))):
            yield Hit("secret", m.start("v"), end, "PASSWORD", "password given in context")
    for m in scan.finditer(_CLI_CRED, text):
        v = m.group("v")
        if _looks_like_password(v) and not _documented(v):
            yield Hit("secret", m.start("v"), m.end("v"), "PASSWORD", "password given on a command line")
    fiction: bool | None = None  # fiction anywhere in the text: read once, not once per login
    for m in scan.finditer(_CRED_PAIR, text):
        v = m.group("v").rstrip(".,;!?)")
        if _looks_like_password(v) and _STRONG.search(v):
            if fiction is None:
                fiction = scan.search(FICTION, text) is not None
            if fiction:
                continue
            yield Hit("secret", m.start("v"), m.start("v") + len(v), "PASSWORD", "login and password given together")
    for m in scan.finditer(_QUOTED_PAIR, text):
        v = m.group("v")
        if not _secret_name(m.group("name")):
            continue
        if _looks_like_password(v) and _STRONG.search(v) and not (
                _token_name(m.group("name")) and _regex_literal(text, m.start("v"), m.end("v"))):
            yield Hit("secret", m.start("v"), m.end("v"), "PASSWORD", "secret value under a secret-named key")
    for m in scan.finditer(_SECRET_KEY, text):
        v = m.group("v")
        if re.search(r"\d", v) and re.search(r"[A-Za-z]", v) and not _PLACEHOLDER.match(v) and not _documented(v):
            yield Hit("secret", m.start("v"), m.end("v"), "SECRET", "API key or token given in context")
    for m in scan.finditer(_ENV_PAIR, text):
        v = m.group("v") if m.group("q") else m.group("v").rstrip(".,;:!?)]}")
        name = m.group("name").lower()
        if not m.group("q") and "&" in v and "=" in m.group("sep"):  # a query string: `page_token=20240501&limit=50`
            v = v.split("&", 1)[0]
        # a token or key named so is no password: digits alone are an id, a cursor or a time (`eos_token: 100257`,
        # `next_token=1714560000`), and so are a hex number, a version or a date (`0x7fffffff`, `v1.2.3-rc1`)
        if not name.startswith(("pass", "pwd")) and _NOT_A_KEY.match(v):
            continue
        # a segment of a path or a type (`arn:…:secret:…`, `AWS::IAM::AccessKey`), not a name given a value
        if m.start() and text[m.start() - 1] in ":/" and not text.endswith("env:", 0, m.start()):
            continue
        # a bare "pass:" is prose ("boarding pass: …", "pass: the exam"); `SMTP_PASS=` and `pass=` are keys
        if name == "pass" and m.group("sep") == ":" and (not m.start() or text[m.start() - 1] not in "_-."):
            continue
        line = text.rfind("\n", 0, m.start()) + 1
        if (_looks_like_secret(v) and not _ENV_PLACEHOLDER.search(m.group("v"))  # `sk-...` before the cut
                and not (name == "token" and _regex_literal(text, m.start("v"), m.start("v") + len(v)))
                and not scan.search(FICTION, text, line, m.start())):
            label = "PASSWORD" if name.startswith("pass") or name == "pwd" else "SECRET"
            yield Hit("secret", m.start("v"), m.start("v") + len(v), label, "secret assigned to a secret-named name")
