"""Detection and redaction of personal data and secrets in free text and JSON-like values.

`find(text)` returns every `Finding` (kind, span, detector); `redact_text(text, policy)`
replaces each by a label such as ``[EMAIL]``; `redact_value(value, policy)` walks dicts, lists
and tuples (keys included). The detectors, by kind and label:

- ``email`` ``[EMAIL]``: local@domain.tld; a file name such as ``logo@2x.png`` is not one.
- ``phone`` ``[PHONE]``: E.164 (``+44 20 7946 0958``, ``+14155552671``), North American
  (``(415) 555-2671``, ``415-555-2671``) and trunk-prefixed national numbers with separators
  (``020 7946 0958``, ``06 12 34 56 78``). A bare run of digits is not a phone number.
- ``card`` ``[CARD]``: 13 to 19 digits, spaces or dashes allowed, Luhn-valid, first digit 2-6
  (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay; a 13-digit millisecond timestamp
  starts with 1 and is not a card), not one repeated digit.
- ``iban`` ``[IBAN]``: country code with its exact IBAN length, mod-97 valid.
- ``national_id`` ``[NATIONAL_ID]``: US SSN (``123-45-6789`` with dashes or spaces; area 000,
  666 and 900-999, group 00 and serial 0000 are never issued and are skipped), UK National
  Insurance number (prefix and suffix rules), Spanish DNI and NIE (check letter), Italian
  codice fiscale (check character), French NIR (social security number, mod-97 key).
- ``ip`` ``[IP]``: IPv4 and IPv6 (validated by `ipaddress`); loopback and unspecified
  addresses are not personal data and are kept. An IPv6 candidate needs a group of 3 or more
  hex digits or 4 or more groups, so ``a::2`` (a Python slice) is not an address.
- ``secret`` ``[SECRET]``: AWS access key ids, PEM private key blocks (also inside JSON with
  ``\\n``, also truncated), GitHub, Slack, Stripe and Google tokens, JWTs (the header must
  decode to a JSON object), shipyard API keys (``sy_<id>_<secret>``), bearer tokens,
  passwords in URLs (``scheme://user:PASSWORD@host``) and ``password=...`` /
  ``api_key: ...`` assignments (only the value is replaced; a ``${secret:NAME}`` reference,
  a placeholder such as ``<token>`` or ``***``, code such as ``os.environ["X"]`` or a type
  annotation such as ``password: str`` is not a secret).

Speed: every pattern is compiled once, has bounded repetition and a boundary look-behind, so
each text position is tried a bounded number of times (linear time, no catastrophic
backtracking); detectors whose required literal is absent are not run at all.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["email", "phone", "card", "iban", "national_id", "ip", "secret"]
KINDS: tuple[Kind, ...] = ("secret", "card", "iban", "national_id", "email", "phone", "ip")
LABELS: dict[str, str] = {kind: f"[{kind.upper()}]" for kind in KINDS}
MAX_DEPTH = 64  # deeper values are replaced whole: a redactor must not overflow the stack

# A validator returns the span to report (possibly narrower than the match), several spans
# (a run holding more than one item), or None to reject the match.
Span = tuple[int, int]
Validator = Callable[["re.Match[str]"], "Span | list[Span] | None"]


@dataclass(frozen=True)
class Finding:
    """One detected item: its kind, its [start, end) span in the text and the detector."""

    kind: Kind
    span: tuple[int, int]
    detector: str

    @property
    def start(self) -> int:
        return self.span[0]

    @property
    def end(self) -> int:
        return self.span[1]


@dataclass(frozen=True)
class RedactionPolicy:
    """Which kinds are redacted, and the text each is replaced by."""

    kinds: frozenset[str] = frozenset(KINDS)
    labels: Mapping[str, str] = field(default_factory=lambda: dict(LABELS))

    def label(self, kind: str) -> str:
        return self.labels.get(kind, LABELS.get(kind, "[REDACTED]"))


DEFAULT_POLICY = RedactionPolicy()
SECRETS_ONLY = RedactionPolicy(kinds=frozenset({"secret"}))


@dataclass(frozen=True)
class Detector:
    name: str
    kind: Kind
    pattern: re.Pattern[str]
    # The detector runs only when one of these appears in the text (a cheap C-speed scan).
    needs: tuple[str, ...] = ()
    validate: Validator | None = None
    # Read once per detector and text: RegexFlag's `&` goes through the enum machinery.
    ignores_case: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ignores_case", bool(self.pattern.flags & re.IGNORECASE))


# --- checksums -------------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def mod97(text: str) -> int:
    """`text` (digits and letters, A=10 ... Z=35) as a number, modulo 97, without bignums."""
    remainder = 0
    for char in text:
        value = int(char, 36)
        remainder = (remainder * (100 if value > 9 else 10) + value) % 97
    return remainder


IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


_CARD_GROUPS = ([4, 6, 5], [4, 6, 4])  # Amex and Diners print 4-6-5 and 4-6-4


def _card_layout(groups: list[int]) -> bool:
    """No separators, or groups of four (the last may be shorter), or 4-6-5 / 4-6-4: so
    `666-12-3456 000-12` (numbers side by side) is not read as one card."""
    if len(groups) == 1 or groups in _CARD_GROUPS:
        return True
    return all(size == 4 for size in groups[:-1]) and 1 <= groups[-1] <= 4


def _card(match: re.Match[str]) -> list[tuple[int, int]]:
    """Every card in a run of digit groups, left to right: the run may hold numbers on either
    side of a card ("0 4111 1111 1111 1111 5") or two cards side by side."""
    groups = re.split(r"[ -]", match.group())
    sizes = [len(group) for group in groups]
    offsets = [0]  # where each group starts in the match
    for size in sizes:
        offsets.append(offsets[-1] + size + 1)
    spans: list[tuple[int, int]] = []
    first = 0
    while first < len(groups):
        count = _card_at(groups, sizes, first)
        if count:
            start = match.start() + offsets[first]
            spans.append((start, start + offsets[first + count] - offsets[first] - 1))
            first += count
        else:
            first += 1
    return spans


def _card_at(groups: list[str], sizes: list[int], first: int) -> int:
    """How many groups from `first` make a card (the most that do), or 0."""
    if groups[first][0] not in "23456" or (sizes[first] != 4 and sizes[first] < 13):
        return 0  # no network starts so; after a separator a card goes on in fours
    longest, total = 0, 0
    while first + longest < len(groups) and total + sizes[first + longest] <= 19:
        total += sizes[first + longest]
        longest += 1
    for count in range(longest, 0, -1):
        chosen = sizes[first : first + count]
        if sum(chosen) < 13:
            return 0
        digits = "".join(groups[first : first + count])
        if _card_layout(chosen) and len(set(digits)) > 1 and luhn_ok(digits):
            return count
    return 0


def _iban(match: re.Match[str]) -> tuple[int, int] | None:
    text = match.group()
    length = IBAN_LENGTHS.get(text[:2])
    if length is None:
        return None
    # The candidate may run on into the next word: cut it at the country's exact length.
    seen = 0
    for offset, char in enumerate(text):
        if char != " ":
            seen += 1
        if seen == length:
            rest = text[offset + 1 :]
            if rest and not rest.startswith(" "):
                return None
            compact = text[: offset + 1].replace(" ", "")
            if mod97(compact[4:] + compact[:4]) != 1:
                return None
            return match.start(), match.start() + offset + 1
    return None


def _ssn(match: re.Match[str]) -> tuple[int, int] | None:
    area, group, serial = match.group(1), match.group(3), match.group(4)
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    return match.span()


_NINO_BAD_PREFIXES = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}


def _nino(match: re.Match[str]) -> tuple[int, int] | None:
    return None if match.group(1).upper() in _NINO_BAD_PREFIXES else match.span()


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def _dni(match: re.Match[str]) -> tuple[int, int] | None:
    number = match.group(1).upper().replace("X", "0").replace("Y", "1").replace("Z", "2")
    return match.span() if _DNI_LETTERS[int(number) % 23] == match.group(2).upper() else None


_CF_ODD = dict(
    zip(
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20,
         11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23],
        strict=True,
    )
)  # fmt: skip


def _codice_fiscale(match: re.Match[str]) -> tuple[int, int] | None:
    code = match.group().upper()
    total = 0
    for index, char in enumerate(code[:15]):
        # Positions 1, 3, 5, ... (index 0, 2, ...) use the "odd" table; the others count a
        # digit as itself and a letter as its place in the alphabet (A = 0).
        if index % 2 == 0:
            total += _CF_ODD[char]
        else:
            total += int(char) if char.isdigit() else ord(char) - 65
    return match.span() if chr(65 + total % 26) == code[15] else None


def _nir(match: re.Match[str]) -> tuple[int, int] | None:
    compact = match.group().replace(" ", "").upper()
    body, key = compact[:13], int(compact[13:])
    # Corsica's departments 2A and 2B count as 19 and 18 for the key.
    body = body.replace("2A", "19", 1) if body[5:7] == "2A" else body
    body = body.replace("2B", "18", 1) if body[5:7] == "2B" else body
    return match.span() if 97 - int(body) % 97 == key else None


def _ipv4(match: re.Match[str]) -> tuple[int, int] | None:
    try:
        address = ipaddress.IPv4Address(match.group())
    except ValueError:
        return None  # an octet over 255, or a leading zero
    return None if address.is_loopback or address.is_unspecified else match.span()


def _ipv6(match: re.Match[str]) -> tuple[int, int] | None:
    text = match.group()
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    groups = [g for g in re.split(r"[:.]", text) if g]
    if len(groups) < 4 and max((len(g) for g in groups), default=0) < 3:
        return None  # `a::2`, `x[1::2]`: slices and scopes, not addresses
    return None if address.is_loopback or address.is_unspecified else match.span()


_FILE_SUFFIXES = {"png", "jpg", "jpeg", "gif", "svg", "webp", "pdf", "py", "js", "css", "txt"}


def _email(match: re.Match[str]) -> tuple[int, int] | None:
    tld = match.group().rsplit(".", 1)[-1].lower()
    return None if tld in _FILE_SUFFIXES else match.span()


def _phone(match: re.Match[str]) -> tuple[int, int] | None:
    digits = sum(char.isdigit() for char in match.group())
    return match.span() if 8 <= digits <= 15 else None


def _varied(text: str, minimum: int = 6) -> bool:
    """Random tokens use many distinct characters; `xxxx…` and `0000…` are placeholders."""
    return len(set(text)) >= minimum


def _token(match: re.Match[str]) -> tuple[int, int] | None:
    body = match.group(match.lastindex or 0)
    return match.span() if _varied(body) else None


def _jwt(match: re.Match[str]) -> tuple[int, int] | None:
    header = match.group(1)
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return None
    return match.span() if isinstance(decoded, dict) else None


_NOT_SECRETS = {
    "none", "null", "nil", "true", "false", "str", "string", "bytes", "int", "any", "optional",
    "secret", "secretstr", "password", "token", "required", "redacted", "masked", "hidden",
    "undefined", "empty", "env", "environ", "changeme", "xxx", "****", "***", "...", "self",
}  # fmt: skip
_PLACEHOLDER = re.compile(r"^(?:\$\{[^}]*\}|\{\{.*\}\}|<[^>]*>|\*+|x+|\.+|%\(?\w*\)?s?)$", re.I)
_CODE_CHARS = set("()[]{}$%`")
_KEYWORD_IN = re.compile("pass|pwd|secret|key|token", re.I)
_DOC_FIELD = re.compile(r":(?:param|type|ivar|cvar|var|raises)[ \t]+[\w\[\], ]*$")


def _assignment(match: re.Match[str]) -> tuple[int, int] | None:
    quoted = match.group("q")
    if quoted is not None:
        value, (start, end) = quoted, match.span("q")
    else:
        value = match.group("v").rstrip(".)]}>")  # "(password=hunter2)." ends at the 2
        start = match.start("v")
        end = start + len(value)
    raw = quoted if quoted is not None else match.group("v")
    if not any(char.isalnum() for char in value):
        return None  # `passphrase::` (a reST block), `password: --`
    if any(_PLACEHOLDER.match(v) or v.lower() in _NOT_SECRETS for v in (raw, value)):
        return None
    if not re.search("pass|pwd", match.group("key"), re.I) and (
        len(value) < 8 or not any(char.isdigit() for char in value)
    ):
        return None  # `max_token: 512`, `_TOKEN = "dbapiunicode"`: keys are long and random
    if _DOC_FIELD.search(match.string, max(0, match.start() - 40), match.start()):
        return None  # a docstring: `:param password: the password`
    if quoted is None:
        if _CODE_CHARS & set(value) or re.fullmatch(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+", value):
            return None  # code: os.environ["X"], settings.token, f(x)
        if value.isidentifier() and ("_" in value or _KEYWORD_IN.search(value)):
            return None  # a variable: `key_password=key_password`, `token=auth_token`
        after = match.string[end : end + 3].lstrip(" ")
        if match.group("sep") == "=" and value.isidentifier() and " " in match.group():
            return None  # code: `username, password = value` (a log writes `password=x`)
        if match.group("sep") == ":" and value.isidentifier() and after[:1] in ("=", ",", ")"):
            return None  # a type annotation: `def f(password: Secret = ...)`
        prose = re.match(r" [A-Za-z]", match.string[end : end + 2])
        if match.group("sep") == ":" and value.isalpha() and prose:
            return None  # prose: `password: The password of the user.`
    return start, end


def _private_key(match: re.Match[str]) -> tuple[int, int] | None:
    # A header alone is a constant in code (`b"-----BEGIN OPENSSH PRIVATE KEY-----"`).
    body = match.group("body")
    return match.span() if len(re.findall(r"[A-Za-z0-9+/]", body)) >= 20 else None


def _group_span(group: str) -> Validator:
    def validate(match: re.Match[str]) -> tuple[int, int] | None:
        value = match.group(group)
        if not value or _PLACEHOLDER.match(value) or value.lower() in _NOT_SECRETS:
            return None
        return match.span(group)

    return validate


# --- the detectors ---------------------------------------------------------------------------

_B = r"(?<![A-Za-z0-9_])"  # the start of a token
_E = r"(?![A-Za-z0-9_])"  # its end
_KEYWORDS = (
    r"password|passwd|passphrase|pwd|secret|client[_-]?secret|api[_-]?key|apikey|"
    r"access[_-]?key|secret[_-]?key|private[_-]?key|auth[_-]?token|access[_-]?token|"
    r"refresh[_-]?token|token"
)
_ASSIGN_NEEDS = ("pass", "pwd", "secret", "key", "token")  # matched against the lowered text
_DIGITS = tuple("0123456789")


def _d(name: str, kind: Kind, pattern: str, needs: tuple[str, ...] = (),
       validate: Validator | None = None, flags: int = 0) -> Detector:  # fmt: skip
    return Detector(name, kind, re.compile(pattern, flags), needs, validate)


DETECTORS: tuple[Detector, ...] = (
    _d("private-key", "secret",
       r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
       r"(?P<body>(?:[A-Za-z0-9+/=\s:,.\\]|-(?!----)){0,20000})"
       r"(?:-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----)?",
       ("PRIVATE KEY",), _private_key),
    _d("aws-access-key", "secret",
       r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)"
       r"([A-Z0-9]{16})(?![A-Z0-9])", ("A",), _token),
    _d("github-token", "secret", _B + r"gh[pousr]_([A-Za-z0-9]{36,251})" + _E,
       ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), _token),
    _d("github-token", "secret", _B + r"github_pat_([A-Za-z0-9_]{22,251})" + _E,
       ("github_pat_",), _token),
    _d("slack-token", "secret", _B + r"xox[abposre]-([A-Za-z0-9-]{10,250})" + _E, ("xox",),
       _token),
    _d("slack-webhook", "secret",
       r"https://hooks\.slack\.com/services/(T[A-Z0-9]{4,20}/B[A-Z0-9]{4,20}/[A-Za-z0-9]{8,64})",
       ("hooks.slack.com",), _token),
    _d("stripe-key", "secret", _B + r"(?:sk|rk)_(?:live|test)_([A-Za-z0-9]{16,247})" + _E,
       ("k_live_", "k_test_"), _token),
    _d("stripe-key", "secret", _B + r"whsec_([A-Za-z0-9]{24,128})" + _E, ("whsec_",), _token),
    _d("google-api-key", "secret", r"(?<![A-Za-z0-9_-])AIza([0-9A-Za-z_-]{35})(?![A-Za-z0-9_-])",
       ("AIza",), _token),
    _d("google-oauth", "secret", _B + r"GOCSPX-([0-9A-Za-z_-]{28})(?![A-Za-z0-9_-])",
       ("GOCSPX-",), _token),
    _d("google-oauth", "secret", _B + r"ya29\.([0-9A-Za-z_-]{20,2048})(?![A-Za-z0-9_-])",
       ("ya29.",), _token),
    _d("jwt", "secret",
       r"(?<![A-Za-z0-9_-])(eyJ[A-Za-z0-9_-]{4,4096})\.eyJ[A-Za-z0-9_-]{2,16384}\."
       r"[A-Za-z0-9_-]{0,4096}(?![A-Za-z0-9_-])", ("eyJ",), _jwt),
    _d("shipyard-key", "secret", _B + r"sy_[0-9A-Za-z]{8,32}_([0-9A-Za-z]{32,64})" + _E,
       ("sy_",), lambda m: _token(m) if _varied(m.group(1), 12) else None),
    _d("bearer-token", "secret",
       r"(?<![A-Za-z0-9])[Bb]earer[ \t]{1,8}(?P<v>[A-Za-z0-9._~+/-]{16,4096}=*)",
       ("earer",), _group_span("v")),
    _d("url-password", "secret",
       r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{1,30}://[^\s:/@?#]{0,256}:"
       r"(?P<v>[^\s/@?#]{1,256})@", ("://",), _group_span("v")),
    _d("assignment", "secret",
       r"(?<![A-Za-z0-9])(?P<key>" + _KEYWORDS + r")[\"']?[ \t]{0,16}(?P<sep>=>|:|=(?!=))"
       r"[ \t]{0,16}"
       r"(?:[\"'](?P<q>[^\"'\r\n]{0,1024})[\"']|(?P<v>[^\s\"',;&]{1,1024}))",
       _ASSIGN_NEEDS, _assignment, re.I),
    _d("card", "card", r"\d(?<![\w-]\d)(?:[ -]?\d){12,299}(?![\w-])", _DIGITS, _card),
    _d("iban", "iban", r"[A-Z](?<![A-Za-z0-9].)[A-Z]\d{2}(?: ?[A-Z0-9]){11,31}(?![a-z0-9])",
       _DIGITS, _iban),
    _d("us-ssn", "national_id", r"(\d(?<![\w-]\d)\d\d)([- ])(\d{2})\2(\d{4})(?![\w-])",
       _DIGITS, _ssn),
    _d("uk-nino", "national_id",
       r"([A-CEGHJ-PR-TW-Za-ceghj-pr-tw-z](?<![A-Za-z0-9_].)[A-CEGHJ-NPR-TW-Za-ceghj-npr-tw-z])"
       r" ?\d{2} ?\d{2} ?\d{2} ?[A-Da-d]" + _E, _DIGITS, _nino),
    _d("es-dni", "national_id",
       r"(\d(?<![A-Za-z0-9_]\d)\d{7}|[XYZxyz](?<![A-Za-z0-9_].)-?\d{7})[- ]?([A-Za-z])" + _E,
       _DIGITS, _dni),
    _d("it-codice-fiscale", "national_id",
       r"[A-Za-z](?<![A-Za-z0-9_].)[A-Za-z]{5}\d{2}[A-EHLMPR-Ta-ehlmpr-t]\d{2}[A-Za-z]\d{3}[A-Za-z]"
       + _E, _DIGITS, _codice_fiscale),
    _d("fr-nir", "national_id",
       r"[12](?<![\w-].) ?\d{2} ?\d{2} ?(?:\d{2}|2[ABab]) ?\d{3} ?\d{3} ?\d{2}(?![\w-])",
       _DIGITS, _nir),
    _d("email", "email",
       r"(?<![\w.%+-])[\w.%+-]{1,64}@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.){1,8}[^\W\d_]{2,24}"
       r"(?![\w-])", ("@",), _email),
    _d("phone", "phone", r"(?<![\w+])\+[1-9](?:[ .()-]{0,2}\d){6,14}(?![\w-])", ("+",), _phone),
    _d("phone", "phone",
       r"(?<![\w+.-])(?:\+?1[ .-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}"
       r"(?![\w-])", _DIGITS, _phone),
    _d("phone", "phone", r"(?<![\w+.-])\(?0\d{1,4}\)?[ -]\d{2,4}(?:[ -]?\d{2,4}){1,3}(?![\w-])",
       _DIGITS, _phone),
    _d("ipv4", "ip", r"\d(?<![\w.]\d)\d{0,2}(?:\.\d{1,3}){3}(?![\w]|\.\d)", (".",), _ipv4),
    _d("ipv6", "ip",
       r"(?<![\w:.])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:]{2,39}"
       r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\d)", (":",), _ipv6),
)  # fmt: skip
_PRIORITY = {kind: rank for rank, kind in enumerate(KINDS)}
# What each detector found, in words, for messages that must name the kind but not the value.
DESCRIPTIONS: dict[str, str] = {
    "private-key": "a private key (PEM)",
    "aws-access-key": "an AWS access key id",
    "github-token": "a GitHub token",
    "slack-token": "a Slack token",
    "slack-webhook": "a Slack webhook URL",
    "stripe-key": "a Stripe secret key",
    "google-api-key": "a Google API key",
    "google-oauth": "a Google OAuth secret or token",
    "jwt": "a JSON Web Token",
    "shipyard-key": "a shipyard API key",
    "bearer-token": "a bearer token",
    "url-password": "a password in a URL",
    "assignment": "a password or key assigned in plain text",
    "card": "a payment card number",
    "iban": "an IBAN",
    "us-ssn": "a US social security number",
    "uk-nino": "a UK National Insurance number",
    "es-dni": "a Spanish DNI or NIE",
    "it-codice-fiscale": "an Italian codice fiscale",
    "fr-nir": "a French social security number",
    "email": "an e-mail address",
    "phone": "a phone number",
    "ipv4": "an IPv4 address",
    "ipv6": "an IPv6 address",
}


_NO_DIGITS = str.maketrans("", "", "0123456789")
_AWS_PREFIX = re.compile(r"A(?:KIA|SIA|BIA|CCA|GPA|IDA|IPA|NPA|NVA|ROA|PKA|SCA)")
# Where a finding with fewer than four digits could begin: an email's @, an IPv6 address's
# colons, or the literal a secret detector needs. No match: no detector can find anything.
_TRIGGER = re.compile(
    r"@|:[0-9A-Fa-f]*:|PRIVATE KEY|A(?:KIA|SIA|BIA|CCA|GPA|IDA|IPA|NPA|NVA|ROA|PKA|SCA)"
    r"|gh[pousr]_|github_pat_|xox|hooks\.slack\.com|k_live_|k_test_|whsec_|AIza|GOCSPX-|ya29\."
    r"|eyJ|sy_|earer|://|(?i:pass|pwd|secret|key|token)"
)
# The fewest digits each detector's matches can hold (kept below the true minimum).
MIN_DIGITS = {
    "card": 12, "iban": 6, "us-ssn": 9, "uk-nino": 6, "es-dni": 7, "it-codice-fiscale": 6,
    "fr-nir": 12, "phone": 7, "ipv4": 4,
}


def find(text: str, kinds: Iterable[str] | None = None) -> list[Finding]:
    """Every finding in `text`, sorted by position, none overlapping another.

    Where two detectors claim overlapping text, the higher kind wins (secret, card, iban,
    national_id, email, phone, ip), then the longer match.
    """
    # Most values (paths, ids, names) hold few digits: counting them once, in C, skips every
    # digit-based detector at once (the access log asks this of every request).
    digits = len(text) - len(text.translate(_NO_DIGITS))
    if digits < MIN_DIGITS["ipv4"] and not _TRIGGER.search(text):
        return []  # nothing any detector could start from: the common case
    wanted = set(KINDS if kinds is None else kinds)
    lowered: str | None = None
    candidates: list[Finding] = []
    for detector in DETECTORS:
        if detector.kind not in wanted:
            continue
        if digits < MIN_DIGITS.get(detector.name, 0):
            continue
        if detector.name == "aws-access-key" and not _AWS_PREFIX.search(text):
            continue
        if detector.needs:
            haystack = text
            if detector.ignores_case:
                lowered = text.lower() if lowered is None else lowered
                haystack = lowered
            if not any(literal in haystack for literal in detector.needs):
                continue
        for match in detector.pattern.finditer(text):
            result = detector.validate(match) if detector.validate else match.span()
            for span in result if isinstance(result, list) else [result]:
                if span is not None and span[1] > span[0]:
                    candidates.append(Finding(detector.kind, span, detector.name))
    if len(candidates) < 2:
        return candidates
    candidates.sort(key=lambda f: (_PRIORITY[f.kind], f.start - f.end, f.start))
    # One byte per character marks what is taken: linear, however many findings there are.
    taken = bytearray(len(text))
    kept: list[Finding] = []
    for candidate in candidates:
        if taken.find(1, candidate.start, candidate.end) == -1:
            taken[candidate.start : candidate.end] = b"\x01" * (candidate.end - candidate.start)
            kept.append(candidate)
    return sorted(kept, key=lambda f: f.start)


def redact_text(text: str, policy: RedactionPolicy = DEFAULT_POLICY) -> str:
    """`text` with every finding of a kind in `policy.kinds` replaced by its label."""
    findings = find(text, policy.kinds)
    if not findings:
        return text
    parts: list[str] = []
    position = 0
    for item in findings:
        parts += [text[position : item.start], policy.label(item.kind)]
        position = item.end
    parts.append(text[position:])
    return "".join(parts)


def redact_value(value: Any, policy: RedactionPolicy = DEFAULT_POLICY, _depth: int = 0) -> Any:
    """A copy of a JSON-like value with every string (dict keys too) redacted.

    Integers are checked as text too (a card number sent as a JSON number); floats, booleans
    and None pass through; other objects are redacted through their `str`. Nesting deeper
    than `MAX_DEPTH` (or a cycle) is replaced whole by ``[REDACTED]``.
    """
    if _depth > MAX_DEPTH:
        return "[REDACTED]"
    if isinstance(value, str):
        return redact_text(value, policy)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        text = str(value)
        redacted = redact_text(text, policy)
        return value if redacted == text else redacted
    if isinstance(value, Mapping):
        result: dict[Any, Any] = {}
        for key, item in value.items():
            new_key = redact_value(key, policy, _depth + 1) if isinstance(key, str) else key
            while new_key in result:  # two keys redacting alike must not overwrite each other
                new_key = f"{new_key}~"
            result[new_key] = redact_value(item, policy, _depth + 1)
        return result
    if isinstance(value, list | tuple | set | frozenset):
        items = [redact_value(item, policy, _depth + 1) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    return redact_text(str(value), policy)
