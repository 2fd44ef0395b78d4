"""The plain transformers baselines run on each task's benchmark inputs and agree with ours.

Every test loads the real baseline (transformers pipelines, model forwards, ``generate``) on
a tiny synthetic model and compares its outputs with our endpoint's on the same items and
parameters, as the benchmark does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.bench.baselines import plain_baseline
from ipfs_accelerate.bench.quality import agreement
from ipfs_accelerate.families._audio import Transcription
from ipfs_accelerate.families._vision import sample_video
from ipfs_accelerate.families.bench_profile import bench_profile
from tests.fixtures.models import cosine
from tests.fixtures.vision import gradient_image

CLIP = "openai/clip-vit-base-patch32"
CLAP = "laion/clap-htsat-unfused"
XCLIP = "microsoft/xclip-base-patch32"
VIDEOMAE = "MCG-NJU/videomae-base"
LLAVA = "llava-hf/llava-interleave-qwen-0.5b-hf"
LLAVA_NEXT = "ibm-granite/granite-vision-3.2-2b"


def _run_both(ep: Any, items: list[Any] | None = None, **params: Any) -> tuple[Any, Any, Any]:
    """Our result and the plain baseline's run on the same items and parsed params, plus the baseline."""
    handler = ep.handler
    parsed = ep.parse_params({**bench_profile(handler).params(), **params})
    items = bench_profile(handler).inputs(2) if items is None else items
    ours = ep.run_items(items, parsed)
    baseline = plain_baseline(handler)
    theirs = baseline.load("cpu")(items, parsed)
    return ours, theirs, baseline


def _assert_same_ranking(ours: list[Any], theirs: list[Any]) -> None:
    assert len(ours) == len(theirs)
    for mine, other in zip(ours, theirs, strict=True):
        assert [c["label"] for c in mine] == [c["label"] for c in other]
        assert [c["score"] for c in other] == pytest.approx([c["score"] for c in mine], abs=1e-5)
        assert sum(c["score"] for c in other) == pytest.approx(1.0, abs=1e-5)


# -- zero-shot classification ----------------------------------------------------------


def test_zero_shot_image_pipeline_gets_the_labels_and_template(load_tiny):
    ours, theirs, baseline = _run_both(load_tiny(CLIP, "classify"))
    assert baseline.name == "transformers pipeline('zero-shot-image-classification')"
    _assert_same_ranking(ours.outputs, list(theirs.outputs))
    agree = agreement(ours.outputs, list(theirs.outputs))
    assert agree is not None and agree["metric"] == "cosine" and agree["min"] > 0.9999
    assert agree["top1_match"] == 1.0 and agree["max_abs_diff"] < 1e-5


def test_zero_shot_items_with_their_own_labels_become_one_pipeline_call_per_run(load_tiny):
    ep = load_tiny(CLIP, "classify")
    a, b = gradient_image(64, 48), gradient_image(40, 56)
    own = ["a cat", "a dog"]
    items = [{"image": a, "labels": own}, {"image": b, "labels": own}, b, {"image": a, "labels": ["x", "y", "z"]}]
    params = ep.parse_params({"labels": ["red", "green", "blue"], "template": "a picture of {}"})
    calls = bench_profile(ep.handler).plain_calls(items, params)
    assert [(len(inputs), kw["candidate_labels"]) for inputs, kw in calls] == [
        (2, own), (1, ["red", "green", "blue"]), (1, ["x", "y", "z"])]
    assert all(kw["hypothesis_template"] == "a picture of {}" for _, kw in calls)
    ours, theirs, _ = _run_both(ep, items, labels=["red", "green", "blue"], template="a picture of {}")
    _assert_same_ranking(ours.outputs, list(theirs.outputs))


def test_zero_shot_audio_pipeline_takes_decoded_arrays(load_tiny):
    ep = load_tiny(CLAP, "classify")
    rate = 16000  # not CLAP's 48 kHz: the baseline hears the clip resampled as ours does
    t = np.arange(rate, dtype=np.float32) / rate
    items = [*bench_profile(ep.handler).inputs(1),
             {"audio": ((0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate), "labels": ["hum", "hiss"]}]
    ours, theirs, baseline = _run_both(ep, items)
    assert baseline.name == "transformers pipeline('zero-shot-audio-classification')"
    _assert_same_ranking(ours.outputs, list(theirs.outputs))


def test_zero_shot_video_has_a_forward_baseline(load_tiny):
    ep = load_tiny(XCLIP, "classify")
    items = [*bench_profile(ep.handler).inputs(1), {"video": sample_video(6, 40, 56), "labels": ["waves", "a road"]}]
    ours, theirs, baseline = _run_both(ep, items)
    assert baseline.name == "transformers forward" and "XCLIPModel" in baseline.note
    _assert_same_ranking(ours.outputs, list(theirs.outputs))
    agree = agreement(ours.outputs, list(theirs.outputs))
    assert agree is not None and agree["top1_match"] == 1.0


# -- embeddings of images, audio, video, texts of multimodal models --------------------


@pytest.mark.parametrize(
    ("model_id", "task", "method"),
    [
        (CLIP, "embed-image", "CLIPModel.get_image_features"),
        (CLIP, "embed-text", "CLIPModel.get_text_features"),
        (CLAP, "embed-audio", "ClapModel.get_audio_features"),
        (CLAP, "embed-text", "ClapModel.get_text_features"),
        (VIDEOMAE, "embed-video", "VideoMAEModel forward"),
    ],
)
def test_embedding_baselines_of_multimodal_models_give_our_vectors(load_tiny, model_id, task, method):
    ours, theirs, baseline = _run_both(load_tiny(model_id, task))
    assert baseline.name == "transformers forward" and baseline.note.startswith(method)
    assert len(theirs.outputs) == len(ours.outputs) == 2
    for mine, other in zip(ours.outputs, theirs.outputs, strict=True):
        assert np.shape(other) == np.shape(mine)
        assert cosine(mine, other) > 0.9999
        assert np.linalg.norm(other) == pytest.approx(np.linalg.norm(mine), rel=1e-4)
    agree = agreement(ours.outputs, list(theirs.outputs))
    assert agree is not None and agree["metric"] == "cosine" and agree["min"] > 0.9999


def test_video_embedding_baseline_pools_and_normalises_like_ours(load_tiny):
    ours, theirs, _ = _run_both(load_tiny(VIDEOMAE, "embed-video"), normalize=True)
    assert [np.linalg.norm(v) for v in theirs.outputs] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert all(cosine(a, b) > 0.9999 for a, b in zip(ours.outputs, theirs.outputs, strict=True))


# -- image-text generation -------------------------------------------------------------


@pytest.mark.parametrize("model_id", [LLAVA, LLAVA_NEXT])
def test_image_text_generate_baseline_counts_new_tokens(load_tiny, model_id):
    ours, theirs, baseline = _run_both(load_tiny(model_id), max_new_tokens=4)
    assert baseline.name == "transformers generate"
    assert list(theirs.outputs) == ours.outputs and all(isinstance(t, str) for t in theirs.outputs)
    assert theirs.figures["new_tokens"] == ours.timings["new_tokens"] > 0
    assert agreement(ours.outputs, list(theirs.outputs))["value"] == 1.0


# -- pipelines whose outputs are reshaped to ours --------------------------------------


def test_fill_mask_pipeline_candidates_take_our_shape(load_tiny):
    ep = load_tiny("prajjwal1/bert-tiny", "fill-mask")
    mask = ep.handler.tokenizer.mask_token
    items = [f"The capital of France is {mask}.", f"A {mask} sat on the {mask}."]
    ours, theirs, _ = _run_both(ep, items, top_k=3)
    assert [len(per_mask) for per_mask in theirs.outputs] == [1, 2]
    for mine, other in zip(ours.outputs, theirs.outputs, strict=True):
        for a, b in zip(mine, other, strict=True):
            assert [c["token_id"] for c in b] == [c["token_id"] for c in a]
            assert [c["token"] for c in b] == [c["token"] for c in a]
            assert [c["score"] for c in b] == pytest.approx([c["score"] for c in a], abs=1e-6)
    agree = agreement(ours.outputs, list(theirs.outputs))
    assert agree is not None and agree["min"] > 0.9999 and agree["top1_match"] == 1.0


def test_speech_pipeline_outputs_are_transcriptions(load_tiny):
    ours, theirs, _ = _run_both(load_tiny("facebook/wav2vec2-base-960h"))
    assert len(theirs.outputs) == len(ours.outputs)
    assert all(isinstance(t, Transcription) for t in theirs.outputs)
    agree = agreement(ours.outputs, list(theirs.outputs))
    assert agree is not None and agree["metric"] == "exact_match"


def test_whisper_pipeline_decodes_greedily_like_ours(real_whisper, speech_wav):
    """The pipeline's own default for Whisper is beam search; the baseline asks for ours."""
    path, _ = speech_wav
    params = real_whisper.parse_params({"max_new_tokens": 100})
    ((items, kwargs),) = bench_profile(real_whisper.handler).plain_calls([str(path)], params)
    assert items == [str(path)]
    assert kwargs["generate_kwargs"] == {"num_beams": 1, "max_new_tokens": 100, "do_sample": False,
                                         "repetition_penalty": 1.0, "temperature": None, "top_p": None,
                                         "top_k": None}
    ours = real_whisper(str(path), max_new_tokens=100).outputs
    theirs = plain_baseline(real_whisper.handler).load("cpu")([str(path)], params).outputs
    assert [t.text.strip() for t in theirs] == [o.text.strip() for o in ours]
