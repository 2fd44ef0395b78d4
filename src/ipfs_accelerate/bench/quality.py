"""Quality measures for model output: word error rate for speech recognition, and how
closely our outputs agree with a baseline's (:func:`agreement`).

The normalisation is deliberately simple and deterministic (no model-specific rules), so
the same text always scores the same: lowercase, digits spelled out, punctuation dropped,
whitespace collapsed. It is enough to compare a transcript with the sentence that was
synthesised, which is how the tests and benchmarks use it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._exceptions import InvalidInput
from .baselines import score_agreement

__all__ = [
    "agreement",
    "corpus_word_error_rate",
    "normalize_text",
    "output_wer",
    "word_edit_distance",
    "word_error_rate",
]

_DIGIT_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)
_TEENS = (
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

# Apostrophes inside words are dropped ("don't" -> "dont") rather than split, so that a
# transcript writing "dont" is not penalised twice.
_APOSTROPHES = re.compile(r"['\u2019\u2018`]")
# A thousands separator between digits joins the number ("1,000" -> "1000").
_DIGIT_GROUPING = re.compile(r"(?<=\d)[,](?=\d{3}\b)")
_NUMBER = re.compile(r"\d+")
_NON_WORD = re.compile(r"[^\w\s]|_", re.UNICODE)
_SPACES = re.compile(r"\s+")


def _spell_number(n: int) -> str:
    """Spell a non-negative integer in English words (short scale)."""
    if n < 10:
        return _DIGIT_WORDS[n]
    if n < 20:
        return _TEENS[n - 10]
    if n < 100:
        tens, rest = divmod(n, 10)
        return _TENS[tens] + ("" if rest == 0 else " " + _DIGIT_WORDS[rest])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _DIGIT_WORDS[hundreds] + " hundred" + ("" if rest == 0 else " " + _spell_number(rest))
    for value, name in ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand")):
        if n >= value:
            head, rest = divmod(n, value)
            return _spell_number(head) + " " + name + ("" if rest == 0 else " " + _spell_number(rest))
    raise AssertionError("unreachable")  # pragma: no cover


def _spell_digits(match: re.Match[str]) -> str:
    digits = match.group(0)
    # Very long digit strings (phone numbers, ids) are read digit by digit, as people do.
    if len(digits) > 15 or (len(digits) > 1 and digits.startswith("0")):
        return " " + " ".join(_DIGIT_WORDS[int(d)] for d in digits) + " "
    return " " + _spell_number(int(digits)) + " "


def normalize_text(text: str) -> str:
    """Normalise text for word-level comparison.

    Lowercases, folds compatibility forms (NFKC: full-width letters, ligatures; accents
    are kept), spells numbers as English words ("42" -> "forty two"), removes punctuation
    (apostrophes join, other marks split words) and collapses whitespace.

    Args:
        text: Any text.

    Returns:
        The normalised text: lowercase words separated by single spaces.

    Raises:
        InvalidInput: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise InvalidInput(f"text must be a string; got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text).lower()
    text = _APOSTROPHES.sub("", text)
    text = _DIGIT_GROUPING.sub("", text)
    text = _NUMBER.sub(_spell_digits, text)
    text = _NON_WORD.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def word_edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance between two word sequences (substitution, insertion, deletion).

    Args:
        reference: The reference words.
        hypothesis: The hypothesis words.

    Returns:
        The minimum number of word edits turning ``hypothesis`` into ``reference``.
    """
    # One row of the dynamic-programming table at a time: O(len(hypothesis)) memory.
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_word in enumerate(hypothesis, start=1):
            current[j] = min(
                previous[j] + 1,  # deletion of ref_word
                current[j - 1] + 1,  # insertion of hyp_word
                previous[j - 1] + (ref_word != hyp_word),  # substitution or match
            )
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str, *, normalize: bool = True) -> float:
    """Word error rate: word-level Levenshtein distance over the number of reference words.

    Args:
        reference: The correct text.
        hypothesis: The text to score (e.g. a transcript).
        normalize: Apply :func:`normalize_text` to both first (default); when False the
            texts are only split on whitespace.

    Returns:
        ``(substitutions + deletions + insertions) / len(reference words)``; it can exceed
        1.0 when the hypothesis has many extra words. An empty reference scores 0.0
        against an empty hypothesis and 1.0 against anything else.

    Raises:
        InvalidInput: Either argument is not a string.
    """
    for name, value in (("reference", reference), ("hypothesis", hypothesis)):
        if not isinstance(value, str):
            raise InvalidInput(f"{name} must be a string; got {type(value).__name__}")
    if normalize:
        reference, hypothesis = normalize_text(reference), normalize_text(hypothesis)
    ref_words, hyp_words = reference.split(), hypothesis.split()
    if not ref_words:
        # WER is undefined on an empty reference; scoring any output as a full error keeps
        # the measure bounded and makes "expected silence, got words" visible.
        return 0.0 if not hyp_words else 1.0
    return word_edit_distance(ref_words, hyp_words) / len(ref_words)


def corpus_word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Word error rate over a set of texts: all word edits over all reference words.

    Pooling the counts (rather than averaging each text's rate) weighs every word the
    same, so that a short text does not count as much as a long one; it is how speech
    recognition results are usually reported.

    Args:
        references: The correct texts.
        hypotheses: The texts to score, one per reference, in the same order.

    Returns:
        ``sum(edits) / sum(reference words)`` after :func:`normalize_text`; with no
        reference words at all, 0.0 when every hypothesis is empty too and 1.0 otherwise.

    Raises:
        InvalidInput: The sequences differ in length, or an item is not a string.
    """
    if len(references) != len(hypotheses):
        raise InvalidInput(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = words = extra = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        for name, value in (("reference", reference), ("hypothesis", hypothesis)):
            if not isinstance(value, str):
                raise InvalidInput(f"{name} must be a string; got {type(value).__name__}")
        ref_words, hyp_words = normalize_text(reference).split(), normalize_text(hypothesis).split()
        edits += word_edit_distance(ref_words, hyp_words)
        words += len(ref_words)
        extra += len(hyp_words)
    if not words:
        # The same convention as word_error_rate for an empty reference.
        return 0.0 if not extra else 1.0
    return edits / words


def agreement(ours: Sequence[Any], theirs: Sequence[Any]) -> dict[str, Any] | None:
    """Cosine similarity for vectors; for texts the exact-match rate and the mean word error
    rate of ours against theirs; for scored candidates (labels, tokens) ``score_agreement``;
    None otherwise. Outputs with a ``text`` (transcripts) count as texts."""
    if not ours or len(ours) != len(theirs):
        return None
    scored = score_agreement(ours, theirs)  # classifier labels, fill-mask tokens
    if scored is not None:
        return scored
    ours = [_as_text(o) for o in ours]
    theirs = [_as_text(t) for t in theirs]
    if all(isinstance(o, str) for o in ours) and all(isinstance(t, str) for t in theirs):
        same = sum(o.strip() == t.strip() for o, t in zip(ours, theirs, strict=True))
        wers = [word_error_rate(t, o) for o, t in zip(ours, theirs, strict=True) if t.strip()]
        out: dict[str, Any] = {"metric": "exact_match", "value": same / len(ours)}
        if wers:
            out["wer_vs_baseline"] = float(np.mean(wers))
        return out
    try:
        a = [np.asarray(o, dtype=np.float64).ravel() for o in ours]
        b = [np.asarray(t, dtype=np.float64).ravel() for t in theirs]
    except (TypeError, ValueError):
        return None
    if any(x.shape != y.shape or x.size == 0 for x, y in zip(a, b, strict=True)):
        return None
    cos = [float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12)) for x, y in zip(a, b, strict=True)]
    return {"metric": "cosine", "min": min(cos), "mean": float(np.mean(cos))}


def _as_text(output: Any) -> Any:
    text = getattr(output, "text", None)
    return text if isinstance(text, str) else output


def output_wer(outputs: Sequence[Any], references: Sequence[str] | None) -> float | None:
    """The word error rate of ``outputs`` (texts, or objects with a ``text``) against
    ``references``, pooled over all items; None when there is nothing to compare."""
    if not references or len(outputs) != len(references):
        return None
    texts = [_as_text(o) for o in outputs]
    if not all(isinstance(t, str) for t in texts):
        return None
    return corpus_word_error_rate(list(references), texts)
