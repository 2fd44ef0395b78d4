"""What a benchmark measures: scenarios of cases, from flags, a YAML/TOML file or a suite.

A :class:`Case` is one model and task on one backend and precision, measured at one or
more batch sizes. A :class:`Scenario` is a list of cases plus run-wide settings (a time
budget, baselines, the concurrency test). Cases run in ``priority`` order (lower first), so
a time budget cuts the least important ones.

A scenario file (YAML, TOML or JSON) looks like this::

    name: tiny
    budget_s: 120          # optional: the whole run's time budget
    min_runs: 3            # defaults for every case (each case may override them)
    min_seconds: 1.0
    baselines: true
    concurrency: 16        # callers in the concurrency test; 0 skips it
    cases:
      - model: gpt2
        task: generate
        backends: [torch]          # or backend: torch
        precisions: [fp32, int8]   # or precision: fp32
        batch_sizes: [1, 8]        # or batch_size: 1
        weights: synthetic
        config_overrides: {n_layer: 2, n_embd: 32, n_head: 2}
        params: {max_new_tokens: 8}

``--suite seed`` (:func:`seed_suite`) is built from the registry: every family's default
checkpoint and tasks, on every backend that works here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._exceptions import InvalidInput
from .._types import BackendChoice, PrecisionChoice, WeightsChoice, WeightsKind, backend_choice, precision_choice
from ..engine.options import BACKENDS, PRECISIONS, WEIGHTS
from .target_needs import TARGET_NEEDS, TargetNeeds

if TYPE_CHECKING:
    from ..families.base import TaskHandler

__all__ = ["SUITES", "Case", "Scenario", "from_flags", "load_scenario", "seed_suite"]

InputsBuilder = Callable[["TaskHandler", int], list[Any]]
ReferencesBuilder = Callable[["TaskHandler", int], list[str]]

_CASE_KEYS = {
    "model", "task", "backend", "backends", "precision", "precisions", "batch_size", "batch_sizes",
    "weights", "family", "config_overrides", "params", "min_runs", "min_seconds", "max_seconds",
    "warmup_runs", "strict", "priority", "device",
}
_DEFAULT_KEYS = {"min_runs", "min_seconds", "max_seconds", "warmup_runs", "device", "weights",
                 "batch_sizes", "backends", "precisions", "strict"}
_TOP_KEYS = {"name", "description", "budget_s", "baselines", "concurrency", "concurrency_rounds", "paired_rounds",
             "cases", "defaults"} | _DEFAULT_KEYS


@dataclasses.dataclass(frozen=True, kw_only=True)
class Case:
    """One model and task on one backend and precision, measured at each batch size.

    Attributes:
        model_id: a hub id, a checkpoint a package ships, or a local directory.
        task: the task; None takes the family's default.
        backend: ``"auto"`` or a backend name.
        precision: ``"fp32"``, ``"fp16"``, ``"bf16"``, ``"int8"`` or ``"auto"``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        batch_sizes: the batch sizes to measure, in order.
        weights: ``"auto"``, ``"pretrained"`` or ``"synthetic"``.
        family: force a family.
        config_overrides: changes to the published config (synthetic weights only).
        params: the task's parameters for every call.
        min_runs: timed runs at least (after warm-up) …
        min_seconds: … and at least this many seconds of them (both must hold, unless a
            time budget or ``max_seconds`` cuts the measurement; the report says so).
        max_seconds: a hard cap on one measurement's timed runs (None: only the budget).
        warmup_runs: untimed runs before the timed ones (the cold first call is extra).
        strict: fail instead of falling back to another backend or precision.
        priority: lower runs first; a time budget cuts the highest numbers first.
        input_set: the bench profile's input set by name (``BenchProfile.input_sets``); None:
            its default. A target names the set it is stated on (``TargetNeeds.input_set``).
        inputs: builds ``n`` inputs from the handler; None uses the handler's bench profile's ``inputs(n)``.
        references: builds the expected output text of each of the ``n`` inputs, for a
            word error rate of ours and every baseline; None uses
            the bench profile's ``references(n)`` when ``inputs`` is None (and no WER otherwise).
    """

    model_id: str
    task: str | None = None
    backend: BackendChoice = "auto"
    precision: PrecisionChoice = "fp32"
    device: str = "auto"
    batch_sizes: tuple[int, ...] = (1,)
    weights: WeightsChoice = "auto"
    family: str | None = None
    config_overrides: Mapping[str, Any] | None = None
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    min_runs: int = 3
    min_seconds: float = 1.0
    max_seconds: float | None = None
    warmup_runs: int = 1
    strict: bool = False
    priority: int = 0
    input_set: str | None = None
    # Builders of inputs are code, not data: the JSON report leaves them out.
    inputs: InputsBuilder | None = dataclasses.field(default=None, metadata={"json": False})
    references: ReferencesBuilder | None = dataclasses.field(default=None, metadata={"json": False})

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str) or not self.model_id:
            raise InvalidInput("a case needs a model id")
        _one_of("backend", self.backend, BACKENDS)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("weights", self.weights, WEIGHTS)
        sizes = tuple(self.batch_sizes)
        if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
            raise InvalidInput(f"batch sizes must be positive integers; got {self.batch_sizes!r}")
        object.__setattr__(self, "batch_sizes", sizes)
        _count("min_runs", self.min_runs, 1)
        if not isinstance(self.min_seconds, (int, float)) or self.min_seconds < 0:
            raise InvalidInput(f"min_seconds must be ≥ 0; got {self.min_seconds!r}")
        if self.max_seconds is not None and (not isinstance(self.max_seconds, (int, float)) or self.max_seconds <= 0):
            raise InvalidInput(f"max_seconds must be positive; got {self.max_seconds!r}")
        _count("warmup_runs", self.warmup_runs, 0)
        if self.config_overrides and self.weights != "synthetic":
            raise InvalidInput(f"{self.model_id}: config_overrides need weights: synthetic")

    @property
    def case_id(self) -> str:
        """A readable unique id: ``model:task:backend:precision:b<batch sizes>``."""
        sizes = "-".join(str(b) for b in self.batch_sizes)
        on = f":{self.input_set}" if self.input_set else ""
        return f"{self.model_id}:{self.task or 'default'}:{self.backend}:{self.precision}:b{sizes}{on}"

    @property
    def model_key(self) -> str:
        """Identifies the model, task, device and input set: cases with the same key share baselines."""
        overrides = json.dumps(dict(self.config_overrides or {}), sort_keys=True, default=str)
        on = f"|{self.input_set}" if self.input_set else ""
        return f"{self.model_id}|{self.task or ''}|{self.weights}|{self.family or ''}|{self.device}|{overrides}{on}"

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("json", True)}
        out["config_overrides"] = dict(self.config_overrides or {})
        out["params"] = dict(self.params)
        out["batch_sizes"] = list(self.batch_sizes)
        out["case_id"] = self.case_id
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scenario:
    """A benchmark run: cases plus run-wide settings.

    Attributes:
        name: shown in the report.
        cases: what to measure.
        description: one paragraph for the report.
        budget_s: the whole run's time budget in seconds (None: unbounded). Measurements
            shrink their ``min_seconds`` to fit and the lowest-priority cases are skipped
            once it is spent; the report lists every cut.
        baselines: measure the plain transformers fp32 baseline and the families'
            reference baselines on the same inputs.
        concurrency: callers in the concurrency test (single inputs, at once, to one
            endpoint through the dynamic batcher, against one-by-one plain transformers);
            0 skips it. It runs on the first embedding case.
        concurrency_rounds: timed rounds of the concurrency test.
        paired_rounds: where a target compares ours with a baseline (the plain one,
            ``TargetNeeds.versus_plain``, or the reference ones,
            ``TargetNeeds.versus_reference``), rounds that time the two back to back, the
            order alternating, after both were measured; the target reads the median of
            the rounds' ratios and their spread. 0 skips them (the target then reads
            the ratio of the two measurements).
        suite: the suite's name when built from one.
    """

    name: str
    cases: tuple[Case, ...]
    description: str = ""
    budget_s: float | None = None
    baselines: bool = True
    concurrency: int = 0
    concurrency_rounds: int = 5
    paired_rounds: int = 4
    suite: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cases", tuple(self.cases))
        if self.budget_s is not None and (isinstance(self.budget_s, bool) or not isinstance(self.budget_s, (int, float))
                                         or self.budget_s <= 0):
            raise InvalidInput(f"budget_s must be positive; got {self.budget_s!r}")
        if not isinstance(self.baselines, bool):
            raise InvalidInput(f"baselines must be true or false; got {self.baselines!r}")
        _count("concurrency", self.concurrency, 0)
        _count("concurrency_rounds", self.concurrency_rounds, 1)
        _count("paired_rounds", self.paired_rounds, 0)
        ids = [c.case_id for c in self.cases]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise InvalidInput(f"duplicate cases: {', '.join(dupes)}")

    def ordered(self) -> list[Case]:
        """The cases in run order: by priority, then as listed."""
        return sorted(self.cases, key=lambda c: c.priority)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "budget_s": self.budget_s,
            "baselines": self.baselines, "concurrency": self.concurrency,
            "concurrency_rounds": self.concurrency_rounds, "paired_rounds": self.paired_rounds, "suite": self.suite,
            "cases": [c.to_dict() for c in self.cases],
        }


def _count(name: str, value: object, least: int) -> None:
    """A whole number ≥ ``least`` as written (2.5, "four" and true are refused, not truncated)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidInput(f"{name} must be an integer ≥ {least}; got {value!r}")


def _one_of(name: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise InvalidInput(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _as_list(entry: Mapping[str, Any], single: str, plural: str, default: Sequence[Any]) -> list[Any]:
    if single in entry and plural in entry:
        raise InvalidInput(f"give either {single} or {plural}, not both")
    if plural in entry:
        value = entry[plural]
        return list(value) if isinstance(value, (list, tuple)) else [value]
    if single in entry:
        return [entry[single]]
    return list(default)


def scenario_from_dict(data: Mapping[str, Any], *, name: str = "scenario") -> Scenario:
    """Build a scenario from a parsed YAML/TOML/JSON document (see the module docstring).

    Raises:
        InvalidInput: an unknown key or an invalid value.
    """
    if not isinstance(data, Mapping):
        raise InvalidInput("a scenario file must hold a mapping at the top")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise InvalidInput(f"unknown scenario key(s): {', '.join(unknown)}; known: {', '.join(sorted(_TOP_KEYS))}")
    defaults: dict[str, Any] = dict(data.get("defaults") or {})
    defaults.update({k: data[k] for k in _DEFAULT_KEYS if k in data})
    bad = sorted(set(defaults) - _DEFAULT_KEYS)
    if bad:
        raise InvalidInput(f"unknown default(s): {', '.join(bad)}")
    entries = data.get("cases")
    if not isinstance(entries, list) or not entries:
        raise InvalidInput("a scenario needs a non-empty list of cases")
    cases: list[Case] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise InvalidInput(f"case #{index} must be a mapping")
        unknown = sorted(set(entry) - _CASE_KEYS)
        if unknown:
            raise InvalidInput(f"case #{index}: unknown key(s): {', '.join(unknown)}")
        if "model" not in entry:
            raise InvalidInput(f"case #{index} has no model")
        backends = _as_list(entry, "backend", "backends", defaults.get("backends", ["auto"]))
        precisions = _as_list(entry, "precision", "precisions", defaults.get("precisions", ["fp32"]))
        sizes = _as_list(entry, "batch_size", "batch_sizes", defaults.get("batch_sizes", [1]))
        for backend in backends:
            for precision in precisions:
                kwargs: dict[str, Any] = {
                    "model_id": str(entry["model"]), "task": entry.get("task"), "backend": backend,
                    "precision": precision, "batch_sizes": tuple(sizes),
                    "config_overrides": entry.get("config_overrides"), "params": dict(entry.get("params") or {}),
                    "family": entry.get("family"), "priority": int(entry.get("priority", 0)),
                }
                for key in ("min_runs", "min_seconds", "max_seconds", "warmup_runs", "device", "weights", "strict"):
                    if key in entry:
                        kwargs[key] = entry[key]
                    elif key in defaults:
                        kwargs[key] = defaults[key]
                cases.append(Case(**kwargs))
    # Passed as written, so that Scenario's own check gives the typed error (no truncation, no
    # truthy string) and its defaults stay the only ones.
    settings = {key: data[key] for key in ("budget_s", "baselines", "concurrency", "concurrency_rounds",
                                           "paired_rounds") if key in data}
    return Scenario(name=str(data.get("name", name)), description=str(data.get("description", "")),
                    cases=tuple(cases), **settings)


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario from a ``.yaml``/``.yml``, ``.toml`` or ``.json`` file.

    Raises:
        InvalidInput: the file is missing, unreadable or invalid.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read scenario file {path}: {exc}") from exc
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise InvalidInput(f"scenario files are .yaml, .yml, .toml or .json; got {path.name}")
    except InvalidInput:
        raise
    except Exception as exc:  # any parser error is the file's fault
        raise InvalidInput(f"cannot parse scenario file {path}: {exc}") from exc
    return scenario_from_dict(data, name=path.stem)


def from_flags(
    *,
    models: Iterable[str],
    task: str | None = None,
    backends: Sequence[BackendChoice] = ("auto",),
    precisions: Sequence[PrecisionChoice] = ("fp32",),
    batch_sizes: Sequence[int] = (1,),
    weights: WeightsChoice = "auto",
    device: str = "auto",
    config_overrides: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    min_runs: int = 3,
    min_seconds: float = 1.0,
    budget_s: float | None = None,
    baselines: bool = True,
    concurrency: int = 0,
    input_set: str | None = None,
) -> Scenario:
    """A scenario from command-line choices: every model × backend × precision."""
    cases = [
        Case(model_id=model, task=task, backend=backend, precision=precision, device=device,
             batch_sizes=tuple(batch_sizes), weights=weights, config_overrides=config_overrides,
             params=dict(params or {}), min_runs=min_runs, min_seconds=min_seconds, input_set=input_set)
        for model in models for backend in backends for precision in precisions
    ]
    if not cases:
        raise InvalidInput("nothing to measure: pass --model, --scenario or --suite")
    return Scenario(name="command line", cases=tuple(cases), budget_s=budget_s, baselines=baselines,
                    concurrency=concurrency)


@functools.cache
def _estimated_params(family: str, model_id: str) -> int:
    """Parameters of a family's checkpoint, counted on the meta device (no memory, no files).

    Cached: building the larger architectures, even on the meta device, takes seconds.
    """
    try:
        import torch
        import transformers

        from ..families import get_family

        model_family = get_family(family)
        config = model_family.checkpoint(model_id).config()
        with torch.device("meta"):
            model = getattr(transformers, model_family.synthetic_class)(config)
        return int(sum(p.numel() for p in model.parameters()))
    except Exception:  # noqa: BLE001 - an estimate only orders the cases
        return 10**12


def seed_suite(
    *,
    device: str = "auto",
    batch_sizes: Sequence[int] = (1, 8),
    budget_s: float | None = 840.0,
    min_runs: int = 5,
    min_seconds: float = 3.0,
    concurrency: int = 64,
    extra_tasks: bool = True,
    target_needs: Mapping[str, TargetNeeds] | None = None,
) -> Scenario:
    """Every registered family on every backend that works here (the seed's set).

    For each family: its default checkpoint, with real weights where an installed package
    ships them and synthetic weights from the published config otherwise (labelled); its
    default task, and its other tasks at a lower priority; every backend whose probe says
    it is available and which supports the device; precision fp32, plus fp16 on CUDA (and
    on a CPU where a target reads it) and int8 where the backend supports them.

    What the performance targets read comes first, so that a time budget cuts it last.
    A default task whose kind has targets (``target_needs``, by default
    :data:`ipfs_accelerate.bench.targets.TARGET_NEEDS`) is *target-bearing*. Run order:

    0. target-bearing tasks, fp32, preferred backend, at the smallest batch size and the
       targets' batch sizes (the smallest first: the runner predicts a larger batch's
       cost from it and skips one that would not fit);
    1. the same at the targets' lower precisions (int8; fp16 for generation, or bf16 in its place
       on a CPU with native bf16) and batch sizes;
    2. every other family's default task, fp32, preferred backend, smallest batch size;
    3. the targets' lower precisions on the other backends, at the targets' batch sizes;
    4. the other batch sizes, fp32, preferred backend;
    5. fp32 on the other backends (at the batch sizes and the targets' ones);
    6. the other precisions and batch sizes (int8, fp16 on CUDA);
    7. the other tasks on the preferred backend, then 8. on the other backends.

    Within a priority, smaller models run first (parameters counted on the meta device), so
    that a budget cut falls on the most expensive cases.
    """
    from .._info import families
    from ..backends import REGISTRY, get_backend
    from ..engine.choice import PREFERENCE, resolve_device
    from ..families import all_families

    needs_by_kind = TARGET_NEEDS if target_needs is None else target_needs
    resolved = resolve_device(device)
    kind = "cuda" if resolved.startswith("cuda") else "cpu"
    order = [b for b in PREFERENCE[kind] if b in REGISTRY] + [b for b in REGISTRY if b not in PREFERENCE[kind]]
    backends = []
    for name in order:
        backend = get_backend(name)
        if backend.probe().available and backend.unsupported(device=resolved, precision="fp32") is None:
            backends.append(name)
    sizes = sorted(set(batch_sizes))
    if not sizes:
        raise InvalidInput("the seed suite needs at least one batch size")
    packaged = {info.name: set(info.packaged) for info in families()}
    entries: list[tuple[int, int, int, Case]] = []
    for s_index, model_family in enumerate(all_families()):
        model = model_family.default_checkpoint
        weights: WeightsKind = "pretrained" if model in packaged.get(model_family.name, set()) else "synthetic"
        params = _estimated_params(model_family.name, model)
        tasks = [model_family.default_task] + ([t for t in model_family.tasks if t != model_family.default_task] if extra_tasks else [])
        needs = needs_by_kind.get(model_family.tasks[model_family.default_task].kind)
        if needs is not None and not needs.applies(weights=weights):
            needs = None  # e.g. embedding targets are stated for real weights

        def add(priority: int, task: str, backend: str, precision: str, batches: Iterable[int],
                model: str = model, weights: WeightsKind = weights, params: int = params, s_index: int = s_index,
                family: str = model_family.name, input_set: str | None = None) -> None:
            chosen = tuple(sorted(set(batches)))
            if not chosen:
                return
            entries.append((priority, params, s_index, Case(
                model_id=model, task=task, backend=backend_choice(backend), precision=precision_choice(precision),
                device=device, batch_sizes=chosen, weights=weights, family=family,
                min_runs=min_runs, min_seconds=min_seconds, strict=True, priority=priority, input_set=input_set,
            )))

        target_sizes = set(needs.batch_sizes) if needs is not None else set()
        # The target's own input set where it names one (its cases are apart from the default set's).
        target_set = needs.input_set if needs is not None else None
        target_precisions = set(needs.precisions) if needs is not None else set()
        every_size = set(sizes) | target_sizes
        for b_index, name in enumerate(backends):
            backend = get_backend(name)
            # fp16 on a CPU only where a target reads it (fp16 weights halve a bandwidth-bound
            # decode's bytes); elsewhere CPUs compute it in f32 at fp32's speed.
            fp16 = kind == "cuda" or "fp16" in target_precisions
            # bf16 where a target reads it: AMX/AVX512-BF16 CPUs run it near twice fp32 (docs/benchmark.md).
            bf16 = ["bf16"] if "bf16" in target_precisions else []
            lower = [p for p in ((["fp16"] if fp16 else []) + bf16 + ["int8"])
                     if backend.unsupported(device=resolved, precision=p) is None]
            if kind == "cpu" and needs is not None:
                lower = needs.on_cpu(lower)
            if b_index == 0:
                if target_set is not None:
                    add(0, model_family.default_task, name, "fp32", target_sizes, input_set=target_set)
                    # The default set at the targets' batch sizes too: a second, labelled row.
                    add(4, model_family.default_task, name, "fp32", set(sizes) | target_sizes)
                else:
                    first = {sizes[0]} | target_sizes
                    add(0 if needs is not None else 2, model_family.default_task, name, "fp32", first)
                    add(4, model_family.default_task, name, "fp32", set(sizes) - first)
            else:
                add(5, model_family.default_task, name, "fp32", every_size)
                if target_set is not None:
                    add(5, model_family.default_task, name, "fp32", target_sizes, input_set=target_set)
            for precision in lower:
                if precision in target_precisions:
                    # The targets read every backend's lower precisions: the preferred
                    # backend for fp32 need not be the fastest in int8 (docs/benchmark.md).
                    add(1 if b_index == 0 else 3, model_family.default_task, name, precision, target_sizes,
                        input_set=target_set)
                    add(6, model_family.default_task, name, precision, (set(sizes) if b_index == 0 else every_size) - target_sizes)
                else:
                    add(6, model_family.default_task, name, precision, sizes if b_index == 0 else every_size)
            for task in tasks[1:]:
                add(7 if b_index == 0 else 8, task, name, "fp32", sizes)
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    return Scenario(
        name="seed", suite="seed", cases=tuple(e[3] for e in entries), budget_s=budget_s, baselines=True,
        concurrency=concurrency,
        description=(
            "Every registered family's default checkpoint and tasks on every backend that works on this "
            "machine, fp32 plus the lower precisions each backend supports; real weights where an installed "
            "package ships them, synthetic weights from the published config otherwise. What the performance "
            "targets need first (their batch sizes and precisions on the preferred backend), then breadth: "
            "every other family at the smallest batch size before the larger batch sizes, other backends "
            "and precisions."
        ),
    )


SUITES: dict[str, Callable[..., Scenario]] = {"seed": seed_suite}
