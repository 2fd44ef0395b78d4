"""Strings that arrived over the network: text to a model, never a path on this machine.

The media loaders read a ``str`` as a file path, which is what a library caller means. A
server passes its clients' strings on to the same loaders, and a client must not make it
read (or probe for) files of the machine it runs on: ``"/etc/hostname"`` as an "image"
would answer whether the file exists and what it holds. The server wraps every string of
a request in :class:`RemoteText`; the loaders refuse it as a path, and everything else
(tokenizers, labels, prompts) takes it as the ``str`` it is.
"""

from __future__ import annotations

from typing import Any

from .._exceptions import InvalidInput

__all__ = ["RemoteText", "refuse_remote_path"]


class RemoteText(str):
    """A string from a request: text, not a file path to open here."""

    __slots__ = ()


def refuse_remote_path(source: Any, *, what: str) -> None:
    """Raise InvalidInput when ``source`` is a request's string standing where a file path would be.

    Args:
        source: the value a loader was given.
        what: the media in words ("image", "audio", "video"), for the message.
    """
    if isinstance(source, RemoteText):
        raise InvalidInput(
            f"the server does not open files or URLs given as text: send the {what} itself, as a data: URI "
            f"(data:<media type>;base64,<the file's bytes>)"
        )
