"""An unpadded forward for BERT-layout encoders, for the backends that convert a model.

A batch of texts is padded to its longest one, and a padded position costs the projections
and the feed-forward block as much as a real token. Everything in a BERT layer but the
attention itself works token by token, so :class:`UnpaddedBertEncoder` runs those parts on
the real tokens only, packed into one ``[tokens, hidden]`` matrix, and brings them back to
the padded ``[batch, length]`` layout just for the attention: one gather per layer on the
fused query/key/value projection, one gather back. The attention sees exactly what
transformers' own forward sees, so the real positions' outputs are the same; the padded
positions come back as zeros (poolings over the attention mask never read them).
What it saves on a MiniLM batch is measured in docs/families.md.

Gathers, not scatters: a scatter into the padded layout converts to OpenVINO's
``ScatterElementsUpdate`` (three per layer), which costs more than the gathers it would
replace (docs/families.md).
"""

from __future__ import annotations

from typing import Any

__all__ = ["UNPADDED_BERT", "unpadded_bert_encoder", "unpadded_bert_supported"]

# The rewrite's name and version: it enters the export cache key and the runtime details,
# so bump it whenever the converted graph would change.
UNPADDED_BERT = "unpadded-bert-encoder/1"


def unpadded_bert_supported(config: Any) -> bool:
    """Whether ``config`` describes an encoder this rewrite reproduces exactly.

    BERT itself, with absolute position embeddings (relative ones add a term inside the
    attention that the rewrite does not compute), as an encoder (no causal mask, no
    cross-attention).
    """
    return (
        getattr(config, "model_type", None) == "bert"
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and not getattr(config, "is_decoder", False)
        and not getattr(config, "add_cross_attention", False)
        and config.hidden_size % config.num_attention_heads == 0
    )


def unpadded_bert_encoder(model: Any) -> Any:
    """Wrap a transformers ``BertModel`` in :class:`UnpaddedBertEncoder` (shares its weights).

    Raises:
        TypeError: ``model`` does not have BERT's layout.
    """
    return _module_class()(model).eval()


def _module_class() -> type:
    import torch
    import torch.nn.functional as F

    class UnpaddedBertEncoder(torch.nn.Module):
        """``forward(input_ids, attention_mask, token_type_ids)`` → the last hidden state.

        Real positions equal ``BertModel(...).last_hidden_state``; padded positions are zero.
        """

        def __init__(self, model: Any) -> None:
            super().__init__()
            layers = getattr(getattr(model, "encoder", None), "layer", None)
            if getattr(model, "embeddings", None) is None or layers is None:
                raise TypeError(f"{type(model).__name__} does not have BERT's layout (embeddings, encoder.layer)")
            self.embeddings = model.embeddings
            self.layers = layers
            config = model.config
            self.hidden = config.hidden_size
            self.heads = config.num_attention_heads
            # One product for query, key and value: one gather per layer instead of three.
            self.qkv = torch.nn.ModuleList()
            for layer in layers:
                attention = layer.attention.self
                parts = (attention.query, attention.key, attention.value)
                fused = torch.nn.Linear(self.hidden, 3 * self.hidden)
                with torch.no_grad():
                    fused.weight.copy_(torch.cat([p.weight for p in parts]))
                    fused.bias.copy_(torch.cat([p.bias for p in parts]))
                self.qkv.append(fused)

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            batch, length = input_ids.shape
            hidden, heads = self.hidden, self.heads
            flat = attention_mask.reshape(-1).to(torch.int64)
            real = torch.nonzero(flat).squeeze(1)  # the packed rows, in padded order
            # For every padded slot, its row in the packed matrix; padding points one past
            # the last real row, at the zero row appended before each gather.
            slot = torch.where(flat > 0, torch.cumsum(flat, 0) - 1, torch.zeros_like(flat) + real.shape[0])
            # Packed rows are [1, tokens, hidden], not [tokens, hidden]: a product on a 2-D input
            # exports to ONNX as Gemm, which ONNX Runtime's dynamic quantization leaves in fp32.
            embedded = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
            x = embedded.reshape(1, batch * length, hidden)[:, real]
            bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
            for layer, qkv in zip(self.layers, self.qkv, strict=True):
                packed = qkv(x)
                padded = torch.cat([packed, packed.new_zeros(1, 1, 3 * hidden)], dim=1)[:, slot]
                q, k, v = padded.reshape(batch, length, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
                context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
                context = context.transpose(1, 2).reshape(1, batch * length, hidden)[:, real]
                out = layer.attention.output
                attended = out.LayerNorm(out.dense(context) + x)
                x = layer.output.LayerNorm(layer.output.dense(layer.intermediate(attended)) + attended)
            return torch.cat([x, x.new_zeros(1, 1, hidden)], dim=1)[:, slot].reshape(batch, length, hidden)

    return UnpaddedBertEncoder
