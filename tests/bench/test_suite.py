"""The seed suite measures what the targets read first: batch sizes and precisions per kind.

Pure checks on ``seed_suite``'s output (nothing is loaded or measured). Kinds come from the
registry, so no family is named.
"""

from __future__ import annotations

import pytest

from ipfs_accelerate.backends import get_backend
from ipfs_accelerate.bench.scenario import Case, Scenario, seed_suite
from ipfs_accelerate.bench.targets import TARGET_NEEDS, TargetNeeds
from ipfs_accelerate.families import all_families, get_family


def _kind(case: Case) -> str:
    model_family = get_family(case.family or "")
    return model_family.tasks[case.task or model_family.default_task].kind


def _is_default_task(case: Case) -> bool:
    return case.task == get_family(case.family or "").default_task


def _needs(case: Case) -> TargetNeeds | None:
    """The targets that read this case's model (its kind, and the weights they are stated for)."""
    needs = TARGET_NEEDS.get(_kind(case))
    return needs if needs is not None and needs.applies(weights=case.weights) else None


@pytest.fixture(scope="module")
def suite() -> Scenario:
    return seed_suite(device="cpu")


def _preferred(suite: Scenario) -> str:
    return suite.ordered()[0].backend


def test_target_kinds_get_the_targets_batch_sizes_first(suite):
    preferred = _preferred(suite)
    sizes = sorted({b for c in suite.cases for b in c.batch_sizes} - {32})
    bearing = {c.family for c in suite.cases if _needs(c) is not None}
    assert bearing, "some registered kind has targets"
    for family in bearing:
        needs = _needs(next(c for c in suite.cases if c.family == family))
        assert needs is not None
        first = [c for c in suite.cases if c.family == family and c.priority == 0]
        assert len(first) == 1, family
        case = first[0]
        assert case.backend == preferred and case.precision == "fp32" and _is_default_task(case)
        assert case.input_set == needs.input_set, family
        if needs.input_set is None:
            # The smallest batch first (a larger batch's cost is predicted from it), then the targets'.
            assert case.batch_sizes == tuple(sorted({sizes[0], *needs.batch_sizes})), family
        else:
            # A target on its own input set: only its batch sizes on that set; the default set
            # runs later at the same sizes too (the labelled second row).
            assert case.batch_sizes == needs.batch_sizes, family
            default_set = [c for c in suite.cases if c.family == family and c.input_set is None
                           and c.backend == preferred and c.precision == "fp32" and _is_default_task(c)]
            assert len(default_set) == 1 and set(needs.batch_sizes) <= set(default_set[0].batch_sizes), family
        lower = [c for c in suite.cases if c.family == family and c.priority == 1]
        expected = needs.on_cpu([p for p in needs.precisions
                                 if p != "fp32" and get_backend(preferred).unsupported(device="cpu", precision=p) is None])
        assert sorted(c.precision for c in lower) == sorted(expected), family
        assert all(c.backend == preferred and c.batch_sizes == needs.batch_sizes
                   and c.input_set == needs.input_set for c in lower)


def test_the_issue_batch_sizes_are_in_the_table():
    assert TARGET_NEEDS["feature-extraction"].batch_sizes == (32,)
    assert TARGET_NEEDS["feature-extraction"].input_type == "str"
    assert TARGET_NEEDS["feature-extraction"].weights == "pretrained"  # "MiniLM (real weights)"
    assert TARGET_NEEDS["feature-extraction"].input_set == "uniform"  # 512 sentences of 12-20 words
    assert TARGET_NEEDS["text-generation"].batch_sizes == (1, 8)
    assert "int8" in TARGET_NEEDS["text-generation"].precisions
    assert TARGET_NEEDS["automatic-speech-recognition"].batch_sizes == (1,)


def test_target_cases_run_before_breadth_and_breadth_before_the_rest(suite):
    ordered = suite.ordered()
    priorities = [c.priority for c in ordered]
    assert priorities == sorted(priorities)
    for case in ordered:
        bearing = _needs(case) is not None and _is_default_task(case)
        if case.priority in (0, 1):
            assert bearing, case.case_id
        elif case.priority == 2:
            # Every other family once, fp32, the smallest batch size, preferred backend.
            assert not bearing and case.precision == "fp32" and case.batch_sizes == (1,), case.case_id
        elif case.priority == 3:
            # The targets' lower precisions on the other backends, at the targets' batch sizes.
            needs = _needs(case)
            assert needs is not None and bearing and case.backend != ordered[0].backend, case.case_id
            assert case.precision in needs.precisions and case.precision != "fp32", case.case_id
            assert case.batch_sizes == needs.batch_sizes, case.case_id
    breadth = {c.family for c in ordered if c.priority <= 2}
    assert breadth == {s.name for s in all_families()}
    # ONNX Runtime's int8 generation is measured right after breadth when it is installed.
    if "onnxruntime" in {c.backend for c in ordered} and ordered[0].backend != "onnxruntime":
        assert any(c.priority == 3 and c.backend == "onnxruntime" and c.precision == "int8"
                   and _kind(c) == "text-generation" for c in ordered)


def test_every_case_id_is_unique_and_every_target_figure_is_scheduled(suite):
    assert len({c.case_id for c in suite.cases}) == len(suite.cases)
    for model_family in all_families():
        default = next(c for c in suite.cases if c.family == model_family.name and _is_default_task(c))
        needs = _needs(default)
        if needs is None:
            continue
        for backend in {c.backend for c in suite.cases if c.family == model_family.name}:
            offered = [p for p in needs.precisions if get_backend(backend).unsupported(device="cpu", precision=p) is None]
            for precision in needs.on_cpu(offered):
                measured = {b for c in suite.cases if c.family == model_family.name and c.backend == backend
                            and c.precision == precision and _is_default_task(c) for b in c.batch_sizes}
                assert set(needs.batch_sizes) <= measured, (model_family.name, backend, precision)


def test_the_table_decides_not_the_family():
    # With no targets there is nothing to put first: breadth leads.
    plain = seed_suite(device="cpu", target_needs={}, extra_tasks=False)
    assert {c.priority for c in plain.cases} >= {2, 4}
    assert not {c.priority for c in plain.cases} & {0, 1, 3}
    # A made-up need for another kind moves that kind's cases first, at its batch sizes.
    kind = "text2text-generation"
    needs = {kind: TargetNeeds(kind=kind, batch_sizes=(4,), precisions=("fp32",))}
    made_up = seed_suite(device="cpu", target_needs=needs, batch_sizes=(2, 6), extra_tasks=False)
    first = [c for c in made_up.cases if c.priority == 0]
    assert first and all(_kind(c) == kind and c.batch_sizes == (2, 4) for c in first)
    assert not [c for c in made_up.cases if c.priority == 1]  # fp32 only: no lower precision needed
    assert all(c.batch_sizes == (2,) for c in made_up.cases if c.priority == 2)


def test_bf16_stands_in_for_fp16_in_generation_on_a_cpu():
    needs = TARGET_NEEDS["text-generation"]
    assert ("bf16", "fp16") in needs.replaces
    assert needs.on_cpu(["fp16", "bf16", "int8"]) == ["bf16", "int8"]  # offers both: bf16 in fp16's place
    assert needs.on_cpu(["fp16", "int8"]) == ["fp16", "int8"]  # no native bf16: fp16 stays
    assert needs.on_cpu(["bf16", "int8"]) == ["int8"]  # no fp16 to replace (torch on a CPU): not measured
    assert TARGET_NEEDS["feature-extraction"].on_cpu(["bf16", "int8"]) == ["bf16", "int8"]  # no replacement there


def test_generation_cases_follow_the_backends_bf16(suite, monkeypatch):
    """On this CPU the suite measures OpenVINO generation in bf16 where bf16 is native, in
    fp16 where it is not (simulated through the capability check), never both."""
    from ipfs_accelerate.backends.openvino import backend as openvino_backend

    def generation_precisions(scenario: Scenario) -> set[str]:
        return {c.precision for c in scenario.cases if c.backend == "openvino" and _is_default_task(c)
                and _kind(c) == "text-generation"}

    if "openvino" not in {c.backend for c in suite.cases}:
        pytest.skip("OpenVINO is not installed")
    native = get_backend("openvino").unsupported(device="cpu", precision="bf16") is None
    assert generation_precisions(suite) & {"fp16", "bf16"} == ({"bf16"} if native else {"fp16"})
    assert not [c for c in suite.cases if c.backend == "torch" and c.precision == "bf16"
                and _kind(c) == "text-generation"]
    monkeypatch.setattr(openvino_backend, "native_bf16", lambda core, device: False)
    assert generation_precisions(seed_suite(device="cpu")) & {"fp16", "bf16"} == {"fp16"}
