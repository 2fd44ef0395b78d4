"""The Ray Serve options a served model's ``[[models]]`` table becomes (checked by Ray's own
deployment schema; no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipfs_accelerate.server import load_config

serve = pytest.importorskip("ray.serve")


def _model(tmp_path: Path, extra: str):
    path = tmp_path / "serve.toml"
    path.write_text('[[models]]\nmodel = "sentence-transformers/all-MiniLM-L6-v2"\ntask = "embed"\n'
                    'max_batch_size = 16\nqueue_size = 40\nthreads = 2\n' + extra, encoding="utf-8")
    return load_config(path).models[0]


def test_an_autoscaling_table_becomes_ray_autoscaling_config(tmp_path: Path) -> None:
    from ipfs_accelerate.server.ray import ModelReplica, deployment_options

    config = _model(tmp_path, "[models.autoscaling]\nmin_replicas = 1\nmax_replicas = 4\n"
                              "target_ongoing_requests = 8\n")
    options = deployment_options(config)
    assert "num_replicas" not in options
    deployment = serve.deployment(ModelReplica).options(**options)  # Ray validates the options here
    scaling = deployment._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas, scaling.target_ongoing_requests) == (1, 4, 8)
    assert deployment.ray_actor_options["num_cpus"] == 2  # the replica's threads
    assert deployment._deployment_config.max_ongoing_requests >= 16  # at least one batch window


def test_num_replicas_without_autoscaling(tmp_path: Path) -> None:
    from ipfs_accelerate.server.ray import ModelReplica, deployment_options

    options = deployment_options(_model(tmp_path, "num_replicas = 3\n"))
    deployment = serve.deployment(ModelReplica).options(**options)
    assert deployment.num_replicas == 3
    assert deployment._deployment_config.max_queued_requests == 40


def test_an_unknown_autoscaling_key_is_refused(tmp_path: Path) -> None:
    """Ray would ignore a misspelt key silently; the server names it instead."""
    from ipfs_accelerate import InvalidInput
    from ipfs_accelerate.server.ray import deployment_options

    with pytest.raises(InvalidInput, match=r"unknown autoscaling key\(s\) max_replicass"):
        deployment_options(_model(tmp_path, "[models.autoscaling]\nmax_replicass = 4\n"))
