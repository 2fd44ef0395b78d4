"""The real OpenAI CLIP tokenizer, built offline from the vendored BPE vocabulary.

CLIP checkpoints (openai/clip-vit-*) all share one byte-level BPE tokenizer: 49408
tokens made from OpenAI's ``bpe_simple_vocab_16e6.txt.gz``. The hub is unreachable
here, so that file is vendored in ``vocab/`` (MIT, see ``vocab/LICENSE-CLIP.txt``) and
:func:`build_clip_tokenizer` turns it into the ``vocab.json`` / ``merges.txt`` pair the
HuggingFace checkpoints carry, then into a :class:`transformers.CLIPTokenizerFast`
whose token ids equal OpenAI's ``simple_tokenizer``.
"""

from __future__ import annotations

import gzip
import json
import pathlib
import tempfile

from .._exceptions import ModelNotAvailable

__all__ = [
    "CLIP_BPE_PATH",
    "CLIP_MODEL_MAX_LENGTH",
    "CLIP_VOCAB_SIZE",
    "build_clip_tokenizer",
    "clip_vocab_and_merges",
]

#: The vendored OpenAI CLIP BPE file.
CLIP_BPE_PATH = pathlib.Path(__file__).with_name("vocab") / "clip_bpe_simple_vocab_16e6.txt.gz"
#: 256 byte tokens + 256 ``</w>`` byte tokens + 48894 merges + 2 specials.
CLIP_VOCAB_SIZE = 49408
#: CLIP's text context length.
CLIP_MODEL_MAX_LENGTH = 77

_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"
# OpenAI keeps only the first 49152 - 256 - 2 merges of the file (line 0 is a header),
# so that bytes + merges + 2 specials fill exactly 49152 + 256 ids.
_NUM_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters.

    The order of the returned dict is the order of the first 256 vocabulary ids.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    byte_values = printable[:]
    code_points = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in byte_values:
            byte_values.append(byte)
            code_points.append(256 + extra)
            extra += 1
    return dict(zip(byte_values, (chr(c) for c in code_points), strict=True))


def clip_vocab_and_merges(
    bpe_path: pathlib.Path = CLIP_BPE_PATH,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Read the CLIP BPE file into the vocabulary and merge list OpenAI's tokenizer uses.

    Args:
        bpe_path: the gzipped BPE file (defaults to the vendored one).

    Returns:
        ``(vocab, merges)``: ``vocab`` maps each of the 49408 tokens to its id, in the
        same order as OpenAI's ``simple_tokenizer`` and HF's ``vocab.json``; ``merges``
        holds the 48894 merge pairs in rank order.

    Raises:
        ModelNotAvailable: the file is missing or not a CLIP BPE file.
    """
    try:
        lines = gzip.decompress(bpe_path.read_bytes()).decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ModelNotAvailable(f"cannot read the CLIP BPE vocabulary {bpe_path}: {exc}") from exc
    merges: list[tuple[str, str]] = []
    for line in lines[1 : _NUM_MERGES + 1]:
        pair = line.split()
        if len(pair) != 2:
            break
        merges.append((pair[0], pair[1]))
    if len(merges) != _NUM_MERGES:
        raise ModelNotAvailable(f"{bpe_path} is not the CLIP BPE vocabulary (expected {_NUM_MERGES} merge pairs)")
    byte_tokens = list(_bytes_to_unicode().values())
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens]
    tokens += ["".join(pair) for pair in merges]
    tokens += [_BOS, _EOS]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise ModelNotAvailable(f"{bpe_path} gives {len(vocab)} distinct tokens, expected {CLIP_VOCAB_SIZE}")
    return vocab, merges


def build_clip_tokenizer(
    out_dir: pathlib.Path,
    *,
    with_image_processor: bool = True,
) -> pathlib.Path:
    """Save the openai/clip-vit-base-patch32 tokenizer (and image processor) to ``out_dir``.

    The result loads offline with ``CLIPTokenizerFast.from_pretrained(out_dir)``,
    ``AutoTokenizer.from_pretrained(out_dir)`` and, when ``with_image_processor``,
    ``CLIPProcessor.from_pretrained(out_dir)`` and ``AutoProcessor.from_pretrained(out_dir)``. Token ids equal OpenAI's reference
    tokenizer; ``model_max_length`` is 77 and the pad token is ``<|endoftext|>``, as in
    the hub checkpoint.

    Args:
        out_dir: the folder to write into (created if missing). Next to the tokenizer
            files it can also hold the model's config and weights.
        with_image_processor: also write ``preprocessor_config.json`` for a
            :class:`transformers.CLIPImageProcessor` with CLIP's defaults (224 px
            shortest-edge resize, 224 px centre crop, OpenAI mean/std), which every
            openai/clip-vit-*-patch* checkpoint at 224 px uses.

    Returns:
        ``out_dir``.

    Raises:
        ModelNotAvailable: the vendored vocabulary is missing or damaged.
    """
    from transformers import CLIPTokenizerFast

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = pathlib.Path(tmp, "vocab.json")
        merges_file = pathlib.Path(tmp, "merges.txt")
        # Same layout as the hub's files: vocab.json in id order, merges.txt with the
        # '#version: 0.2' header line that CLIPTokenizer skips.
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8")
        # Building from the two files goes through transformers' slow-to-fast CLIP
        # converter, which adds CLIP's normaliser (NFC, whitespace squeeze, lowercase),
        # its split regex and the <|startoftext|> ... <|endoftext|> post-processor.
        tokenizer = CLIPTokenizerFast(
            vocab_file=str(vocab_file),
            merges_file=str(merges_file),
            unk_token=_EOS,
            bos_token=_BOS,
            eos_token=_EOS,
            pad_token=_EOS,
            model_max_length=CLIP_MODEL_MAX_LENGTH,
        )
    if with_image_processor:
        from transformers import CLIPImageProcessor, CLIPProcessor

        # The defaults of CLIPImageProcessor are exactly openai/clip-vit-base-patch32's.
        # Saving through CLIPProcessor records processor_class in the configs, so that
        # AutoProcessor finds the processor even before a config.json is written.
        CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(out_dir)
    else:
        tokenizer.save_pretrained(out_dir)
    return out_dir
