"""Tests of ipfs_accelerate.bench.quality: text normalisation and word error rate."""

from __future__ import annotations

import pytest

from ipfs_accelerate._exceptions import InvalidInput
from ipfs_accelerate.bench.quality import normalize_text, word_edit_distance, word_error_rate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("  many   spaces\tand\nlines ", "many spaces and lines"),
        ("Don't stop; it's fine.", "dont stop its fine"),
        ("It\u2019s a \u201cquote\u201d", "its a quote"),
        ("well-known e-mail", "well known e mail"),
        ("The meeting starts at 10 o'clock.", "the meeting starts at ten oclock"),
        ("42 apples and 7 pears", "forty two apples and seven pears"),
        ("1,000 people in 2024", "one thousand people in two thousand twenty four"),
        ("agent 007", "agent zero zero seven"),
        ("ROOM101", "room one hundred one"),
        ("Caf\u00e9 \uff21\uff22", "caf\u00e9 ab"),
        ("...!?", ""),
        ("", ""),
    ],
)
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_spelled_and_written_numbers_match() -> None:
    assert word_error_rate("The meeting starts at ten o'clock.", " The meeting starts at 10 o'clock.") == 0.0


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("the cat sat on the mat", "the cat sat on the mat", 0.0),
        ("The cat sat on the mat.", " the Cat sat, on the mat", 0.0),
        ("the cat sat on the mat", "the cat sit on the mat", 1 / 6),  # one substitution
        ("the cat sat on the mat", "the cat on the mat", 1 / 6),  # one deletion
        ("the cat sat on the mat", "the big cat sat on the mat", 1 / 6),  # one insertion
        ("the cat sat on the mat", "", 1.0),  # everything deleted
        ("a b", "x y z w", 2.0),  # can exceed 1 with insertions
        ("one two three four", "four three two one", 1.0),
        ("", "", 0.0),
        ("", "words", 1.0),
        ("...", "", 0.0),  # a reference of only punctuation is empty
    ],
)
def test_word_error_rate(reference: str, hypothesis: str, expected: float) -> None:
    assert word_error_rate(reference, hypothesis) == pytest.approx(expected)


def test_without_normalisation_case_and_punctuation_count() -> None:
    assert word_error_rate("Hello world", "hello world.", normalize=False) == 1.0
    assert word_error_rate("hello world", "hello world", normalize=False) == 0.0


def test_word_edit_distance() -> None:
    assert word_edit_distance([], []) == 0
    assert word_edit_distance(["a"], []) == 1
    assert word_edit_distance([], ["a", "b"]) == 2
    assert word_edit_distance("kitten".split(), "kitten".split()) == 0
    assert word_edit_distance(list("kitten"), list("sitting")) == 3


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["a"]])
def test_non_strings_rejected(bad: object) -> None:
    with pytest.raises(InvalidInput, match="must be a string"):
        word_error_rate(bad, "x")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="must be a string"):
        word_error_rate("x", bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="must be a string"):
        normalize_text(bad)  # type: ignore[arg-type]


def test_corpus_word_error_rate_pools_the_words() -> None:
    from ipfs_accelerate.bench.quality import corpus_word_error_rate

    # 1 edit in 6 words and 2 in 2 words: 3 / 8 pooled, not the mean of 1/6 and 1.
    refs = ["the cat sat on the mat", "good morning"]
    hyps = ["the cat sit on the mat", ""]
    assert corpus_word_error_rate(refs, hyps) == pytest.approx(3 / 8)
    assert corpus_word_error_rate(["Ten o'clock."], ["10 oclock"]) == 0.0  # normalised like word_error_rate
    assert corpus_word_error_rate(["a b c"], ["a b c"]) == 0.0
    assert corpus_word_error_rate([], []) == 0.0
    assert corpus_word_error_rate(["..."], ["words"]) == 1.0
    with pytest.raises(InvalidInput, match="2 references but 1 hypotheses"):
        corpus_word_error_rate(["a", "b"], ["a"])
    with pytest.raises(InvalidInput, match="must be a string"):
        corpus_word_error_rate(["a"], [None])  # type: ignore[list-item]
