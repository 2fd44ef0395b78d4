"""``ipfs-accelerate models``: add, get, list, pin, collect, export, import and serve models by CID.

Register it in the main parser with ``add_models_parser(subparsers)``. Examples::

    ipfs-accelerate models add ./my-model                  # prints "added <root CID> my-model" last
    ipfs-accelerate models add sentence-transformers/all-MiniLM-L6-v2 --cid-version 1
    ipfs-accelerate models get QmZ… --to ./copy
    ipfs-accelerate models export QmZ… --car model.car    # kubo: ipfs dag import model.car
    ipfs-accelerate models serve --port 8080               # GET /ipfs/{cid} (trustless gateway)

Environment variables are read here, at the edge: ``IPFS_ACCELERATE_CACHE`` (the cache; the
store is its ``ipfs/`` folder), ``IPFS_ACCELERATE_PEERS`` (trustless-gateway URLs, separated
by commas or spaces) and ``IPFS_ACCELERATE_KUBO_API`` (a kubo RPC API URL).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .._cli_args import require_listenable
from .._exceptions import InvalidInput, StoreError, UnsupportedTask
from ..engine.loader import describe_model_folder, resolve_model_weights
from .cid import CID
from .models import ModelStore
from .unixfs import AddOptions

__all__ = ["add_models_parser", "ipfs_load_kwargs", "store_from_env"]


def ipfs_load_kwargs() -> dict[str, Any]:
    """``{"peers": [...], "kubo_api": ...}`` from the environment, for ``ia.load(..., **kwargs)``.

    For the edges (the CLI's ``run``, the server) that load ``ipfs://`` models: the library
    itself never reads the environment.
    """
    peers = [p for p in os.environ.get("IPFS_ACCELERATE_PEERS", "").replace(",", " ").split() if p]
    return {"peers": peers, "kubo_api": os.environ.get("IPFS_ACCELERATE_KUBO_API") or None}


def store_from_env() -> ModelStore:
    """The store the environment describes (the cache, peers, kubo RPC API)."""
    from ..engine.options import default_cache_dir

    cache = os.environ.get("IPFS_ACCELERATE_CACHE")
    return ModelStore.in_cache(Path(cache) if cache else default_cache_dir(), **ipfs_load_kwargs())


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_models_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``models`` sub-command to an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser("models", help="models by IPFS CID: add, get, ls, pin, gc, export, import, serve")
    sub = p.add_subparsers(dest="models_command", required=True)

    a = sub.add_parser("add", help="add a file, a folder or a model id; the last line holds the root CID")
    a.add_argument("target", help="a file, a folder, or a model id the weights resolver knows")
    a.add_argument("--cid-version", type=int, choices=(0, 1), default=0, help="0 (Qm…, default) or 1 (bafy…)")
    a.add_argument("--raw-leaves", type=_bool, nargs="?", const=True, default=None,
                   help="leaves as raw blocks (default: on with --cid-version 1)")
    a.add_argument("-n", "--only-hash", action="store_true", help="print the CIDs, store nothing")
    a.add_argument("-q", "--quiet", action="store_true", help="print only CIDs")
    a.add_argument("-Q", "--quieter", action="store_true", help="print only the root CID")
    a.add_argument("--no-pin", action="store_true", help="do not pin (gc may collect it)")
    a.set_defaults(func=_cmd_add)

    g = sub.add_parser("get", help="write a CID's file or folder (local store, then peers)")
    g.add_argument("cid")
    g.add_argument("--to", help="the destination (default: ./<cid>)")
    g.set_defaults(func=_cmd_get)

    ls = sub.add_parser("ls", help="list the roots in the store")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_cmd_ls)

    pin = sub.add_parser("pin", help="keep a CID through gc (fetching it if needed)")
    pin.add_argument("cid")
    pin.set_defaults(func=_cmd_pin)
    unpin = sub.add_parser("unpin", help="let gc collect a CID")
    unpin.add_argument("cid")
    unpin.set_defaults(func=_cmd_unpin)

    gc = sub.add_parser("gc", help="remove blocks no pin reaches")
    gc.set_defaults(func=_cmd_gc)

    ex = sub.add_parser("export", help="write a CID's DAG as a CAR v1 file (ipfs dag import reads it)")
    ex.add_argument("cid")
    ex.add_argument("--car", required=True, help="the CAR file to write")
    ex.set_defaults(func=_cmd_export)

    im = sub.add_parser("import", help="import a CAR v1 file (every block verified) and pin its roots")
    im.add_argument("car")
    im.add_argument("--no-pin", action="store_true")
    im.set_defaults(func=_cmd_import)

    sv = sub.add_parser("serve", help="serve the store as an IPFS trustless gateway (GET /ipfs/{cid})")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8080)
    sv.set_defaults(func=_cmd_serve)

    bn = sub.add_parser("bench", help="MB/s of add (beside plain sha256 of the same bytes) and of fetch")
    bn.add_argument("paths", nargs="+", help="folders or files (model ids are resolved as for add)")
    bn.add_argument("--repeat", type=int, default=3)
    bn.add_argument("--no-fetch", action="store_true", help="skip the two-node fetch")
    bn.add_argument("--json", action="store_true")
    bn.set_defaults(func=_cmd_bench)
    return p


def _cid(text: str) -> CID:
    from .models import parse_ipfs_ref

    return parse_ipfs_ref(text) or CID.parse(text)


def _cmd_add(args: argparse.Namespace) -> int:
    store = store_from_env()
    options = AddOptions(cid_version=args.cid_version, raw_leaves=args.raw_leaves)
    target = Path(args.target).expanduser()
    name = target.name
    if not target.exists():
        if target.is_absolute() or args.target.startswith((".", "~")):
            raise StoreError(f"no such file or folder: {target}")
        try:
            target = _resolve_model(args.target, store.root.parent)
        except UnsupportedTask as exc:  # "org/name" may be either: say both
            raise StoreError(f"{args.target!r} is neither a file or folder here nor a model id a family knows "
                             f"({exc})") from exc
        name = args.target
    family, task = describe_model_folder(target) if target.is_dir() else (None, None)
    manifest = store.add(target, options=options, only_hash=args.only_hash, name=name, pin=not args.no_pin,
                         family=family, task=task)
    if not args.quieter:
        for entry in manifest.files:
            if entry.path:
                print(entry.cid if args.quiet else f"added {entry.cid} {name}/{entry.path}")
    print(manifest.root if (args.quiet or args.quieter) else f"added {manifest.root} {name}")
    return 0


def _resolve_model(model_id: str, cache_dir: Path) -> Path:
    """The folder of a model id (a package's real weights, the HF cache), as ``load()`` finds it."""
    return resolve_model_weights(model_id, cache_dir=cache_dir).path


def _cmd_get(args: argparse.Namespace) -> int:
    store = store_from_env()
    root = _cid(args.cid)
    dest = store.get(root, args.to or str(root))
    print(f"saved {root} to {dest}")
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    rows = store_from_env().ls()
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return 0
    for row in rows:
        print(f"{row.root}  {'pinned' if row.pinned else 'unpinned':<8}  {row.size:>12}  "
              f"{row.family or '-':<20}  {row.weights or '-':<10}  {row.name}")
    return 0


def _cmd_pin(args: argparse.Namespace) -> int:
    root = _cid(args.cid)
    store_from_env().pin(root)
    print(f"pinned {root}")
    return 0


def _cmd_unpin(args: argparse.Namespace) -> int:
    root = _cid(args.cid)
    if not store_from_env().unpin(root):
        raise StoreError(f"{root} is not pinned")
    print(f"unpinned {root}")
    return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    blocks, size = store_from_env().gc()
    print(f"removed {blocks} blocks ({size} bytes)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .car import export_car

    store = store_from_env()
    root = _cid(args.cid)
    store.ensure(root)
    count = export_car(store.blocks, root, Path(args.car))
    print(f"exported {root} ({count} blocks) to {args.car}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from .car import import_car

    store = store_from_env()
    roots, count = import_car(store.blocks, Path(args.car))
    for root in roots:
        if not args.no_pin:
            store.blocks.pin(root, name=Path(args.car).name)
        store.manifest(root)
        print(f"imported {root} ({count} blocks)")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
        from fastapi import FastAPI
    except ImportError as exc:
        raise InvalidInput("models serve needs fastapi and uvicorn: pip install 'ipfs-accelerate[server]'") from exc
    from .gateway import gateway_router

    require_listenable(args.host, args.port)
    app = FastAPI(title="ipfs-accelerate trustless gateway")
    app.include_router(gateway_router(store_from_env()))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .benchmark import measure

    results = []
    for item in args.paths:
        path = Path(item).expanduser()
        if not path.exists():
            path = _resolve_model(item, store_from_env().root.parent)
        result = measure(path, repeat=args.repeat, fetch=not args.no_fetch)
        results.append(result)
        if not args.json:
            fetch = f"{result.fetch_mb_s:8.1f}" if result.fetch_mb_s is not None else "       -"
            print(f"{item}: {result.size / 1e6:.1f} MB  sha256 {result.sha256_mb_s:7.1f} MB/s  "
                  f"add --only-hash {result.only_hash_mb_s:7.1f} MB/s ({result.add_vs_sha256:.0%} of sha256)  "
                  f"add {result.add_mb_s:7.1f} MB/s  fetch {fetch} MB/s")
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    return 0
