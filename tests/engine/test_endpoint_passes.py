"""A call's texts run as passes of similar length; outputs, notes and order stay the caller's."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate.engine.endpoint import PASS_LENGTH_RATIO, PASS_LENGTH_SLACK, length_groups
from tests.engine.test_batcher import MINILM, TEXTS


@pytest.mark.parametrize(("lengths", "max_size"), [
    ([12, 72, 3, 98, 17, 90, 21, 48, 5, 95], 32),
    ([10] * 9, 4),
    ([1, 1, 2, 100, 0, 125, 126, 160, 300], 8),
    ([7], 1),
])
def test_length_groups_cover_every_item_once_within_the_ratio(lengths, max_size):
    groups = length_groups(lengths, max_size)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        assert 1 <= len(group) <= max_size
        assert all(lengths[i] <= _limit(lengths[group[0]]) for i in group)
    # Shortest first, and a pass never starts while the previous one had room for it.
    flat = [lengths[i] for g in groups for i in g]
    assert flat == sorted(flat)
    for before, after in itertools.pairwise(groups):
        assert len(before) == max_size or lengths[after[0]] > _limit(lengths[before[0]])


def _limit(shortest: int) -> float:
    return max(PASS_LENGTH_RATIO * shortest, shortest + PASS_LENGTH_SLACK)


def test_equal_lengths_fill_passes_to_the_batch_size():
    assert length_groups([10] * 9, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]


@pytest.fixture(scope="module")
def embed(load_tiny) -> ia.Endpoint:
    return load_tiny(MINILM)


def test_mixed_lengths_run_in_passes_and_come_back_in_order(embed):
    singles = [embed(text).outputs[0] for text in TEXTS]
    res = embed(TEXTS)
    assert len(res.outputs) == len(TEXTS)
    for got, want in zip(res.outputs, singles, strict=True):
        assert np.allclose(got, want, atol=1e-5)
    passes = int(res.timings["passes"])
    assert 1 < passes <= len(TEXTS)
    assert any(f"{len(TEXTS)} inputs run as {passes} passes of similar length" in n for n in res.provenance.notes)
    assert res.provenance.batch_size < len(TEXTS)  # what really ran together


def test_notes_name_the_callers_input(embed):
    texts = ["short", "word " * 600, "also short", "word " * 700]
    res = embed(texts)
    truncated = sorted(n for n in res.provenance.notes if "truncated" in n)
    assert [n.split(" truncated")[0] for n in truncated] == ["input #1", "input #3"]


def test_generators_keep_one_batch(load_tiny):
    gen = load_tiny("gpt2", config_overrides={})
    res = gen(["Hi", "A much longer prompt than the first one, by far"], max_new_tokens=2)
    assert res.timings["passes"] == 1.0 and res.provenance.batch_size == 2
