"""The study's six survey questions, word for word, and the checks their answers must pass."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

LIKERT_MIN = 1
LIKERT_MAX = 5
MAX_PHRASES = 4
MAX_PHRASES_CHARS = 400


@dataclass(frozen=True)
class Question:
    """One survey question. ``kind`` is ``'likert'`` (integer 1–5) or ``'phrases'`` (0–4 phrases)."""

    key: str
    step: int
    kind: str
    text: str
    low: str = ""  # label of the scale's 1 end (shown under the scale)
    high: str = ""  # label of the scale's 5 end


QUESTIONS: tuple[Question, ...] = (
    Question(
        "q1",
        1,
        "likert",
        "On a scale from 1 to 5, how clear are the objects on the 4 feature visualization images? "
        "If you can't recognise any objects on the images, respond as 1.",
        "not clear at all",
        "very clear",
    ),
    Question(
        "q2",
        1,
        "phrases",
        "Which words or phrases are best describing objects on the feature visualization images. "
        "List 0-4 phrases through comma.",
    ),
    Question(
        "q3",
        2,
        "likert",
        "On a scale from 1 to 5, how closely do the dataset examples resemble the phrases you put in the "
        "previous question? Respond 1 if you didn't write any phrases.",
        "not at all",
        "very closely",
    ),
    Question(
        "q4",
        2,
        "likert",
        "On a scale from 1 to 5, how coherent are the examples (i.e. 1 = they have nothing in common, "
        "5 = they all show the same concept)?",
        "nothing in common",
        "all the same concept",
    ),
    Question(
        "q5",
        2,
        "likert",
        "On a scale from 1 to 5, do you agree that feature visualizations and dataset examples show 2 distinct "
        'concepts? 1 = "There clearly aren\'t two objects"; 5 = "There clearly are two objects".',
        "There clearly aren't two objects",
        "There clearly are two objects",
    ),
    Question(
        "q6",
        2,
        "likert",
        "On a scale from 1 to 5, do you agree that feature visualizations and dataset examples show 3 distinct "
        'concepts? 1 = "There clearly aren\'t three objects"; 5 = "There clearly are three objects".',
        "There clearly aren't three objects",
        "There clearly are three objects",
    ),
)


def split_phrases(text: str) -> list[str]:
    """The phrases of a Q2 answer: comma-separated, trimmed, empty pieces dropped."""
    return [p.strip() for p in text.split(",") if p.strip()]


#: bidirectional-text controls: they can make a phrase display as something else than what is stored
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: categories that draw nothing on their own: format characters (zero-width space/joiners, BOM, soft
#: hyphen), combining marks, separators/whitespace, and controls
_INVISIBLE_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Mn", "Me", "Zs", "Zl", "Zp")


def visible(text: str) -> bool:
    """Whether ``text`` has at least one character that draws something (not whitespace, not a
    zero-width/format character, not a lone combining mark)."""
    return any(unicodedata.category(ch) not in _INVISIBLE_CATEGORIES for ch in text)


def check_phrases(text: str) -> list[str]:
    """Validate a Q2 answer; return its phrases (NFC-normalised). Raises ``ValueError`` with a one-line reason.

    Refused (never silently stripped, so what is stored is what the participant saw): control characters
    (C0, DEL and C1), bidirectional-text controls, and phrases without a visible character (for example
    only a zero-width space). Zero-width joiners inside a visible phrase (emoji sequences) are kept.
    """
    if len(text) > MAX_PHRASES_CHARS:
        raise ValueError(f"q2: at most {MAX_PHRASES_CHARS} characters, got {len(text)}")
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise ValueError("q2: phrases must be on one line (no control characters)")
    if any(ch in BIDI_CONTROLS for ch in text):
        raise ValueError("q2: text-direction control characters are not allowed; type the phrases plainly")
    text = unicodedata.normalize("NFC", text)
    if len(text) > MAX_PHRASES_CHARS:
        raise ValueError(f"q2: at most {MAX_PHRASES_CHARS} characters, got {len(text)}")
    pieces = [p.strip() for p in text.split(",")]
    for i, piece in enumerate(pieces, 1):
        if piece and not visible(piece):
            raise ValueError(f"q2: phrase {i} has no visible characters (only spaces or zero-width characters)")
    phrases = [p for p in pieces if p]
    if len(phrases) > MAX_PHRASES:
        raise ValueError(f"q2: list 0-{MAX_PHRASES} phrases separated by commas, got {len(phrases)}")
    return phrases
