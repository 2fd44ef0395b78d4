"""Generation machinery shared by every generating family (GPT-2, OPT, T5, Whisper, LLaVA …).

The families turn their inputs into model inputs and their outputs into texts; what happens
between is here, implemented once:

- :mod:`.params`: the validated controls (:class:`GenerationParams`) and what a call returns;
- :mod:`.controls`: logits processors and stopping criteria (time to first token, stop
  strings, suppressed tokens with their mask built once) and ``generate`` arguments;
- :mod:`.decode`: one ``model.generate`` call with those controls, and decoding its tokens;
- :mod:`.greedy`: plain greedy decoding as a short loop over the forward pass, for the cases
  where it picks exactly the tokens ``generate`` picks (see :func:`greedy_applies`);
- :mod:`.stream`: text pieces as ``generate`` produces them.

Everything works on any runtime whose model offers transformers' generation API (PyTorch,
and optimum's ONNX Runtime and OpenVINO models), so the KV cache is used on every backend.
Sampling is seeded without touching the global RNG, and new tokens are counted honestly.
"""

from __future__ import annotations

from .controls import cut_at_stop, first_token_clock, generate_kwargs, masked_suppression, stop_criteria
from .decode import decode_sequences, generate, split_generated
from .greedy import greedy_applies, greedy_ends, greedy_generate, greedy_seq2seq, plain_greedy
from .params import GenerationOutput, GenerationParams, context_window
from .stream import stream_generate

__all__ = [
    "GenerationOutput",
    "GenerationParams",
    "context_window",
    "cut_at_stop",
    "decode_sequences",
    "first_token_clock",
    "generate",
    "generate_kwargs",
    "greedy_applies",
    "greedy_ends",
    "greedy_generate",
    "greedy_seq2seq",
    "masked_suppression",
    "plain_greedy",
    "split_generated",
    "stop_criteria",
    "stream_generate",
]
