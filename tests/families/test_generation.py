"""Generation shared by GPT-2, OPT (LLaMA slot) and T5, on tiny synthetic models."""

from __future__ import annotations

import pytest

import ipfs_accelerate as ia

CAUSAL = ["gpt2", "facebook/opt-125m"]
ALL = [*CAUSAL, "google/t5-efficient-tiny"]
PROMPTS = ["Hello, my name is", "The capital of France is a city that"]


@pytest.mark.parametrize("model_id", ALL)
def test_greedy_is_deterministic_and_respects_max_new_tokens(load_tiny, model_id):
    ep = load_tiny(model_id)
    a = ep(PROMPTS, max_new_tokens=6)
    b = ep(PROMPTS, max_new_tokens=6)
    assert a.outputs == b.outputs
    assert all(isinstance(t, str) for t in a.outputs)
    assert 0 < a.timings["new_tokens"] <= 6 * len(PROMPTS)
    assert a.timings["tokens_per_s"] > 0 and a.timings["time_to_first_token_s"] > 0
    one = ep(PROMPTS, max_new_tokens=1)
    assert 0 < one.timings["new_tokens"] <= len(PROMPTS)
    assert all(a_text.startswith(one_text.strip()[:3]) or not one_text.strip()
               for a_text, one_text in zip((t.strip() for t in a.outputs), one.outputs, strict=True))


@pytest.mark.parametrize("model_id", ALL)
def test_seeded_sampling_is_reproducible(load_tiny, model_id):
    ep = load_tiny(model_id)
    kw = {"max_new_tokens": 8, "temperature": 1.5, "top_k": 50, "top_p": 0.95}
    first = ep(PROMPTS, seed=7, **kw).outputs
    assert ep(PROMPTS, seed=7, **kw).outputs == first
    others = [ep(PROMPTS, seed=s, **kw).outputs for s in (8, 9, 10)]
    assert any(o != first for o in others)


@pytest.mark.parametrize("model_id", CAUSAL)
def test_batch_equals_prompts_one_by_one(load_tiny, model_id):
    ep = load_tiny(model_id)
    batch = ep(PROMPTS, max_new_tokens=6).outputs
    single = [ep(p, max_new_tokens=6).outputs[0] for p in PROMPTS]
    assert batch == single


@pytest.mark.parametrize("model_id", ALL)
def test_stop_strings_end_the_output(load_tiny, model_id):
    ep = load_tiny(model_id)
    full = ep(PROMPTS[0], max_new_tokens=12).outputs[0]
    if len(full.strip()) < 4:
        pytest.skip("this random model stops too early to cut anything")
    stop = full.strip()[2:4]
    cut = ep(PROMPTS[0], max_new_tokens=12, stop=[stop]).outputs[0]
    assert stop not in cut
    assert full.startswith(cut)


@pytest.mark.parametrize("model_id", ALL)
def test_streaming_yields_the_same_text(load_tiny, model_id):
    ep = load_tiny(model_id)
    pieces = list(ep.stream(PROMPTS[0], max_new_tokens=8))
    assert len(pieces) >= 1
    assert "".join(pieces).strip() == ep(PROMPTS[0], max_new_tokens=8).outputs[0].strip()


def test_streaming_takes_one_prompt(load_tiny):
    with pytest.raises(ia.InvalidInput, match="exactly one input"):
        load_tiny("gpt2").stream(PROMPTS)


def test_max_new_tokens_capped_by_context_window(load_tiny):
    ep = load_tiny("gpt2", config_overrides={"n_positions": 16})
    res = ep("one two three four five six seven eight", max_new_tokens=50)
    assert any("max_new_tokens capped from 50" in n for n in res.provenance.notes)
    assert res.timings["new_tokens"] <= 16


def test_long_prompt_truncated_or_refused(load_tiny):
    ep = load_tiny("gpt2", config_overrides={"n_positions": 16})
    long_prompt = "word " * 40
    res = ep(long_prompt, max_new_tokens=2)
    assert any("truncated" in n for n in res.provenance.notes)
    with pytest.raises(ia.InvalidInput, match="longer than the model's window"):
        ep(long_prompt, max_new_tokens=2, truncate=False)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": 0}, "top_p"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_k": -3}, "top_k"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"stop": [""]}, "stop"),
        ({"seed": "x"}, "seed"),
        ({"beams": 3}, "unknown parameter"),
    ],
)
def test_bad_parameters_are_invalid_input(load_tiny, params, message):
    ep = load_tiny("gpt2")
    with pytest.raises(ia.InvalidInput, match=message):
        ep("hello", **params)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [([], "empty batch"), ([""], "is empty"), (["  "], "is empty"), (["ok", 3], "must be a string"), (None, "string"),
     (["ok", "a\ud800b"], r"prompt #1 is not valid Unicode: surrogates not allowed at character 1")],
)
def test_bad_prompts_are_invalid_input(load_tiny, inputs, message):
    with pytest.raises(ia.InvalidInput, match=message):
        load_tiny("gpt2")(inputs)


def test_llama_architecture_loads_through_the_opt_family(cache_dir, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from ipfs_accelerate.families._vocab import gpt2_tokenizer

    config = LlamaConfig(vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=50256, eos_token_id=50256)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    gpt2_tokenizer(tmp_path)
    ep = ia.load(str(tmp_path), backend="torch", cache_dir=cache_dir)
    res = ep(PROMPTS, max_new_tokens=4)
    assert res.provenance.family == "opt"
    assert res.provenance.weights == "pretrained"  # an unmarked local folder: we cannot know otherwise
    assert res.provenance.source == f"dir:{tmp_path.resolve()}"
    assert len(res.outputs) == 2


def test_masked_suppression_matches_transformers_processors():
    import torch
    from transformers import GenerationConfig
    from transformers.generation.logits_process import (
        SuppressTokensAtBeginLogitsProcessor,
        SuppressTokensLogitsProcessor,
    )

    from ipfs_accelerate.generation import masked_suppression

    class Model:  # anything with a generation_config, as optimum's and transformers' models have
        generation_config = GenerationConfig(suppress_tokens=[1, 5, 99, 150], begin_suppress_tokens=[7, 2])

    model = Model()
    ours = masked_suppression(model)
    assert model.generation_config.suppress_tokens is None and model.generation_config.begin_suppress_tokens is None
    assert [p.__class__.__mro__[1] for p in ours] == [SuppressTokensAtBeginLogitsProcessor, SuppressTokensLogitsProcessor]
    again = masked_suppression(model)  # the lists are remembered after they moved
    assert [p.__dict__.keys() for p in again] == [p.__dict__.keys() for p in ours]
    theirs = [SuppressTokensAtBeginLogitsProcessor([7, 2], begin_index=3), SuppressTokensLogitsProcessor([1, 5, 99, 150])]
    for processor in again:
        if hasattr(processor, "set_begin_index"):
            processor.set_begin_index(3)
    torch.manual_seed(0)
    for length in (3, 4, 3):  # at the begin index, after it, and again with the cached mask
        ids = torch.zeros((2, length), dtype=torch.long)
        scores = torch.randn(2, 100)
        a, b = scores, scores.clone()
        for processor in again:
            a = processor(ids, a)
        for processor in theirs:
            b = processor(ids, b)
        assert torch.equal(a, b)
        assert torch.isinf(a[:, [1, 5, 99]]).all() and torch.isinf(a[:, [7, 2]]).all() == (length == 3)


def test_nothing_to_suppress_gives_no_processors():
    from transformers import GenerationConfig

    from ipfs_accelerate.generation import masked_suppression

    class Model:
        generation_config = GenerationConfig()

    assert masked_suppression(Model()) == []


def _both_loops(ep, prompts, tokenizer=None, **params):
    """The greedy loop's output and generate()'s, on the same prepared inputs."""
    from ipfs_accelerate import generation as g

    parsed = ep.parse_params(params)
    prepared = ep.handler.preprocess(prompts, parsed)
    tokenizer = tokenizer or ep.handler.tokenizer
    common = {"tokenizer": tokenizer, "config": ep.handler.lm_config,
              "max_new_tokens": prepared.extra["max_new_tokens"]}
    assert g.greedy_applies(ep.runtime.model, prepared.inputs, parsed)
    ours = g.greedy_generate(ep.runtime, prepared.inputs, parsed, **common)
    theirs = g.generate(ep.runtime, prepared.inputs, parsed, prompt_len=prepared.extra["prompt_len"], **common)
    return ours, theirs


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
@pytest.mark.parametrize("model_id", CAUSAL)
def test_greedy_loop_picks_the_tokens_generate_picks(load_tiny, model_id, backend):
    import copy

    ep = load_tiny(model_id, backend=backend)
    assert ep.runtime.backend == backend and not ep.fallbacks
    # The converting backends' loops go through their direct decoder steps (what is checked here).
    assert (ep.runtime.decoder_step is not None) == (backend != "torch")
    ours, theirs = _both_loops(ep, PROMPTS, max_new_tokens=8)  # left-padded: the prompts differ in length
    assert ours.token_ids == theirs.token_ids and ours.texts == theirs.texts
    assert ours.new_tokens == theirs.new_tokens == 16
    assert ours.time_to_first_token_s > 0

    # A row that reaches end-of-sequence early is padded while the other goes on.
    tokenizer = copy.deepcopy(ep.handler.tokenizer)
    tokenizer.eos_token_id = theirs.token_ids[0][2]
    ours, theirs = _both_loops(ep, PROMPTS, tokenizer=tokenizer, max_new_tokens=8)
    assert ours.token_ids == theirs.token_ids and ours.new_tokens == theirs.new_tokens
    assert len(ours.token_ids[0]) <= 2 < ours.new_tokens


def test_greedy_loop_stops_at_stop_strings_as_generate_does(load_tiny):
    ep = load_tiny("gpt2")
    full = ep(PROMPTS, max_new_tokens=12).outputs
    stop = full[1].strip()[2:4]
    ours, theirs = _both_loops(ep, PROMPTS, max_new_tokens=12, stop=[stop])
    assert ours.token_ids == theirs.token_ids and ours.texts == theirs.texts
    assert stop not in ours.texts[1] and full[1].startswith(ours.texts[1])


def test_greedy_loop_only_where_it_matches_generate(load_tiny):
    from transformers import GenerationConfig

    from ipfs_accelerate.generation import GenerationParams, greedy_applies

    ep = load_tiny("gpt2")
    text = {"input_ids": 0, "attention_mask": 0}
    greedy = GenerationParams()
    assert greedy_applies(ep.runtime.model, text, greedy)
    assert not greedy_applies(ep.runtime.model, text, GenerationParams(temperature=0.7))
    assert not greedy_applies(ep.runtime.model, text, GenerationParams(repetition_penalty=1.2))
    assert not greedy_applies(ep.runtime.model, {**text, "pixel_values": 0}, greedy)

    class Model:  # a checkpoint whose generation config adds a logits processor
        generation_config = GenerationConfig(no_repeat_ngram_size=3, eos_token_id=2)

    assert not greedy_applies(Model(), text, greedy)
    Model.generation_config = GenerationConfig(eos_token_id=2, pad_token_id=0, max_length=64)
    assert greedy_applies(Model(), text, greedy)
    assert not greedy_applies(object(), text, greedy)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_encoder_decoder_greedy_loop_picks_the_tokens_generate_picks(load_tiny, backend):
    from ipfs_accelerate import generation as g

    ep = load_tiny("google/t5-efficient-tiny", backend=backend)
    assert ep.runtime.backend == backend and not ep.fallbacks
    full = ep(PROMPTS, max_new_tokens=8).outputs
    stop = full[1].strip()[2:4]
    assert len(stop) == 2, full  # the random model writes enough to cut
    for params in ({"max_new_tokens": 8}, {"max_new_tokens": 8, "stop": [stop]}):
        parsed = ep.parse_params(params)
        prepared = ep.handler.preprocess(PROMPTS, parsed)
        assert g.greedy_applies(ep.runtime.model, prepared.inputs, parsed)
        ours = ep.handler.forward(ep.runtime, prepared, parsed)
        theirs = g.generate(ep.runtime, prepared.inputs, parsed, tokenizer=ep.handler.tokenizer, config=ep.handler.config,
                            max_new_tokens=prepared.extra["max_new_tokens"], prompt_len=1)
        assert ours.token_ids == theirs.token_ids and ours.texts == theirs.texts
        assert ours.new_tokens == theirs.new_tokens > 0
    assert stop not in ours.texts[1] and full[1].startswith(ours.texts[1])


def test_a_cancelled_stream_stops_generating(load_tiny):
    """cancel() (a server whose client left) stops generate() at its next token, from another thread."""
    ep = load_tiny("gpt2")
    budget = 400
    full = list(ep.stream(PROMPTS[0], max_new_tokens=budget))
    tokenizer = ep.handler.tokenizer
    full_tokens = len(tokenizer("".join(full))["input_ids"])
    assert full_tokens > budget // 2  # greedy on these weights runs long: cancelling has something to cut

    pieces = ep.stream(PROMPTS[0], max_new_tokens=budget)
    first = next(pieces)
    assert ep.runtime.lock.locked()  # the generation holds the model: no batch runs inside it
    pieces.cancel()
    rest = list(pieces)  # ends once the generation sees the cancel
    got = len(tokenizer(first + "".join(rest))["input_ids"])
    assert pieces.cancelled and got < full_tokens
    assert not ep.runtime.lock.locked()
