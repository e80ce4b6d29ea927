"""The optimizer's parameter groups: encoder vs head learning rates, and layer-wise learning-rate decay.

Layer-wise decay (``layer_lr_decay`` < 1, as in ELECTRA / the BERT fine-tuning literature): the pretrained
encoder's lower layers hold general features and move less than the upper ones. Encoder layer ``i`` of ``L``
(numbered 1..L from the bottom) trains at ``encoder_lr * decay ** (L - i)``, the embeddings (depth 0) at
``encoder_lr * decay ** L`` and whatever sits above the last layer (a pooler) at ``encoder_lr``; the heads keep
``head_lr``. Layers are found by name (``encoder.<...>layer.N.``: BERT's ``encoder.layer.N``, DistilBERT's
``transformer.layer.N``), so every family is covered without knowing its classes.
"""
from __future__ import annotations

import re
from typing import Any

_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def encoder_depth(name: str, num_layers: int) -> int:
    """Depth of an encoder parameter: 0 for the embeddings, ``N + 1`` for layer N, ``num_layers`` above them."""
    match = _LAYER.search(name)
    if match:
        return int(match.group(1)) + 1
    return 0 if "embeddings" in name else num_layers


def parameter_groups(model: Any, encoder_lr: float, head_lr: float, weight_decay: float,
                     layer_lr_decay: float = 1.0) -> list[dict[str, Any]]:
    """``torch.optim.AdamW`` parameter groups: ``model.parameter_groups`` (encoder / head, decayed or not), with
    each encoder group split per depth when ``layer_lr_decay`` < 1 (see the module docstring)."""
    groups = model.parameter_groups(encoder_lr, head_lr, weight_decay)
    if layer_lr_decay == 1.0:
        return groups
    names = {id(p): n for n, p in model.named_parameters()}
    layers = [int(m.group(1)) for n in names.values() if n.startswith("encoder.") and (m := _LAYER.search(n))]
    num_layers = max(layers) + 1 if layers else 0
    out: list[dict[str, Any]] = []
    for group in groups:
        if not group["name"].startswith("encoder"):
            out.append(group)
            continue
        by_depth: dict[int, list[Any]] = {}
        for param in group["params"]:
            by_depth.setdefault(encoder_depth(names[id(param)], num_layers), []).append(param)
        for depth, params in sorted(by_depth.items()):
            out.append({**group, "name": f"{group['name']}_depth{depth}", "params": params,
                        "lr": group["lr"] * layer_lr_decay ** (num_layers - depth)})
    return out
