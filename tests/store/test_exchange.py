"""Exchange between nodes on 127.0.0.1: the trustless gateway router and the peer fetcher."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.testclient import TestClient

import ipfs_accelerate as ia
from ipfs_accelerate import StoreError
from ipfs_accelerate._exceptions import IntegrityError
from ipfs_accelerate.cli import main
from ipfs_accelerate.store.car import iter_car
from ipfs_accelerate.store.cid import CID
from ipfs_accelerate.store.fetch import Fetcher, dag_bytes
from ipfs_accelerate.store.gateway import gateway_router
from ipfs_accelerate.store.models import ModelStore
from ipfs_accelerate.store.unixfs import add_path, links_of
from tests.store.conftest import TEXTS, free_port, serve


def _app(store: ModelStore) -> FastAPI:
    app = FastAPI()
    app.include_router(gateway_router(store))
    return app


@pytest.fixture
def node_a(tmp_path, tiny_folder):
    """Node A: a store holding the tiny model; yields (store, root CID)."""
    store = ModelStore(tmp_path / "a" / "ipfs")
    return store, CID.parse(store.add(tiny_folder).root)


def test_gateway_raw_and_car_responses(node_a):
    store, root = node_a
    client = TestClient(_app(store))
    raw = client.get(f"/ipfs/{root}", headers={"Accept": "application/vnd.ipld.raw"})
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/vnd.ipld.raw"
    assert raw.content == store.blocks.get(root) and root.matches(raw.content)
    assert raw.headers["x-content-type-options"] == "nosniff" and "immutable" in raw.headers["cache-control"]
    assert client.get(f"/ipfs/{root.to_v1()}?format=raw").content == raw.content  # either CID version
    head = client.head(f"/ipfs/{root}?format=raw")
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == f'"{root}.raw"'
    car = client.get(f"/ipfs/{root}", headers={"Accept": "application/vnd.ipld.car"})
    assert car.status_code == 200 and car.headers["content-type"].startswith("application/vnd.ipld.car")
    roots, blocks = iter_car(io.BytesIO(car.content))
    assert roots == [root] and [cid for cid, _ in blocks] == list(store.blocks.walk(root))
    one = client.get(f"/ipfs/{root}?format=car&dag-scope=block")
    assert [cid for cid, _ in iter_car(io.BytesIO(one.content))[1]] == [root]
    assert client.get(f"/ipfs/{root}").status_code == 406
    assert client.get("/ipfs/not-a-cid?format=raw").status_code == 400
    missing = CID.for_block(b"nobody has this", codec=0x55, version=1)
    assert client.get(f"/ipfs/{missing}?format=raw").status_code == 404
    # a corrupt stored block is never served
    path = store.blocks.path_of(root)
    path.write_bytes(path.read_bytes()[:-1])
    assert client.get(f"/ipfs/{root}?format=raw").status_code == 502


def test_node_b_loads_a_model_only_node_a_has(tmp_path, node_a, tiny_endpoint):
    store_a, root = node_a
    with serve(_app(store_a)) as url:
        ep = ia.load(f"ipfs://{root}", backend="torch", precision="fp32", cache_dir=tmp_path / "b", peers=[url])
    result = ep(TEXTS)
    for x, y in zip(result.outputs, tiny_endpoint(TEXTS).outputs, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert result.provenance.source == f"ipfs:{root}" and result.provenance.weights == "synthetic"
    store_b = ModelStore(tmp_path / "b" / "ipfs")
    assert store_b.has_all(root) and {r.root for r in store_b.ls()} == {str(root)}


def _liar() -> FastAPI:
    app = FastAPI()

    @app.get("/ipfs/{cid}")
    def wrong(cid: str, request: Request) -> Response:
        return Response(b"these are not the bytes you asked for", media_type="application/vnd.ipld.raw")

    return app


def test_wrong_peer_bytes_are_skipped_and_named(tmp_path, node_a):
    store_a, root = node_a
    with serve(_liar()) as liar, serve(_app(store_a)) as honest:
        with Fetcher(peers=[liar, honest], workers=4) as fetcher:
            report = fetcher.fetch_dag(root, ModelStore(tmp_path / "b" / "ipfs").blocks)
        assert report.bad_peers == (liar,) and report.sources == {honest: report.fetched}
        assert ModelStore(tmp_path / "b" / "ipfs").has_all(root)
        with pytest.raises(IntegrityError) as err:
            ia.load(f"ipfs://{root}", cache_dir=tmp_path / "c", peers=[liar])
        assert liar in str(err.value) and str(root) in str(err.value)
    assert not list((tmp_path / "c" / "ipfs").rglob("blocks/*/*"))  # nothing unverified was stored


def test_interrupted_fetch_resumes(tmp_path, node_a):
    store_a, root = node_a
    # node P has only part of the DAG: a fetch from it alone stops with the blocks it got
    partial = ModelStore(tmp_path / "p" / "ipfs")
    shutil.copytree(store_a.root, partial.root)
    cids = list(store_a.blocks.walk(root))
    leaves = [cid for cid in cids if cid != root][len(cids) // 2:]
    for cid in leaves:
        partial.blocks.delete(cid)
    store_b = ModelStore(tmp_path / "b" / "ipfs")
    with serve(_app(partial)) as p_url, serve(_app(store_a)) as a_url:
        with Fetcher(peers=[p_url], workers=2) as fetcher:
            with pytest.raises(StoreError, match="not available from any peer"):
                fetcher.fetch_dag(root, store_b.blocks)
            assert fetcher.bad_peers == {}  # a peer that lacks blocks is not a liar
        got = set(store_b.blocks.digests())
        assert got and len(got) < len(cids)
        with Fetcher(peers=[a_url], workers=4) as fetcher:
            report = fetcher.fetch_dag(root, store_b.blocks)
    assert report.local == len(got) and report.fetched == len(cids) - len(got)
    assert store_b.has_all(root)


def _fake_kubo_rpc(store: ModelStore) -> FastAPI:
    """The one kubo RPC call the fetcher uses, answered from a store (a stand-in for a daemon)."""
    app = FastAPI()

    @app.post("/api/v0/block/get")
    def block_get(arg: str) -> Response:
        cid = CID.parse(arg)
        if not store.blocks.has(cid):
            return Response(b'{"Message":"block was not found locally (offline)","Code":0,"Type":"error"}',
                            status_code=500, media_type="application/json")
        return Response(store.blocks.get(cid), media_type="text/plain")

    return app


def test_kubo_rpc_api_is_a_block_source(tmp_path, node_a):
    store_a, root = node_a
    with serve(_fake_kubo_rpc(store_a)) as kubo:
        store_b = ModelStore(tmp_path / "b" / "ipfs", kubo_api=kubo)
        report = store_b.ensure(root)
        assert report is not None and report.sources == {kubo: len(list(store_a.blocks.walk(root)))}
        assert store_b.materialize(root).is_dir()
        missing = CID.for_block(b"absent", codec=0x55, version=1)
        with pytest.raises(StoreError, match=r"kubo RPC\): HTTP 500"):
            ModelStore(tmp_path / "c" / "ipfs", kubo_api=kubo).ensure(missing)


def test_cli_get_from_a_peer_and_models_serve(tmp_path, node_a, monkeypatch, capsys):
    store_a, root = node_a
    with serve(_app(store_a)) as url:
        monkeypatch.setenv("IPFS_ACCELERATE_CACHE", str(tmp_path / "b"))
        monkeypatch.setenv("IPFS_ACCELERATE_PEERS", f"{url}, http://127.0.0.1:9")  # a dead second peer
        assert main(["models", "get", str(root), "--to", str(tmp_path / "copy")]) == 0
    assert capsys.readouterr().out.startswith(f"saved {root}")
    assert add_path(tmp_path / "copy").cid == root
    # `models serve` runs the router alone; node A's cache is served
    port = free_port()
    env = {**os.environ, "IPFS_ACCELERATE_CACHE": str(store_a.root.parent), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "ipfs_accelerate.cli", "models", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/ipfs/{root}?format=raw", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        assert response.status_code == 200 and root.matches(response.content)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_corrupt_local_block_is_fetched_again_from_a_peer(tmp_path, node_a, tiny_folder):
    store_a, root = node_a
    store_b = ModelStore(tmp_path / "b" / "ipfs")
    store_b.add(tiny_folder)
    victim = list(store_b.blocks.walk(root))[-1]
    store_b.blocks.path_of(victim).write_bytes(b"bit rot")
    with serve(_app(store_a)) as url:
        repaired = ModelStore(tmp_path / "b" / "ipfs", peers=[url])
        report = repaired.ensure(root)
    assert report is not None and report.fetched == 1 and report.local == len(list(store_a.blocks.walk(root))) - 1
    assert store_b.blocks.get(victim) == store_a.blocks.get(victim)
    assert add_path(repaired.materialize(root)).cid == root


def _tree_bytes(store: ModelStore, cid: CID) -> int:
    """Every block under ``cid`` counted once per link that reaches it (what ``Tsize`` records)."""
    block = store.blocks.get(cid)
    return len(block) + sum(_tree_bytes(store, link.cid) for link in links_of(cid, block))


def test_a_fetch_the_disk_cannot_hold_is_refused_before_writing(tmp_path, node_a, monkeypatch):
    from ipfs_accelerate.store import disk

    store_a, root = node_a
    need = dag_bytes(root, store_a.blocks.get(root))
    assert need == _tree_bytes(store_a, root) > 0  # the root block alone sizes the whole DAG
    store_b = ModelStore(tmp_path / "b" / "ipfs")
    with serve(_app(store_a)) as url:
        monkeypatch.setattr(disk, "KEEP_FREE_BYTES", 1 << 62)  # as if the disk were full
        with Fetcher(peers=[url]) as fetcher:
            with pytest.raises(StoreError, match=rf"^fetching the blocks of {root} needs about [\d.]+ GB of disk"):
                fetcher.fetch_dag(root, store_b.blocks)
            assert fetcher.bad_peers == {}  # a full disk is not the peer's fault
        with pytest.raises(StoreError, match=f"fetching the blocks of {root}"):
            ia.load(f"ipfs://{root}", backend="torch", cache_dir=tmp_path / "c", peers=[url])
        assert not list(tmp_path.glob("[bc]/ipfs/blocks/*/*"))  # nothing was written
        monkeypatch.undo()
        with Fetcher(peers=[url]) as fetcher:
            report = fetcher.fetch_dag(root, store_b.blocks)
    blocks = len(list(store_a.blocks.walk(root)))
    assert report.fetched == blocks and report.sources == {url: blocks}  # the sizing block is not counted twice
    assert store_b.has_all(root)


def test_a_fetch_for_a_model_folder_asks_room_for_the_blocks_and_the_folder(tmp_path, node_a, monkeypatch):
    from ipfs_accelerate.store import disk

    store_a, root = node_a
    need = dag_bytes(root, store_a.blocks.get(root))
    usage = shutil.disk_usage(tmp_path)
    # as if the disk had room for the blocks (1.5 × their size), not for the blocks and the folder
    monkeypatch.setattr(disk.shutil, "disk_usage",
                        lambda _: usage._replace(free=disk.KEEP_FREE_BYTES + int(1.5 * need)))
    with serve(_app(store_a)) as url:
        store_b = ModelStore(tmp_path / "b" / "ipfs", peers=[url])
        with pytest.raises(StoreError, match=rf"^fetching the blocks of {root} and writing its files from them "
                                             r"needs about [\d.]+ GB of disk"):
            store_b.materialize(root)
        assert not list((tmp_path / "b").rglob("blocks/*/*"))
        assert store_b.ensure(root) is not None and store_b.has_all(root)  # the blocks alone fit


@pytest.mark.parametrize("url", ["not a url", "ftp://host", "http://[::1", "http://host:99999", "http://"])
def test_a_peer_that_is_not_an_http_url_is_refused_when_given(tmp_path, url):
    message = rf"^peer {re.escape(repr(url))} is not an http:// or https:// URL with a host"
    with pytest.raises(ia.InvalidInput, match=message):
        ModelStore(tmp_path / "ipfs", peers=["http://127.0.0.1:9", url])
    with pytest.raises(ia.InvalidInput, match=message):
        Fetcher(peers=[url])
    with pytest.raises(ia.InvalidInput, match=rf"^kubo_api {re.escape(repr(url))} is not an http"):
        ModelStore(tmp_path / "ipfs", kubo_api=url)
    assert ModelStore(tmp_path / "ipfs", peers=["https://gateway.example/"]).peers == ("https://gateway.example",)
