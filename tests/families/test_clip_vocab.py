"""The CLIP tokenizer built from the vendored vocabulary equals OpenAI's reference tokenizer."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ipfs_accelerate._exceptions import ModelNotAvailable
from ipfs_accelerate.families._clip_vocab import (
    CLIP_BPE_PATH,
    CLIP_VOCAB_SIZE,
    build_clip_tokenizer,
    clip_vocab_and_merges,
)
from tests.fixtures.clip_simple_tokenizer import SimpleTokenizer

transformers = pytest.importorskip("transformers")

SOT, EOT = 49406, 49407

TEXTS = [
    "a photo of a cat",
    "A Photo Of A CAT",
    "Hello, world!!! How's it going?? (fine...)",
    "The year 2024 had 366 days; pi is about 3.14159 and e ~ 2.71828",
    "naïve café résumé in Zürich — über Straße",
    "日本語のテキストと中文字符",
    "emoji 🐱🚀 and symbols ©®™ ±×÷",
    "UPPER lower MiXeD CaSe WORDS",
    "   leading, trailing\tand\nmultiple     spaces   ",
    "email: someone@example.com #hashtag $100 50% off!!! C++ & C#",
    "don't won't they're I'm we'll she'd it's THEY'RE",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a",
    "Ελληνικά и русский текст",
    "",
]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_clip_tokenizer(tmp_path_factory.mktemp("clip-tokenizer"))


@pytest.fixture(scope="module")
def hf_tokenizer(clip_dir: Path):
    return transformers.CLIPTokenizerFast.from_pretrained(clip_dir)


@pytest.fixture(scope="module")
def reference() -> SimpleTokenizer:
    return SimpleTokenizer(str(CLIP_BPE_PATH))


def test_vendored_vocabulary_is_present() -> None:
    assert CLIP_BPE_PATH.is_file()
    assert (CLIP_BPE_PATH.parent / "LICENSE-CLIP.txt").is_file()


def test_vocab_and_merges_match_reference(reference: SimpleTokenizer) -> None:
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == CLIP_VOCAB_SIZE == 49408
    assert len(merges) == 49152 - 256 - 2 == 48894
    assert vocab == reference.encoder
    assert {pair: rank for rank, pair in enumerate(merges)} == reference.bpe_ranks
    assert vocab["<|startoftext|>"] == SOT and vocab["<|endoftext|>"] == EOT
    assert vocab["!"] == 0 and vocab["!</w>"] == 256


def test_saved_files(clip_dir: Path) -> None:
    vocab = json.loads((clip_dir / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == CLIP_VOCAB_SIZE
    merges = (clip_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version")
    assert len([line for line in merges[1:] if line]) == 48894
    config = json.loads((clip_dir / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 77
    assert (clip_dir / "tokenizer.json").is_file()
    assert (clip_dir / "preprocessor_config.json").is_file()


def test_a_photo_of_a_cat(hf_tokenizer, reference: SimpleTokenizer) -> None:
    expected = [SOT, 320, 1125, 539, 320, 2368, EOT]
    assert hf_tokenizer("a photo of a cat")["input_ids"] == expected
    assert [SOT, *reference.encode("a photo of a cat"), EOT] == expected


@pytest.mark.parametrize("text", TEXTS)
def test_ids_equal_openai_reference(hf_tokenizer, reference: SimpleTokenizer, text: str) -> None:
    assert hf_tokenizer(text)["input_ids"] == [SOT, *reference.encode(text), EOT]


def test_batch_equals_reference(hf_tokenizer, reference: SimpleTokenizer) -> None:
    batch = hf_tokenizer(TEXTS)["input_ids"]
    assert batch == [[SOT, *reference.encode(text), EOT] for text in TEXTS]


def test_special_tokens_and_padding(hf_tokenizer) -> None:
    assert hf_tokenizer.model_max_length == 77
    assert hf_tokenizer.bos_token == "<|startoftext|>" and hf_tokenizer.bos_token_id == SOT
    assert hf_tokenizer.eos_token == "<|endoftext|>" and hf_tokenizer.eos_token_id == EOT
    assert hf_tokenizer.pad_token == "<|endoftext|>" and hf_tokenizer.pad_token_id == EOT
    assert len(hf_tokenizer) == CLIP_VOCAB_SIZE
    padded = hf_tokenizer(["a cat", "a photo of a dog"], padding="max_length")
    assert [len(ids) for ids in padded["input_ids"]] == [77, 77]
    assert padded["input_ids"][0][:4] == [SOT, 320, 2368, EOT]
    assert set(padded["input_ids"][0][4:]) == {EOT}  # pads with <|endoftext|>, like the hub's
    assert sum(padded["attention_mask"][0]) == 4


def test_truncation_equals_clip_tokenize(hf_tokenizer, reference: SimpleTokenizer) -> None:
    long_text = " ".join(f"word{i} and more" for i in range(60))
    ours = hf_tokenizer(long_text, truncation=True)["input_ids"]
    theirs = reference.encode_text(long_text, context_length=77, truncate=True)[0]
    assert len(ours) == 77
    assert ours == theirs  # sot + 75 tokens + eot, as clip.tokenize(truncate=True)


def test_decode_round_trip(hf_tokenizer) -> None:
    ids = hf_tokenizer("a photo of a cat")["input_ids"]
    assert hf_tokenizer.decode(ids, skip_special_tokens=True).strip() == "a photo of a cat"


def test_auto_classes_and_processor_load_offline(clip_dir: Path) -> None:
    from PIL import Image

    tokenizer = transformers.AutoTokenizer.from_pretrained(clip_dir)
    assert type(tokenizer).__name__ == "CLIPTokenizerFast"
    processor = transformers.CLIPProcessor.from_pretrained(clip_dir)
    auto_processor = transformers.AutoProcessor.from_pretrained(clip_dir)
    assert type(auto_processor).__name__ == "CLIPProcessor"
    batch = processor(
        text=["a photo of a cat", "a dog"],
        images=[Image.new("RGB", (320, 240), (200, 100, 50))],
        return_tensors="np",
        padding=True,
    )
    assert batch["pixel_values"].shape == (1, 3, 224, 224)
    assert batch["input_ids"].tolist()[0] == [SOT, 320, 1125, 539, 320, 2368, EOT]


def test_without_image_processor(tmp_path: Path) -> None:
    out = build_clip_tokenizer(tmp_path / "tok-only", with_image_processor=False)
    assert (out / "tokenizer.json").is_file()
    assert not (out / "preprocessor_config.json").exists()


def test_damaged_vocabulary_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt.gz"
    with pytest.raises(ModelNotAvailable, match="cannot read the CLIP BPE vocabulary"):
        clip_vocab_and_merges(missing)
    not_gzip = tmp_path / "plain.txt.gz"
    not_gzip.write_text("not gzip")
    with pytest.raises(ModelNotAvailable, match="cannot read"):
        clip_vocab_and_merges(not_gzip)
    wrong = tmp_path / "wrong.txt.gz"
    wrong.write_bytes(gzip.compress(b"#version: 0.2\na b\nc d\n"))
    with pytest.raises(ModelNotAvailable, match="is not the CLIP BPE vocabulary"):
        clip_vocab_and_merges(wrong)
