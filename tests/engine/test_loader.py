"""load(): options, family and task resolution, weights sources, fallbacks, errors."""

from __future__ import annotations

import json

import pytest

import ipfs_accelerate as ia
from ipfs_accelerate.store.weights import SYNTHETIC_MARKER
from tests.fixtures.models import TINY


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "tensorrt"}, "backend must be one of"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"device": "gpu"}, "device must be one of"),
        ({"weights": "random"}, "weights must be one of"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"config_overrides": {"n_layer": 1}}, "needs weights='synthetic'"),
        ({"weights": "synthetic", "config_overrides": [("n_layer", 1)]}, "config_overrides must be a mapping"),
        ({"task": ""}, "task must be a non-empty string, or None for the default; got ''"),
        ({"family": 3}, "family must be a non-empty string, or None for the default; got 3"),
        ({"strict": "yes"}, "strict must be True or False; got 'yes'"),
        ({"max_batch_size": True}, "max_batch_size must be a positive integer; got True"),
        ({"peers": "http://127.0.0.1:8080"}, r"peers takes a list of URLs; got the string 'http://127.0.0.1:8080' "
                                              r"\(write \['http://127.0.0.1:8080'\]\)"),
    ],
)
def test_bad_options_are_invalid_input(kwargs, message):
    with pytest.raises(ia.InvalidInput, match=message):
        ia.load("gpt2", **kwargs)


def test_unknown_task_names_the_tasks():
    with pytest.raises(ia.UnsupportedTask, match=r"has no task 'translate'.*generate"):
        ia.load("gpt2", task="translate", weights="synthetic")


def test_unknown_model_is_unsupported():
    with pytest.raises(ia.UnsupportedTask, match="no family knows 'someone/unknown-model'"):
        ia.load("someone/unknown-model")


def test_known_checkpoint_without_weights_names_the_options(cache_dir):
    with pytest.raises(ia.ModelNotAvailable) as err:
        ia.load("facebook/opt-125m", cache_dir=cache_dir)
    text = str(err.value)
    assert "not available" in text and "weights='synthetic'" in text and "local directory" in text


def test_unknown_config_field_in_overrides(cache_dir):
    with pytest.raises(ia.InvalidInput, match="has no field 'no_such_field'"):
        ia.load("gpt2", weights="synthetic", config_overrides={"no_such_field": 1}, cache_dir=cache_dir)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"n_layer": -1}, r"^config_overrides: GPT2Config.n_layer is a size \(12 in the published config\); got -1$"),
    ({"n_embd": 65, "n_head": 2}, r"^config_overrides \{'n_embd': 65, 'n_head': 2\}: GPT2LMHeadModel cannot be "
                                  r"built from the changed config \(ValueError: .*divisible by num_heads"),
])
def test_overrides_a_model_cannot_be_built_from_are_invalid_input(tmp_path, overrides, message):
    with pytest.raises(ia.InvalidInput, match=message):
        ia.load("gpt2", weights="synthetic", config_overrides=overrides, cache_dir=tmp_path)
    assert not list(tmp_path.glob("synthetic/*"))  # nothing half-built is left


def test_synthetic_weights_of_an_id_the_family_does_not_know_name_the_config_they_were_built_from(load_tiny):
    tiny = TINY["prajjwal1/bert-tiny"]
    known = load_tiny("prajjwal1/bert-tiny", backend="torch")
    assert known("hi").provenance.source == "synthetic:prajjwal1/bert-tiny"
    unknown = load_tiny("my-org/custom-bert", family="bert", backend="torch", config_overrides=tiny)
    assert unknown("hi").provenance.source == "synthetic:my-org/custom-bert, built from prajjwal1/bert-tiny's config"


def test_a_cache_dir_that_cannot_hold_folders_is_model_not_available(tmp_path):
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("x")
    with pytest.raises(ia.ModelNotAvailable, match=rf"^cannot build synthetic weights for gpt2: the cache folder "
                                                   rf"{not_a_folder}/synthetic cannot be written \(NotADirectoryError"):
        ia.load("gpt2", weights="synthetic", config_overrides=TINY["gpt2"], cache_dir=not_a_folder)


def test_synthetic_folder_stays_synthetic_when_loaded_by_path(load_tiny, cache_dir):
    ep = load_tiny("gpt2")
    folder = ep.handler.weights.path
    marker = json.loads((folder / SYNTHETIC_MARKER).read_text())
    assert marker["weights"] == "synthetic" and marker["model_id"] == "gpt2"
    again = ia.load(str(folder), backend="torch", cache_dir=cache_dir)
    assert again.handler.weights.weights == "synthetic"
    assert again("hi", max_new_tokens=2).provenance.weights == "synthetic"


def test_synthetic_build_is_cached_and_safetensors_only(load_tiny):
    folder = load_tiny("gpt2").handler.weights.path
    assert (folder / "model.safetensors").is_file()
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))


def test_precision_fallback_is_recorded(load_tiny):
    # torch refuses fp16 on the CPU; without strict the engine falls back and says so.
    ep = load_tiny("prajjwal1/bert-tiny", "embed", precision="fp16", device="cpu")
    res = ep("hello")
    assert res.provenance.precision != "fp16"
    first = res.provenance.fallbacks[0]
    assert first.tried == "torch/cpu/fp16" and "fp16" in first.reason
    assert first.stage == "precision"


def test_strict_raises_instead_of_falling_back(load_tiny):
    with pytest.raises(ia.BackendUnavailable, match=r"strict=True.*fp16"):
        load_tiny("prajjwal1/bert-tiny", "embed", precision="fp16", device="cpu", strict=True)


def test_result_serialises_to_json(load_tiny):
    res = load_tiny("prajjwal1/bert-tiny", "embed")(["a", "b"])
    doc = json.loads(res.to_json())
    assert len(doc["outputs"]) == 2 and len(doc["outputs"][0]) == 32
    assert doc["provenance"]["weights"] == "synthetic"
    assert doc["provenance"]["fallbacks"] == []
    assert doc["timings"]["total_s"] > 0


def test_families_lists_tasks_and_defaults():
    infos = {f.name: f for f in ia.families()}
    assert {"bert", "sentence-embeddings", "gpt2", "opt", "t5"} <= set(infos)
    assert infos["gpt2"].tasks["generate"]["max_new_tokens"] == 32
    assert infos["bert"].default_checkpoint == "prajjwal1/bert-tiny"
    assert set(infos["bert"].tasks) == {"embed", "fill-mask"}


def test_doctor_reports_torch_and_cpu():
    report = ia.doctor()
    torch_probe = report.backends["torch"]
    assert torch_probe.available and "cpu" in torch_probe.devices
    assert report.cpu_count >= 1 and report.memory_gib > 0
    assert json.loads(json.dumps(report.to_dict()))["backends"]["torch"]["available"] is True


def test_endpoint_rejects_empty_and_bad_items(load_tiny):
    ep = load_tiny("prajjwal1/bert-tiny", "embed")
    with pytest.raises(ia.InvalidInput, match="empty batch"):
        ep([])
    with pytest.raises(ia.InvalidInput, match="#1 must be a string"):
        ep(["fine", b"bytes"])
    with pytest.raises(ia.InvalidInput, match="unknown parameter"):
        ep("x", pool="mean")


def test_failure_reason_names_the_root_cause() -> None:
    """A converter's generic wrapper error is reported with the error a user can act on."""
    from ipfs_accelerate.engine.loader import _one_line

    try:
        try:
            raise TypeError("list indices must be integers or slices, not list")
        except TypeError as inner:
            raise RuntimeError("Couldn't get TorchScript module by tracing.\nmore text") from inner
    except RuntimeError as exc:
        line = _one_line(exc)
    assert line == ("Couldn't get TorchScript module by tracing. "
                    "(caused by TypeError: list indices must be integers or slices, not list)")
    assert _one_line(ValueError("plain")) == "plain"


def test_synthetic_weights_that_would_not_fit_on_the_disk_are_refused_before_writing(tmp_path, monkeypatch):
    from ipfs_accelerate.store import disk

    monkeypatch.setattr(disk, "KEEP_FREE_BYTES", 1 << 62)  # as if the disk were full
    with pytest.raises(ia.ModelNotAvailable, match=r"^building synthetic weights for gpt2 needs about 0\.\d GB of disk"):
        ia.load("gpt2", weights="synthetic", backend="torch", cache_dir=tmp_path,
                config_overrides={"n_layer": 1, "n_embd": 32, "n_head": 2})
    assert list((tmp_path / "synthetic").iterdir()) == []  # the half-built folder went with the error


def test_synthetic_weights_that_would_not_fit_in_memory_are_refused_before_building(tmp_path, monkeypatch):
    import psutil

    from ipfs_accelerate.store.weights import _planned_bytes

    overrides = {"n_layer": 1, "n_embd": 32, "n_head": 2}
    memory = psutil.virtual_memory()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory._replace(available=10_000))  # as if memory were full
    with pytest.raises(ia.ModelNotAvailable, match=r"^building synthetic weights for gpt2 needs about 0\.\d GB of "
                                                   r"memory \(its 0\.\d GB of fp32 weights.* and 0\.0 GB is available"):
        ia.load("gpt2", weights="synthetic", backend="torch", cache_dir=tmp_path, config_overrides=overrides)
    assert list((tmp_path / "synthetic").iterdir()) == []
    monkeypatch.undo()
    ep = ia.load("gpt2", weights="synthetic", backend="torch", precision="fp32", cache_dir=tmp_path,
                 config_overrides=overrides)
    saved = sum(f.stat().st_size for f in ep.handler.model_dir.glob("*.safetensors"))
    from transformers import GPT2LMHeadModel

    from ipfs_accelerate.families import get_family
    from ipfs_accelerate.store.weights import _apply_overrides

    config = _apply_overrides(get_family("gpt2").checkpoint("gpt2").config(), overrides)
    planned = _planned_bytes(GPT2LMHeadModel, config)
    assert planned is not None and saved <= planned <= 1.2 * saved  # the estimate is the weights' size
