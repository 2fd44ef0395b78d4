"""Text input shared by the text families: validation and tokenization with honest truncation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._exceptions import InvalidInput
from ..media.text import require_unicode

__all__ = ["check_texts", "tokenize"]


def check_texts(items: Sequence[Any], *, what: str = "text") -> list[str]:
    """Every item must be a non-empty string that is valid Unicode.

    Raises:
        InvalidInput: naming the first bad item and its position.
    """
    if not items:
        raise InvalidInput(f"empty batch: pass at least one {what}")
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidInput(f"{what} #{index} must be a string; got {type(item).__name__}")
        if not item.strip():
            raise InvalidInput(f"{what} #{index} is empty")
        require_unicode(item, what=f"{what} #{index}")
    return list(items)


def tokenize(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    truncate: bool,
    notes: list[str],
    add_special_tokens: bool = True,
) -> dict[str, Any]:
    """Tokenize a batch to padded torch tensors, truncating to ``max_length`` if allowed.

    Truncation is never silent: each truncated item is named in ``notes``; with
    ``truncate=False`` an over-long text raises InvalidInput instead.
    """
    # One encoding for the usual batch, which fits the window; a second, truncating one only
    # when an item is too long (tokenizing is a noticeable share of a MiniLM batch's time: docs/families.md).
    encoded = tokenizer(
        list(texts), padding=True, add_special_tokens=add_special_tokens, return_attention_mask=True,
        return_tensors="pt",
    )
    lengths = encoded["attention_mask"].sum(dim=1).tolist()
    for index, length in enumerate(lengths):
        if length > max_length:
            if not truncate:
                raise InvalidInput(
                    f"text #{index} is {length} tokens, longer than the model's window of "
                    f"{max_length}; shorten it or pass truncate=True"
                )
            notes.append(f"input #{index} truncated from {length} to {max_length} tokens")
    if max(lengths, default=0) > max_length:
        encoded = tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length,
            add_special_tokens=add_special_tokens, return_tensors="pt",
        )
    return {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
