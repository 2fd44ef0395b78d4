"""``GET /ipfs/{cid}`` as the IPFS trustless gateway specification says, as a FastAPI router.

Two response types, chosen by ``?format=`` or the ``Accept`` header:

- ``application/vnd.ipld.raw``: the one block, byte for byte;
- ``application/vnd.ipld.car``: a CAR v1 of the DAG (``dag-scope=all``, the default, or
  ``dag-scope=block`` for the root block alone), blocks depth first without duplicates.

Other requests get 406 (this is a trustless gateway: clients verify what they receive, so
deserialized files are not served). A CID the store does not hold gets 404. Every block is
verified as it is read; a corrupt stored block is never sent (502 for a raw request, an
aborted stream for a CAR). The router is self-contained: ``gateway_router(store)`` can be
mounted into any FastAPI app (the OpenAI server's ``extra_routers``) or served alone by
``ipfs-accelerate models serve``. This module needs fastapi (the ``server`` extra); nothing
else in the store imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from .._exceptions import IntegrityError, StoreError
from .blockstore import Blockstore
from .car import car_header
from .cid import CID, encode_varint

if TYPE_CHECKING:
    from .models import ModelStore

__all__ = ["CAR_TYPE", "RAW_TYPE", "gateway_router"]

log = logging.getLogger("ipfs_accelerate.store")

RAW_TYPE = "application/vnd.ipld.raw"
CAR_TYPE = "application/vnd.ipld.car"
_IMMUTABLE = "public, max-age=29030400, immutable"


def _wanted(format_: str | None, accept: str) -> str | None:
    if format_ == "raw":
        return RAW_TYPE
    if format_ == "car":
        return CAR_TYPE
    if format_:
        return None
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media in (RAW_TYPE, CAR_TYPE):
            return media
    return None


def gateway_router(store: ModelStore | Blockstore) -> APIRouter:
    """A FastAPI router answering ``GET``/``HEAD /ipfs/{cid}`` from ``store``.

    Args:
        store: the model store (or its blockstore) whose blocks are served.
    """
    blocks = store if isinstance(store, Blockstore) else store.blocks
    router = APIRouter()

    @router.api_route("/ipfs/{cid}", methods=["GET", "HEAD"], include_in_schema=True,
                      summary="a block or a CAR of a DAG by CID (IPFS trustless gateway)")
    def ipfs_block(cid: str, request: Request) -> Any:
        format_ = request.query_params.get("format")
        wanted = _wanted(format_, request.headers.get("accept", ""))
        if wanted is None:
            return PlainTextResponse(
                "this is a trustless gateway: ask for application/vnd.ipld.raw or application/vnd.ipld.car "
                "(Accept header or ?format=raw|car)", status_code=406)
        try:
            root = CID.parse(cid)
        except StoreError as exc:
            return PlainTextResponse(f"invalid CID: {exc}", status_code=400)
        if not blocks.has(root):
            return PlainTextResponse(f"{cid} is not in this node's store", status_code=404)
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": _IMMUTABLE, "Vary": "Accept",
                   "X-Ipfs-Path": f"/ipfs/{cid}", "X-Ipfs-Roots": cid}
        if wanted == RAW_TYPE:
            try:
                data = blocks.get(root)
            except IntegrityError as exc:
                log.error("not serving a corrupt block: %s", exc)
                return PlainTextResponse(f"the stored block {cid} is corrupt", status_code=502)
            headers |= {"Etag": f'"{cid}.raw"',
                        "Content-Disposition": f'attachment; filename="{cid}.bin"'}
            return Response(b"" if request.method == "HEAD" else data, media_type=RAW_TYPE, headers=headers)
        scope = request.query_params.get("dag-scope", "all")
        if scope not in ("all", "block", "entity"):
            return PlainTextResponse(f"unsupported dag-scope {scope!r}", status_code=400)
        headers |= {"Etag": f'W/"{cid}.car.{scope}"',
                    "Content-Disposition": f'attachment; filename="{cid}.car"'}
        media = f"{CAR_TYPE}; version=1; order=dfs; dups=n"
        if request.method == "HEAD":
            return Response(b"", media_type=media, headers=headers)
        return StreamingResponse(_car_stream(blocks, root, scope), media_type=media, headers=headers)

    return router


def _car_stream(blocks: Blockstore, root: CID, scope: str) -> Iterator[bytes]:
    yield car_header([root])
    cids = [root] if scope == "block" else blocks.walk(root)
    for cid in cids:
        data = blocks.get(cid)  # verified; a corrupt or missing block ends the stream early
        raw = cid.binary
        yield encode_varint(len(raw) + len(data)) + raw + data
