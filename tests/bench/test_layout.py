"""The benchmark's layout rules: no import cycles, a schema derived from the results, and
benchmark knowledge in bench profiles, not on the task handlers."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import ipfs_accelerate
from ipfs_accelerate.bench.results import ListOf, Measurement, Nullable, schema_of
from ipfs_accelerate.families import all_families
from ipfs_accelerate.families.base import TaskHandler
from ipfs_accelerate.families.bench_profile import BenchProfile, bench_profile, register_bench_profile

PACKAGE = Path(ipfs_accelerate.__file__).parent
BENCH_HOOKS = ("bench_inputs", "bench_params", "bench_references", "plain_baseline", "plain_calls",
               "plain_outputs", "reference_baselines")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports anywhere (functions too: a lazy import counts)."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found |= {t for t in [target, *(f"{target}.{a.name}" for a in node.names)] if t in modules}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
    return found - {name}


def test_the_benchmark_modules_import_no_module_that_imports_them_back() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in sources}
    graph = {_module_name(p): _imports(p, modules) for p in sources}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            if current == goal:
                return True
            if current not in seen:
                seen.add(current)
                todo += graph.get(current, set())
        return False

    bench = sorted(m for m in modules if m.startswith("ipfs_accelerate.bench."))
    for module in bench:
        back = sorted(d for d in graph[module] if reaches(d, module))
        assert not back, f"{module} imports {back}, which import it back"


def test_the_json_schema_follows_the_dataclass_fields() -> None:
    schema = schema_of(Measurement)
    assert list(schema) == [f.name for f in dataclasses.fields(Measurement)]
    assert schema["batch_size"] is int and schema["cut"] == ListOf(str)
    assert schema["wer"] == Nullable((int, float)) and schema["rates"].spec == Nullable((int, float))
    assert schema["latency"]["samples"] == ListOf((int, float))


def test_task_handlers_carry_no_benchmark_hooks() -> None:
    handlers = {task for family in all_families() for task in family.tasks.values()}
    assert handlers
    for handler_class in {TaskHandler, *handlers}:
        kept = [hook for hook in BENCH_HOOKS if hasattr(handler_class, hook)]
        assert not kept, f"{handler_class.__name__} still has {kept}: they belong in its BenchProfile"


def test_a_profile_serves_its_handler_and_the_classes_derived_from_it() -> None:
    class Base(TaskHandler):
        name, kind, torch_class = "base", "feature-extraction", "AutoModel"

        def example_inputs(self) -> list[str]:
            return ["a", "b"]

        def preprocess(self, inputs, params):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def forward(self, runtime, prepared, params):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def postprocess(self, raw, prepared, params):  # type: ignore[no-untyped-def]
            raise NotImplementedError

    class Derived(Base):
        pass

    class Unregistered(TaskHandler):
        example_inputs = Base.example_inputs
        preprocess, forward, postprocess = Base.preprocess, Base.forward, Base.postprocess

    @register_bench_profile(Base)
    class BaseBench(BenchProfile[Base]):
        def params(self) -> dict[str, object]:
            return {"labels": ["x"]}

    derived = bench_profile(Derived(weights=None, config=None))  # type: ignore[arg-type]
    assert type(derived) is BaseBench and derived.params() == {"labels": ["x"]}
    assert derived.inputs(3) == ["a", "b", "a"]  # the default repeats the examples
    plain = bench_profile(Unregistered(weights=None, config=None))  # type: ignore[arg-type]
    assert type(plain) is BenchProfile and plain.params() == {} and plain.references(2) is None
    assert plain.plain_baseline() is None and plain.reference_baselines() == []


def test_every_family_module_registers_profiles_for_its_own_handlers() -> None:
    from ipfs_accelerate.families import bench_profile as registry

    all_families()
    profiles = registry._PROFILES
    assert profiles
    for handler_class, profile_class in profiles.items():
        if handler_class.__module__.startswith("tests."):
            continue  # registered by a test above
        assert issubclass(handler_class, TaskHandler) and issubclass(profile_class, BenchProfile)
        assert profile_class.__module__ == handler_class.__module__, "a profile lives beside its handler"
