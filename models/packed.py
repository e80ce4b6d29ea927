"""Padding-free inference for BERT and DistilBERT encoders: every linear layer runs on the real tokens only.

Why: a batch of unsorted texts (the ``/predict`` lane's, where each call brings one tweet of its own length) is
padded to its longest row; measured on tweets, a random batch of 8 holds 1.5x its real tokens (1.75x at 32), and a
MiniLM layer's cost is almost all in its linear layers (Q, K, V, output, the two FFN matrices: ~98% of the FLOPs
at 33 tokens), which scale with the tokens they see. Here the token states stay packed as (N, H), N = the real
tokens of the batch, and only attention (a few percent of the work) uses the padded (B, heads, T, d) layout.

The answer equals the encoder's own forward on every real position (up to float rounding; the tests compare them;
with ``first_only``, below, on position 0, the only one returned); padded positions hold zeros, which no head reads
(pooling masks them, ``cls`` / the pooler read the [CLS] at position 0 of the platform's right-padded rows, the LSTM
packs the rows). Positions are column indexes, as the encoder's own are, so even left-padded rows get the same token
states.

A head that reads the first position alone ([CLS] or the pooler over it: sequence classification with
``pooler`` / ``cls`` pooling, multiple choice) asks for ``first_only``: the last layer then computes that
position's output only. Its keys and values still cover every token, so the answer is the same, and the layer's
query, output and FFN matrices see one row per text instead of every token: 10/12 of the last layer's linear work
skipped, ~14% of a 6-layer encoder's (MiniLM on tweets, one thread: 8.2 instead of 9.5 CPU-ms per text at batch 8,
13.5 instead of 15.2 at batch 1). In fp32 the answer is the same up to float rounding; an int8 (dynamically
quantized) model scales each linear layer's input by its range, which now spans the [CLS] rows only, so it answers
within quantization noise of the full path.

Inference only: no dropout, no gradient (:func:`usable` says when). Shapes: B rows, T padded length, N real tokens,
H hidden size, h heads, d = H / h.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PackedOutput:
    """What :func:`packed_forward` returns: the fields of the encoder's own output that the heads read."""

    last_hidden_state: torch.Tensor  # (B, T, H), zeros at padded positions; (B, 1, H) with ``first_only``
    pooler_output: torch.Tensor | None  # (B, H) when the encoder has a pooler


@dataclass
class _Layer:
    """One transformer layer's parts, named the same for every architecture."""

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attention_out: nn.Linear
    attention_norm: nn.LayerNorm
    ffn_in: nn.Linear
    activation: Callable[[torch.Tensor], torch.Tensor]
    ffn_out: nn.Linear
    output_norm: nn.LayerNorm


def _bert_embed(encoder: nn.Module, ids: torch.Tensor, positions: torch.Tensor,
                types: torch.Tensor | None) -> torch.Tensor:
    emb = encoder.embeddings
    if types is None:
        types = torch.zeros_like(ids)  # (N,) the encoder's default: every token in segment 0
    hidden = emb.word_embeddings(ids) + emb.token_type_embeddings(types)  # (N, H)
    hidden = hidden + emb.position_embeddings(positions)  # (N, H)
    return emb.LayerNorm(hidden)  # (N, H)


def _bert_layers(encoder: nn.Module) -> Iterator[_Layer]:
    for layer in encoder.encoder.layer:
        attention = layer.attention
        yield _Layer(attention.self.query, attention.self.key, attention.self.value, attention.output.dense,
                     attention.output.LayerNorm, layer.intermediate.dense, layer.intermediate.intermediate_act_fn,
                     layer.output.dense, layer.output.LayerNorm)


def _distilbert_embed(encoder: nn.Module, ids: torch.Tensor, positions: torch.Tensor,
                      types: torch.Tensor | None) -> torch.Tensor:
    emb = encoder.embeddings
    hidden = emb.word_embeddings(ids) + emb.position_embeddings(positions)  # (N, H)
    return emb.LayerNorm(hidden)  # (N, H)


def _distilbert_layers(encoder: nn.Module) -> Iterator[_Layer]:
    for block in encoder.transformer.layer:
        attention = block.attention
        yield _Layer(attention.q_lin, attention.k_lin, attention.v_lin, attention.out_lin, block.sa_layer_norm,
                     block.ffn.lin1, block.ffn.activation, block.ffn.lin2, block.output_layer_norm)


# model_type -> (embeddings, layers, number of heads): one entry per architecture this module can run
_ARCHITECTURES: dict[str, tuple[Callable, Callable, Callable[[Any], int]]] = {
    "bert": (_bert_embed, _bert_layers, lambda config: config.num_attention_heads),
    "distilbert": (_distilbert_embed, _distilbert_layers, lambda config: config.n_heads),
}


def supports(encoder: nn.Module) -> bool:
    """True when ``encoder`` is an architecture this module runs exactly as its own forward does: BERT (absolute
    positions, no decoder / cross-attention) or DistilBERT."""
    config = getattr(encoder, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in _ARCHITECTURES:
        return False
    if model_type == "bert":
        return (getattr(config, "position_embedding_type", "absolute") == "absolute"
                and not getattr(config, "is_decoder", False) and not getattr(config, "add_cross_attention", False))
    return True


def usable(encoder: nn.Module, attention_mask: torch.Tensor) -> bool:
    """True when the packed forward should replace the encoder's own for this batch: inference (eval mode, no
    gradient), a supported architecture, a (B, T) mask. A batch without padding takes it too: it then gathers
    nothing, and it runs with less Python than the encoder's own forward (measured on one tweet, one thread:
    15.8 -> 14.9 CPU-ms; the /predict lane runs many batches of one or two texts)."""
    return (not encoder.training and not torch.is_grad_enabled() and supports(encoder)
            and attention_mask.dim() == 2 and attention_mask.numel() > 0)  # an empty batch: the encoder's own


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor | None, rows: int,
               length: int, heads: int, key_mask: torch.Tensor | None, *, first_only: bool = False) -> torch.Tensor:
    """Self-attention of packed (N, H) projections within each row; the padded layout only for this step.
    ``index`` None: no padding, the packed layout is already the flat (B*T, H) one. ``first_only``: ``q`` holds
    each row's first position only, (B, H), and so does the answer."""

    def padded(x: torch.Tensor) -> torch.Tensor:
        flat = x if index is None else x.new_zeros(rows * length, x.shape[1]).index_copy_(0, index, x)  # (B*T, H)
        return flat.view(rows, length, heads, -1).transpose(1, 2)  # (B, h, T, d)

    queries = q.view(rows, 1, heads, -1).transpose(1, 2) if first_only else padded(q)  # (B, h, 1 or T, d)
    # scale defaults to 1/sqrt(d), as both architectures scale
    context = F.scaled_dot_product_attention(queries, padded(k), padded(v), attn_mask=key_mask)  # (B, h, 1|T, d)
    if first_only:
        return context.reshape(rows, -1)  # (B, H): one query per row, heads side by side as in the flat layout
    flat = context.transpose(1, 2).reshape(rows * length, -1)  # (B*T, H)
    return flat if index is None else flat.index_select(0, index)  # (N, H)


def _layer_forward(layer: _Layer, hidden: torch.Tensor, index: torch.Tensor | None, rows: int, length: int,
                   heads: int, key_mask: torch.Tensor | None, firsts: torch.Tensor | None = None) -> torch.Tensor:
    """One transformer layer on packed (N, H) states. ``firsts`` (B,): the packed places of each row's first
    position; given, only those positions' outputs are computed, (B, H) (keys and values still cover every
    token: the first position attends to its whole row)."""
    queries = hidden if firsts is None else hidden.index_select(0, firsts)  # (N or B, H)
    context = _attention(layer.query(queries), layer.key(hidden), layer.value(hidden), index, rows, length, heads,
                         key_mask, first_only=firsts is not None)  # (N or B, H)
    out = layer.attention_norm(layer.attention_out(context) + queries)  # (N or B, H)
    inner = layer.activation(layer.ffn_in(out))  # (N or B, I), I = the FFN width
    return layer.output_norm(layer.ffn_out(inner) + out)  # (N or B, H)


def packed_forward(encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   token_type_ids: torch.Tensor | None = None, *, first_only: bool = False) -> PackedOutput:
    """The encoder's forward (eval mode) computed on the real tokens only; see the module docstring.

    ``input_ids`` / ``attention_mask`` / ``token_type_ids``: (B, T), as the encoder takes them. Call only when
    :func:`supports` (or :func:`usable`) says so.
    """
    embed, layers, head_count = _ARCHITECTURES[encoder.config.model_type]
    heads = head_count(encoder.config)
    rows, length = attention_mask.shape
    mask = attention_mask.bool()  # (B, T)
    # one device-to-host sync for both questions: no padding at all? does every row start at column 0?
    unpadded, starts_real = torch.stack((mask.all(), mask[:, 0].all())).tolist() if mask.shape[1] else (True, False)
    if unpadded:  # no padding: every position is real, N = B*T, nothing to gather or mask
        index, key_mask = None, None
        positions = torch.arange(length, device=input_ids.device).repeat(rows)  # (N,)
        ids = input_ids.reshape(-1)  # (N,)
        types = token_type_ids.reshape(-1) if token_type_ids is not None else None  # (N,)
    else:
        index = mask.reshape(-1).nonzero().squeeze(1)  # (N,) real tokens' places in the flat (B*T) layout
        positions = index % length  # (N,) column index = the encoder's own position id
        ids = input_ids.reshape(-1).index_select(0, index)  # (N,)
        types = token_type_ids.reshape(-1).index_select(0, index) if token_type_ids is not None else None  # (N,)
        key_mask = mask[:, None, None, :]  # (B, 1, 1, T): every query sees its own row's real keys
    hidden = embed(encoder, ids, positions, types)  # (N, H)
    stack = list(layers(encoder))
    if first_only and stack and starts_real:
        # every row starts at column 0 (right padding): its first token's packed place is the real tokens before it
        lengths = mask.sum(dim=1)  # (B,)
        firsts = torch.cumsum(lengths, 0) - lengths  # (B,)
        for layer in stack[:-1]:
            hidden = _layer_forward(layer, hidden, index, rows, length, heads, key_mask)  # (N, H)
        first = _layer_forward(stack[-1], hidden, index, rows, length, heads, key_mask, firsts)  # (B, H)
        last = first[:, None]  # (B, 1, H): position 0 only
    else:
        for layer in stack:
            hidden = _layer_forward(layer, hidden, index, rows, length, heads, key_mask)  # (N, H)
        width = hidden.shape[1]
        if index is not None:
            hidden = hidden.new_zeros(rows * length, width).index_copy_(0, index, hidden)  # (B*T, H), 0 at padding
        last = hidden.view(rows, length, width)  # (B, T, H)
    pooler = getattr(encoder, "pooler", None)
    return PackedOutput(last, pooler(last) if pooler is not None else None)
