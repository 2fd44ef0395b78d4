"""Text that every tokenizer can take: valid Unicode, checked before any tokenizer sees it.

Python strings may hold lone surrogates (``"\\ud800"``: a JSON body may escape one, and
``json.loads`` accepts it); they cannot be encoded, and a Rust tokenizer refuses them with a
``TypeError`` about its own input types that names neither the text nor the character.
"""

from __future__ import annotations

from .._exceptions import InvalidInput

__all__ = ["require_unicode"]


def require_unicode(text: str, *, what: str) -> None:
    """Raise :class:`~ipfs_accelerate.InvalidInput` naming ``what`` and the first character
    that is not valid Unicode (a lone surrogate); return quietly otherwise."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{what} is not valid Unicode: {exc.reason} at character {exc.start} "
                           f"({text[exc.start]!r})") from exc
