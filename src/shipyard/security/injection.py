"""Prompt-injection heuristics for model inputs and retrieved documents, offline.

`scan(text, where="input")` returns an `InjectionScan`: a score in [0, 1] and the names of the
signals that matched (never the matched text). Each signal has a weight; the score is
``1 - prod(1 - weight)``, so two independent signals add up without passing 1. The signals:

- ``instruction_override``: "ignore / disregard / forget the previous instructions", "new
  instructions:", "from now on you must ...".
- ``role_play_jailbreak``: DAN and "do anything now", "developer mode", "pretend you have no
  rules", "act as an unfiltered model".
- ``system_prompt_extraction``: "reveal / print / repeat your system prompt", "what were your
  initial instructions", "repeat the text above".
- ``fake_delimiter``: chat-template tokens and role headers (``<|im_start|>``, ``[INST]``,
  ``<<SYS>>``, ``### System:``, a line starting ``system:``) that try to open a new turn.
- ``addressed_to_assistant`` (retrieved documents only): text that speaks to the model
  reading it ("AI assistant, ...", "when you summarise this ...", "do not tell the user").
- ``markdown_image`` (retrieved documents only): an image link, the carrier of EchoLeak-style
  exfiltration.
- ``encoded_payload``: a base64 blob of 40+ characters that decodes to text; the decoded text
  is scanned too and its signals are added with a ``base64:`` prefix.
- ``invisible_characters``: zero-width characters inside words, and Unicode tag characters
  (U+E0000..E007F, "ASCII smuggling": the hidden text they spell is scanned too).
- ``bidi_control``: bidirectional overrides and isolates that reorder what a reader sees.
- ``homoglyphs``: words mixing Latin with Cyrillic or Greek look-alike letters.

Before matching, text is normalised: NFKC (full-width and mathematical letters become ASCII),
invisible characters removed, look-alike letters folded to Latin, case folded, whitespace
collapsed. A model-based detector (any callable from text to a probability) can be passed
as `detector`; its score is combined with the heuristics' (the higher wins), and a detector
that fails is ignored (signal ``detector_failed``, weight 0) rather than failing the request.

Heuristics catch the common and the copy-pasted attacks, not a determined adversary: treat a
low score as "nothing obvious", never as "safe".
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger("shipyard.security.injection")

Where = Literal["input", "retrieved"]
Detector = Callable[[str], float]  # text -> probability that it is an injection

DEFAULT_THRESHOLD = 0.5
_MAX_DECODED = 64  # base64 blobs decoded per text: an attacker cannot make us decode 1 MB x N

_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"
_BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_TAGS = re.compile("[\U000e0000-\U000e007f]+")
_INVISIBLE = re.compile(f"[{_ZERO_WIDTH}{_BIDI}\u200e\u200f]")
_ZERO_WIDTH_IN_WORD = re.compile(f"\\w[{_ZERO_WIDTH}]+\\w")
_BIDI_RE = re.compile(f"[{_BIDI}]")
_GREEK_OR_CYRILLIC = re.compile(r"[\u0370-\u03ff\u0400-\u04ff]")  # a cheap pre-check
_MIXED_SCRIPT = re.compile(
    r"\b(?=[^\W\d_]*[a-zA-Z])(?=[^\W\d_]*[\u0370-\u03ff\u0400-\u04ff])[^\W\d_]+\b"
)
# Cyrillic (first 26) and Greek (last 23) letters that look like Latin ones, each mapped to
# the Latin letter below it; applied after NFKC, before case folding.
_CONFUSABLES = str.maketrans(
    "\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0425\u0430\u0435"
    "\u043e\u0440\u0441\u0443\u0445\u0456\u0458\u0455\u0501\u051b\u051d\u04bb\u04cf"
    "\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4"
    "\u03a5\u03a7\u03b1\u03b9\u03ba\u03bd\u03bf\u03c1\u03c4\u03c5\u03c7",
    "ABEKMHOPCTXaeopcyxijsdqwhlABEZHIKMNOPTYXaikvoptux",
)
_SPACES = re.compile(r"\s+")
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{40,}={0,2}(?![A-Za-z0-9+/=])")

_W = r"(?:\w+ ){0,3}"  # up to three filler words ("all of the", "any")
_PATTERNS: dict[str, tuple[float, re.Pattern[str]]] = {
    "instruction_override": (
        0.8,
        re.compile(
            rf"\b(?:ignore|disregard|forget|override|skip|bypass|drop) {_W}"
            r"(?:previous|prior|above|earlier|preceding|former|original|initial|system|"
            r"existing|your|developer)\b ?(?:\w+ )?"
            r"(?:instructions?|prompts?|rules|directions|guidelines|directives|context|"
            r"messages?|constraints)"
            r"|\bnew (?:system )?instructions ?:"
            r"|\bfrom now on,? you (?:will|must|are|shall|should)\b"
            r"|\binstead,? (?:do|follow|obey) (?:the following|these|my)\b"
        ),
    ),
    "role_play_jailbreak": (
        0.7,
        re.compile(
            r"\bdo anything now\b|\bdan mode\b|\byou are (?:now )?dan\b|\bjailbr(?:oken|eak)"
            r"|\bdeveloper mode\b|\bgod mode\b"
            r"|\bpretend (?:that )?you (?:are|have) (?:no|not|an? (?:unrestricted|unfiltered|"
            r"uncensored|evil))"
            r"|\b(?:act|behave|respond) as (?:an? )?(?:unrestricted|unfiltered|uncensored|"
            r"evil|unaligned)"
            r"|\byou (?:have|are under) no (?:rules|restrictions|limitations|filters|"
            r"guidelines)\b"
            r"|\bwithout (?:any )?(?:ethical|moral|safety) (?:guidelines|restrictions|limits)"
        ),
    ),
    "system_prompt_extraction": (
        0.7,
        re.compile(
            r"\b(?:reveal|print|show|repeat|output|display|tell me|give me|write out|leak|"
            r"dump|recite) (?:me )?(?:all )?(?:of )?(?:your|the) (?:full |entire |exact )?"
            r"(?:system|initial|hidden|original|secret|developer|first) "
            r"(?:prompt|instructions|message|rules)"
            r"|\bwhat (?:are|were|is) your (?:initial|original|system|hidden|exact) "
            r"(?:prompt|instructions|rules)"
            r"|\brepeat (?:the |all )?(?:words|text|everything) (?:above|before)"
            r"|\bverbatim (?:copy|text) of (?:your|the) (?:system )?(?:prompt|instructions)"
        ),
    ),
    "fake_delimiter": (
        0.6,
        re.compile(
            r"<\|(?:im_start|im_end|system|user|assistant|endoftext|begin_of_text|"
            r"start_header_id|eot_id)\|>"
            r"|\[/?inst\]|<</?sys>>|<\|?/?(?:system|assistant)\|?>"
            r"|(?:^|\n) ?#{1,4} ?(?:system|assistant|instructions?) ?:?(?: |\n|$)"
            r"|(?:^|\n) ?(?:system|assistant) ?:"
            r"|\b(?:begin|end) (?:of )?system (?:prompt|message)\b"
        ),
    ),
}
_RETRIEVED_PATTERNS: dict[str, tuple[float, re.Pattern[str]]] = {
    "addressed_to_assistant": (
        0.5,
        re.compile(
            r"\b(?:ai|assistant|language model|llm|chatbot|copilot|gpt|claude)s?,? "
            r"(?:please |you must |must |should |will )?(?:ignore|forget|include|append|"
            r"add|send|reply|respond|output|do not|don't|never|always)\b"
            r"|\bwhen (?:you|the (?:assistant|ai|model)) (?:summari[sz]e|read|process|"
            r"answer|see)s? (?:this|these)\b"
            r"|\b(?:do not|don't|never) (?:mention|reveal|tell|inform|show) (?:this|these|"
            r"the user|them|anyone)\b"
        ),
    ),
    "markdown_image": (0.4, re.compile(r"!\[[^\[\]\n]{0,500}\] ?[(\[]")),
}
_WEIGHTS = {
    "encoded_payload": 0.2,
    "invisible_characters": 0.3,
    "tag_characters": 0.8,
    "bidi_control": 0.4,
    "homoglyphs": 0.4,
    "detector_failed": 0.0,
}


@dataclass(frozen=True)
class InjectionScan:
    """A scan's outcome: the combined score and the signal names that matched."""

    score: float
    signals: tuple[str, ...]
    threshold: float = DEFAULT_THRESHOLD

    @property
    def suspicious(self) -> bool:
        return self.score >= self.threshold


def normalise(text: str, *, keep_lines: bool = False) -> str:
    """The text the patterns see: NFKC, invisibles dropped, look-alikes folded, lower case,
    whitespace collapsed to one space (or, with `keep_lines`, to one newline where a run
    held one: role headers are recognised at the start of a line)."""
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", _TAGS.sub("", text))
    text = text.translate(_CONFUSABLES).casefold()
    if keep_lines:
        return _SPACES.sub(lambda m: "\n" if "\n" in m.group() else " ", text)
    return _SPACES.sub(" ", text)


def _untag(text: str) -> str:
    # Tag characters mirror ASCII at U+E0000: the text a human never sees but a model reads.
    return "".join(chr(ord(ch) - 0xE0000) for run in _TAGS.findall(text) for ch in run)


def _decoded_blobs(text: str) -> list[str]:
    out: list[str] = []
    for match in _BASE64.finditer(text):
        if len(out) >= _MAX_DECODED:
            break
        blob = match.group()
        try:
            raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
            decoded = raw.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        printable = sum(ch.isprintable() or ch.isspace() for ch in decoded)
        if decoded and printable / len(decoded) > 0.9:
            out.append(decoded)
    return out


def _signals(text: str, where: Where, depth: int) -> list[str]:
    found: list[str] = []
    if _TAGS.search(text):
        found.append("tag_characters")
        hidden = _untag(text)
        if depth == 0 and hidden:
            found += [f"tags:{name}" for name in _signals(hidden, where, depth + 1)]
    if _ZERO_WIDTH_IN_WORD.search(text):
        found.append("invisible_characters")
    if _BIDI_RE.search(text):
        found.append("bidi_control")
    if _GREEK_OR_CYRILLIC.search(text) and _MIXED_SCRIPT.search(
        unicodedata.normalize("NFKC", text)
    ):
        found.append("homoglyphs")
    plain, lines = normalise(text), normalise(text, keep_lines=True)
    patterns = _PATTERNS | (_RETRIEVED_PATTERNS if where == "retrieved" else {})
    found += [
        name
        for name, (_, pattern) in patterns.items()
        if pattern.search(lines if name == "fake_delimiter" else plain)
    ]
    if depth == 0:
        blobs = _decoded_blobs(text)
        if blobs:
            found.append("encoded_payload")
        for decoded in blobs:
            found += [f"base64:{name}" for name in _signals(decoded, where, depth + 1)]
    return found


def _weight(signal: str) -> float:
    name = signal.split(":")[-1]
    if name in _WEIGHTS:
        return _WEIGHTS[name]
    table = _PATTERNS.get(name) or _RETRIEVED_PATTERNS.get(name)
    return table[0] if table else 0.0


def scan(
    text: str,
    where: Where = "input",
    *,
    detector: Detector | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> InjectionScan:
    """Score `text` for prompt injection; `where` is "input" or "retrieved" (stricter)."""
    signals = list(dict.fromkeys(_signals(text, where, 0)))  # unique, in order
    remaining = 1.0
    for signal in signals:
        remaining *= 1.0 - _weight(signal)
    score = 1.0 - remaining
    if detector is not None:
        try:
            model_score = float(detector(text))
        except Exception:
            # A broken detector must not fail the request; the heuristics still answer.
            log.exception("The prompt-injection detector failed; using heuristics only.")
            signals.append("detector_failed")
        else:
            if model_score == model_score:  # NaN never wins and never hides the heuristics
                if model_score >= threshold:
                    signals.append("model")
                score = max(score, min(1.0, max(0.0, model_score)))
    return InjectionScan(round(score, 6), tuple(signals), threshold)
