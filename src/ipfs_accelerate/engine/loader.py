"""``load()``: resolve the family and weights, choose a backend, fall back honestly."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._exceptions import AccelerateError, BackendUnavailable, InvalidInput, UnsupportedTask
from .._logs import library_output_logged
from .._types import BackendChoice, DeviceChoice, PrecisionChoice, WeightsChoice
from ..backends import get_backend
from ..families import find_family, get_family
from ..store.models import parse_ipfs_ref, resolve_ipfs
from ..store.weights import ResolvedWeights, resolve_weights
from .choice import plan_candidates
from .endpoint import Endpoint, LoadReport
from .options import LoadOptions, default_cache_dir
from .result import Fallback

__all__ = ["describe_model_folder", "load", "resolve_model_weights"]

log = logging.getLogger("ipfs_accelerate")


@library_output_logged  # third-party prints and warnings become log records (quiet by default)
def load(
    model_id: str,
    task: str | None = None,
    *,
    backend: BackendChoice = "auto",
    precision: PrecisionChoice = "auto",
    device: DeviceChoice = "auto",
    weights: WeightsChoice = "auto",
    family: str | None = None,
    strict: bool = False,
    trust_remote_code: bool = False,
    config_overrides: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    max_batch_size: int = 32,
    warmup: bool = True,
    peers: Sequence[str] = (),
    kubo_api: str | None = None,
) -> Endpoint:
    """Load a model for one task on the best backend that works here.

    Args:
        model_id: a hub id (``"gpt2"``), a local directory, a checkpoint a package ships, or
            ``ipfs://<cid>`` / ``/ipfs/<cid>`` (the local store, then ``peers``, then ``kubo_api``;
            every block verified).
        task: the task; ``None`` takes the family's default.
        backend: ``"auto"``, ``"torch"``, ``"openvino"`` or ``"onnxruntime"``.
        precision: ``"auto"``, ``"fp32"``, ``"fp16"``, ``"bf16"`` or ``"int8"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        weights: ``"auto"`` (real weights or a clear error), ``"pretrained"``, or
            ``"synthetic"`` (random weights from the published config, reported as such).
        family: force a family instead of inferring it.
        strict: raise BackendUnavailable instead of falling back.
        trust_remote_code: allow the checkpoint's own code (off by default).
        config_overrides: changes to the published config (synthetic weights only).
        cache_dir: where synthetic models and exports are kept.
        max_batch_size: the largest batch per forward pass.
        warmup: run the task once on built-in inputs before returning.
        peers: trustless-gateway URLs to fetch an ``ipfs://`` model's missing blocks from.
        kubo_api: a kubo RPC API URL tried after the peers.

    Returns:
        An :class:`Endpoint`; call it with inputs to get a :class:`Result`.

    Raises:
        ModelNotAvailable: no source has the weights (the message names the options).
        UnsupportedTask: the family lacks the task, or no family knows the model.
        BackendUnavailable: no backend could load the model (or, with ``strict``,
            the first choice failed).
        InvalidInput: an option is invalid.
        StoreError: an ``ipfs://`` model cannot be had (``IntegrityError``: bytes fail their CID).
    """
    started = time.perf_counter()
    if isinstance(peers, (str, bytes)):  # a string is a sequence too: of one-letter "URLs"
        raise InvalidInput(f"peers takes a list of URLs; got the string {peers!r} (write [{peers!r}])")
    options = LoadOptions(
        model_id=model_id, task=task, backend=backend, precision=precision, device=device,
        weights=weights, family=family, strict=strict, trust_remote_code=trust_remote_code,
        config_overrides=config_overrides,
        cache_dir=Path(cache_dir) if cache_dir is not None else default_cache_dir(),
        max_batch_size=max_batch_size,
    )
    # An ipfs:// model is fetched and verified first: its folder is what the family is read from.
    from_ipfs = (resolve_ipfs(options.model_id, cache_dir=options.cache_dir, peers=peers, kubo_api=kubo_api)
                 if parse_ipfs_ref(options.model_id) is not None else None)
    family_name = options.family or (from_ipfs.family if from_ipfs is not None else None)
    model_family = get_family(family_name) if family_name else find_family(
        str(from_ipfs.path) if from_ipfs is not None else options.model_id)
    task_name = options.task or model_family.default_task
    if task_name not in model_family.tasks:
        raise UnsupportedTask(
            f"family {model_family.name!r} has no task {task_name!r}; its tasks: {', '.join(model_family.tasks)}"
        )
    if options.backend != "auto":
        probe = get_backend(options.backend).probe()
        if not probe.available:
            raise BackendUnavailable(
                f"backend {options.backend!r} is unavailable: {probe.reason}", extra=probe.extra
            )
    resolved = from_ipfs or resolve_weights(
        model_family, options.model_id, weights=options.weights, cache_dir=options.cache_dir,
        config_overrides=options.config_overrides,
    )
    config = _load_config(resolved.path, options.trust_remote_code)
    handler = model_family.handler(task_name, resolved, config)
    spec = handler.model_spec()
    resolve_s = time.perf_counter() - started

    fallbacks: list[Fallback] = []
    candidates = plan_candidates(options, spec)
    errors: list[str] = []
    for index, candidate in enumerate(candidates):
        backend_impl = get_backend(candidate.backend)
        reason = _skip_reason(backend_impl, candidate)
        endpoint = None
        last_error: BaseException | None = None
        if reason is None:
            try:
                load_started = time.perf_counter()
                runtime = backend_impl.load(
                    spec, device=candidate.device, precision=candidate.precision, cache_dir=options.cache_dir
                )
                backend_load_s = time.perf_counter() - load_started
                endpoint = Endpoint(
                    family=model_family.name, handler=handler, runtime=runtime, fallbacks=fallbacks,
                    max_batch_size=options.max_batch_size,
                    cpu_fallback=None if options.strict or not candidate.device.startswith("cuda") else (
                        lambda: get_backend("torch").load(spec, device="cpu", precision="fp32",
                                                          cache_dir=options.cache_dir)),
                )
                warmup_s = endpoint.warmup() if warmup else 0.0
            except InvalidInput:
                raise
            except (AccelerateError, RuntimeError, ValueError, OSError, ImportError, TypeError, LookupError,
                    AttributeError) as exc:
                # Loading or the first run failed: that backend cannot serve this model here
                # (exporters fail on models they do not expect with any of these).
                reason = f"{type(exc).__name__}: {_one_line(exc)}"
                last_error = exc
                endpoint = None
        if endpoint is not None:
            endpoint.load_report = LoadReport(
                resolve_s=resolve_s, backend_load_s=backend_load_s, warmup_s=warmup_s,
                total_s=time.perf_counter() - started,
            )
            if runtime.details.get("fallback"):
                fallbacks.append(Fallback(
                    stage="device", tried=candidate.label(), reason=str(runtime.details["fallback"]),
                    next=f"{runtime.backend}/{runtime.device}/{runtime.precision}",
                ))
            endpoint.fallbacks = tuple(fallbacks)
            return endpoint
        assert reason is not None
        errors.append(f"{candidate.label()}: {reason}")
        if options.strict:
            raise BackendUnavailable(
                f"{candidate.label()} cannot run {model_id!r} (strict=True): {reason}"
            ) from last_error
        if index + 1 < len(candidates):
            nxt = candidates[index + 1]
            stage = "precision" if nxt.backend == candidate.backend and nxt.device == candidate.device else (
                "backend" if nxt.device == candidate.device else "device")
            fallbacks.append(Fallback(stage=stage, tried=candidate.label(), reason=reason, next=nxt.label()))
            # Auto choice skipping a backend that is not installed is expected, not news.
            level = logging.INFO if reason.startswith("not installed") else logging.WARNING
            log.log(level, "%s failed for %s (%s); falling back to %s", candidate.label(), model_id, reason, nxt.label())
    raise BackendUnavailable(f"no backend could run {model_id!r}: " + "; ".join(errors))


def _skip_reason(backend: Any, candidate: Any) -> str | None:
    probe = backend.probe()
    if not probe.available:
        return f"not installed: {probe.reason}"
    return backend.unsupported(device=candidate.device, precision=candidate.precision)


def _one_line(exc: BaseException) -> str:
    """The first line of an error, followed by its root cause's when it has one.

    Converters wrap the real failure in a generic one ("Couldn't get TorchScript module by
    tracing"); the root cause is what a user can act on.
    """
    text = str(exc).strip().splitlines()
    line = text[0][:300] if text else type(exc).__name__
    root = exc
    seen = {id(exc)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        root = nxt
    if root is not exc:
        cause = str(root).strip().splitlines()
        line += f" (caused by {type(root).__name__}: {cause[0][:300] if cause else ''})"
    return line


def _load_config(path: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    except ValueError as exc:
        raise UnsupportedTask(f"cannot read the config in {path}: {_one_line(exc)}") from exc


def describe_model_folder(folder: Path) -> tuple[str | None, str | None]:
    """``(family, default task)`` of the model in ``folder``, or ``(None, None)`` when no family
    claims its config (the store records them in a model's manifest)."""
    try:
        model_family = find_family(str(folder))
    except UnsupportedTask:
        return None, None
    return model_family.name, model_family.default_task


def resolve_model_weights(model_id: str, *, cache_dir: Path, weights: WeightsChoice = "auto") -> ResolvedWeights:
    """The weights folder of ``model_id`` as :func:`load` resolves it, without loading a backend.

    Raises:
        UnsupportedTask: no family knows the model.
        ModelNotAvailable: no source has the weights.
    """
    return resolve_weights(find_family(model_id), model_id, weights=weights, cache_dir=cache_dir)
