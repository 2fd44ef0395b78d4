"""The unpadded BERT forward against transformers' own, in PyTorch."""

from __future__ import annotations

from typing import Any

import pytest

from ipfs_accelerate.families._unpadded import UNPADDED_BERT, unpadded_bert_encoder, unpadded_bert_supported
from tests.backends._tiny import assert_unpadded_matches, ragged_ids


def _config(**changes: Any) -> Any:
    import transformers as T

    return T.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, **changes)


@pytest.fixture(scope="module")
def bert() -> Any:
    import torch
    import transformers as T

    torch.manual_seed(0)
    return T.BertModel(_config()).eval()


@pytest.mark.parametrize("lengths", [(9, 4, 1), (5,), (6, 6)])
def test_real_positions_equal_transformers_and_padding_is_zero(bert: Any, lengths: tuple[int, ...]) -> None:
    import torch

    inputs = ragged_ids(lengths)
    inputs["token_type_ids"] = (torch.arange(max(lengths)) >= 2).to(torch.int64).expand(len(lengths), -1).clone()
    with torch.no_grad():
        reference = bert(**inputs).last_hidden_state
        candidate = unpadded_bert_encoder(bert)(**inputs)
    assert_unpadded_matches(reference, candidate, inputs["attention_mask"], atol=1e-5)


def test_shares_the_models_weights(bert: Any) -> None:
    rewrite = unpadded_bert_encoder(bert)
    assert rewrite.embeddings is bert.embeddings
    first = bert.encoder.layer[0].attention.self
    assert rewrite.qkv[0].weight.shape == (3 * 32, 32)
    assert (rewrite.qkv[0].weight[32:64] == first.key.weight).all()


def test_supported_configs_only() -> None:
    import transformers as T

    assert unpadded_bert_supported(_config())
    assert not unpadded_bert_supported(_config(position_embedding_type="relative_key"))
    assert not unpadded_bert_supported(_config(is_decoder=True))
    assert not unpadded_bert_supported(T.RobertaConfig())
    assert UNPADDED_BERT.startswith("unpadded-bert-encoder/")


def test_another_layout_is_refused() -> None:
    import transformers as T

    gpt2 = T.GPT2Model(T.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100, n_positions=16))
    with pytest.raises(TypeError, match="does not have BERT's layout"):
        unpadded_bert_encoder(gpt2)
