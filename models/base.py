"""Shared building blocks of every model family: output type, pooling, class weights, the base classifier.

A family subclasses :class:`EncoderClassifier`, sets ``family`` / ``encoder_types`` / ``option_names``, builds its
heads in ``__init__`` (then calls :meth:`EncoderClassifier.post_init`) and implements
:meth:`EncoderClassifier._task_logits` (and :meth:`EncoderClassifier.head_options`). The base class owns
the encoder, the task/label bookkeeping, the loss, ``freeze_encoder``, sentence-pair inputs and the optimizer
parameter groups, so the families only describe their heads.

Losses (HF-style: ``forward(..., labels=None)`` returns the loss when labels are given):

* single-label (default): cross-entropy over label ids (B,), ``-100`` = "no label", class weights as ``weight``,
  optional ``label_smoothing``;
* ``multi_label=True`` (families with ``supports_multi_label``): one sigmoid per label, ``BCEWithLogits`` on float
  multi-hot targets (B, C), class weights as ``pos_weight`` (the weight of a label's positive examples). The
  per-label decision ``thresholds`` (default 0.5) are stored with the model and applied by inference.

Sentence pairs: ``token_type_ids`` (B, T) reach the encoder when it has token-type embeddings (BERT); an encoder
without them (DistilBERT) ignores them and tells the two texts apart by the [SEP] between them.

Shape legend used in comments: B = batch size, T = sequence length (after padding), H = encoder hidden size,
C = number of classes of a task.
"""
from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from models import packed

IGNORE_INDEX = -100  # label id meaning "this row has no label for this task" (same as PyTorch's default)

POOLING_MODES = ("pooler", "cls", "mean")

# Encoder architectures (transformers ``model_type``) whose AutoModel takes (input_ids, attention_mask) and
# returns ``last_hidden_state`` (B, T, H) -- the BERT family and its close relatives.
BERT_LIKE_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "camembert", "electra", "albert", "mpnet", "deberta", "deberta-v2", "ernie"}
)


@dataclass
class ClassifierOutput:
    """What every family's ``forward`` returns.

    ``loss`` is a scalar tensor when labels were given, else ``None``. ``logits`` is a (B, C) tensor for the
    single-task families and a ``{task: (B, C_task) tensor}`` dict for ``multitask``.
    """

    loss: torch.Tensor | None
    logits: torch.Tensor | dict[str, torch.Tensor]


def pool_hidden_states(
    mode: str,
    last_hidden_state: torch.Tensor,
    attention_mask: torch.Tensor,
    pooler_output: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summarise a sequence of hidden states (B, T, H) into one vector per row (B, H).

    ``pooler``: the encoder's pooler output (dense + tanh over [CLS]); ``cls``: the first token's hidden state;
    ``mean``: the mean over non-padding positions only (so padding never changes the result).
    """
    if mode == "pooler":
        if pooler_output is None:
            raise ValueError("pooling='pooler' needs an encoder with a pooler layer")
        return pooler_output  # (B, H)
    if mode == "cls":
        return last_hidden_state[:, 0]  # (B, H)
    if mode == "mean":
        mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)  # (B, T, 1)
        summed = (last_hidden_state * mask).sum(dim=1)  # (B, H)
        counts = mask.sum(dim=1).clamp(min=1.0)  # (B, 1)
        return summed / counts  # (B, H)
    raise ValueError(f"unknown pooling {mode!r}; choose one of {', '.join(POOLING_MODES)}")


def packed_lstm(lstm: nn.LSTM, states: torch.Tensor, lengths: torch.Tensor) -> tuple[Any, tuple[torch.Tensor, ...]]:
    """``lstm`` (batch first) over the real tokens of right-padded ``states`` (B, T, H), ``lengths`` (B,): packed,
    so padding never feeds it; returns its packed output and ``(h_n, c_n)`` (D, B, L), rows in input order.

    It runs in fp32 outside any autocast: CUDA's autocast casts a cuDNN RNN to fp16 (``AutocastRNN.cpp``) even when
    the autocast dtype is bf16, whose training has no loss scaler to keep fp16's small gradients from flushing to
    zero. The LSTM is a small share of the work."""
    with torch.autocast(states.device.type, enabled=False):
        packed_states = pack_padded_sequence(states.float(), lengths.cpu(), batch_first=True, enforce_sorted=False)
        return lstm(packed_states)


def pools_first_position(mode: str) -> bool:
    """True when pooling ``mode`` reads the first position ([CLS]) alone, so the encoder may compute its last
    layer for that position only (:meth:`EncoderClassifier.encode` ``first_only``)."""
    return mode in ("pooler", "cls")


def normalize_tasks(tasks: Mapping[str, Sequence[str]]) -> OrderedDict[str, list[str]]:
    """Validate ``{task: [label, ...]}`` and return it as an ordered dict of lists of strings."""
    if not tasks:
        raise ValueError("a model needs at least one task")
    out: OrderedDict[str, list[str]] = OrderedDict()
    for task, labels in tasks.items():
        labels = [str(label) for label in labels]
        if not isinstance(task, str) or not task:
            raise ValueError(f"task names must be non-empty strings, got {task!r}")
        if len(labels) < 2:
            raise ValueError(f"task {task!r} needs at least 2 labels, got {labels}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"task {task!r} has duplicate labels: {labels}")
        out[task] = labels
    return out


def normalize_thresholds(thresholds: Sequence[float] | None, num_labels: int) -> list[float]:
    """Per-label decision thresholds of a multi-label model: ``None`` -> 0.5 each; else C numbers in [0, 1]."""
    if thresholds is None:
        return [0.5] * num_labels
    if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, Sequence):
        raise ValueError(f"thresholds must be a list of {num_labels} numbers, got {thresholds!r}")
    values = [float(t) for t in thresholds]
    if len(values) != num_labels:
        raise ValueError(f"thresholds has {len(values)} values but the model has {num_labels} labels")
    if any(not math.isfinite(t) or not 0.0 <= t <= 1.0 for t in values):
        raise ValueError(f"thresholds must be numbers in [0, 1]: {values}")
    return values


def encoder_takes_token_types(encoder: nn.Module) -> bool:
    """True when ``encoder`` has token-type (segment) embeddings that a sentence pair can use.

    DistilBERT's forward takes no ``token_type_ids``; RoBERTa-like encoders take them but have a single type
    (``type_vocab_size == 1``), where a second segment id would be out of range.
    """
    try:
        takes = "token_type_ids" in inspect.signature(encoder.forward).parameters
    except (TypeError, ValueError):
        takes = False
    return takes and int(getattr(encoder.config, "type_vocab_size", 0) or 0) > 1


def normalize_class_weights(
    class_weights: None | Sequence[float] | Mapping[str, Sequence[float]], tasks: Mapping[str, Sequence[str]]
) -> dict[str, list[float]] | None:
    """Turn the ``class_weights`` option into ``{task: [w per label, in label order]}`` (or ``None``).

    A plain list is allowed for a single-task model. ``"balanced"`` is not accepted here: it depends on the
    label counts of the training data, so the trainer computes the numbers and passes them explicitly.
    """
    if class_weights is None:
        return None
    if isinstance(class_weights, str):
        raise ValueError(
            f"class_weights={class_weights!r} must be resolved to numbers before building the model "
            "(ml.data computes 'balanced' weights from the label counts)"
        )
    if not isinstance(class_weights, Mapping):
        if len(tasks) != 1:
            raise ValueError("a model with several tasks needs class_weights as {task: [weights]}")
        class_weights = {next(iter(tasks)): class_weights}
    out: dict[str, list[float]] = {}
    for task, weights in class_weights.items():
        if task not in tasks:
            raise ValueError(f"class_weights names unknown task {task!r}; tasks are {list(tasks)}")
        if weights is None:
            continue
        weights = [float(w) for w in weights]
        labels = tasks[task]
        if len(weights) != len(labels):
            raise ValueError(
                f"class_weights for task {task!r} has {len(weights)} values but the task has "
                f"{len(labels)} labels ({', '.join(labels)})"
            )
        if any(not math.isfinite(w) or w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise ValueError(f"class_weights for task {task!r} must be finite, >= 0 and not all 0: {weights}")
        out[task] = weights
    return out or None


class EncoderClassifier(nn.Module):
    """A pretrained transformer encoder plus one classification head per task.

    Subclasses build their heads in ``__init__``, call :meth:`post_init`, and compute per-task logits in
    :meth:`_task_logits`.

    Args:
        encoder_config: the encoder's ``transformers`` config (``PretrainedConfig``).
        tasks: ordered ``{task_name: [label, ...]}``; single-task families take exactly one task.
        encoder: an already-built encoder module (pretrained weights); built from ``encoder_config`` with random
            weights when omitted (the loading path, which then loads the saved state dict).
        dropout: dropout probability of the head(s).
        class_weights: ``[w, ...]`` (single task) or ``{task: [w, ...]}``, in label order; ``None`` = unweighted.
            Multi-label: the ``pos_weight`` of each label.
        freeze_encoder: train only the head(s); the encoder's weights get no gradient and stay in eval mode.
        multi_label: several labels per row (sigmoid + BCE); only families with ``supports_multi_label``.
        label_smoothing: in [0, 1), for the single-label cross-entropy (``F.cross_entropy(label_smoothing=)``).
    """

    family: ClassVar[str] = ""
    task_type: ClassVar[str] = "text-classification"  # the head's shape (models.registry.TASK_FAMILIES)
    encoder_types: ClassVar[frozenset[str]] = BERT_LIKE_TYPES
    multitask: ClassVar[bool] = False
    supports_multi_label: ClassVar[bool] = True
    # constructor options every family takes (handled here); saved as head hyperparameters, except class_weights
    common_option_names: ClassVar[tuple[str, ...]] = (
        "dropout", "class_weights", "freeze_encoder", "multi_label", "label_smoothing",
    )
    # names of the family-specific constructor options (saved as head hyperparameters)
    option_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        encoder_config: Any,
        tasks: Mapping[str, Sequence[str]],
        *,
        encoder: nn.Module | None = None,
        dropout: float = 0.1,
        class_weights: None | Sequence[float] | Mapping[str, Sequence[float]] = None,
        freeze_encoder: bool = False,
        multi_label: bool = False,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        model_type = getattr(encoder_config, "model_type", None)
        if model_type not in self.encoder_types:
            raise ValueError(encoder_type_error(self.family, model_type, self.encoder_types))
        self.tasks = normalize_tasks(tasks)
        if not self.multitask and len(self.tasks) != 1:
            raise ValueError(f"family {self.family!r} takes exactly one task, got {list(self.tasks)}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout_p = float(dropout)
        self.freeze_encoder = bool(freeze_encoder)
        if multi_label and not self.supports_multi_label:
            raise ValueError(
                f"family {self.family!r} does not support multi_label: it keeps single-label tasks only"
            )
        self.multi_label = bool(multi_label)
        label_smoothing = float(label_smoothing)
        if not (math.isfinite(label_smoothing) and 0.0 <= label_smoothing < 1.0):
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if self.multi_label and label_smoothing:
            raise ValueError("label_smoothing applies to single-label cross-entropy, not to multi_label models")
        self.label_smoothing = label_smoothing
        self.max_length: int | None = None  # recorded by the trainer, saved with the model, used by inference
        self.label2id = {t: {label: i for i, label in enumerate(labels)} for t, labels in self.tasks.items()}
        self.id2label = {t: dict(enumerate(labels)) for t, labels in self.tasks.items()}

        if encoder is None:
            from transformers import AutoModel

            encoder = AutoModel.from_config(encoder_config, dtype=torch.float32)  # not a config's saved half dtype
        self.encoder = encoder
        self.encoder_config = self.encoder.config
        self.hidden_size = int(self.encoder_config.hidden_size)
        self.takes_token_types = encoder_takes_token_types(self.encoder)
        self._thresholds: list[float] | None = None
        self.thresholds = None  # multi-label: 0.5 per label until tuned on validation data

        # class weights live in non-persistent buffers: they move with .to(device) but are saved in the JSON
        # config, not in the state dict
        self.class_weights = normalize_class_weights(class_weights, self.tasks)
        self._weight_buffer = {}
        for i, task in enumerate(self.tasks):
            if self.class_weights and task in self.class_weights:
                name = f"_class_weight_{i}"
                weight = torch.tensor(self.class_weights[task], dtype=torch.float32)  # (C,)
                self.register_buffer(name, weight, persistent=False)
                self._weight_buffer[task] = name

    def post_init(self) -> None:
        """Call at the end of a family's ``__init__`` (after building its heads), like HF's ``post_init``."""
        self._init_head_weights()
        if self.freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    # ---- to implement in a family ------------------------------------------------------------------------

    def _task_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``{task: logits (B, C_task)}``; pass ``token_type_ids`` on to :meth:`encode`."""
        raise NotImplementedError

    def head_options(self) -> dict[str, Any]:
        """Family-specific hyperparameters (the ``option_names``), saved into ``bertqueue_config.json``."""
        return {}

    # ---- shared ------------------------------------------------------------------------------------------
    @property
    def is_multitask(self) -> bool:
        return self.multitask

    @property
    def task(self) -> str:
        """The first (for single-task families: the only) task name."""
        return next(iter(self.tasks))

    @property
    def thresholds(self) -> list[float] | None:
        """Multi-label: the per-label decision thresholds (p >= threshold -> label); single-label: ``None``."""
        return self._thresholds

    @thresholds.setter
    def thresholds(self, values: Sequence[float] | None) -> None:
        if not self.multi_label:
            if values is not None:
                raise ValueError("thresholds only apply to a multi_label model")
            self._thresholds = None
            return
        self._thresholds = normalize_thresholds(values, len(self.tasks[self.task]))

    def head_config(self) -> dict[str, Any]:
        """Every head hyperparameter needed to rebuild this model (without any code default)."""
        return {
            "dropout": self.dropout_p,
            "freeze_encoder": self.freeze_encoder,
            "multi_label": self.multi_label,
            "label_smoothing": self.label_smoothing,
            **self.head_options(),
        }

    def _init_head_weights(self) -> None:
        """HF-style init of the head: Linear ~ N(0, initializer_range), bias 0. The encoder is left untouched."""
        std = float(getattr(self.encoder_config, "initializer_range", 0.02))
        for name, module in self.named_modules():
            if name.startswith("encoder") or module is self:
                continue
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def train(self, mode: bool = True) -> "EncoderClassifier":
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # a frozen encoder is a fixed feature extractor: no dropout either
        return self

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
        *, first_only: bool = False,
    ) -> Any:
        """Run the encoder; returns its output (``last_hidden_state`` (B, T, H), or (B, 1, H) with ``first_only``;
        maybe ``pooler_output`` (B, H)).

        ``token_type_ids`` (B, T) (0 = first text, 1 = second text of a pair) are passed on only when the encoder
        has token-type embeddings (:attr:`takes_token_types`); otherwise they are ignored.
        ``first_only``: the caller reads position 0 alone ([CLS], the pooler), so inference may compute the last
        layer for that position only (``last_hidden_state`` is then (B, 1, H); read it as ``[:, 0]``).
        """
        types = token_type_ids if self.takes_token_types else None
        if packed.usable(self.encoder, attention_mask):
            # inference: the linear layers run on the real tokens only, skipping any padding (models/packed.py)
            return packed.packed_forward(self.encoder, input_ids, attention_mask, types, first_only=first_only)
        extra = {"token_type_ids": types} if types is not None else {}
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **extra)

    def task_loss(self, task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of one task, with its class weights.

        Single-label: cross-entropy over the rows that have a label (id != -100), with ``label_smoothing``; a
        batch in which no row has a label for ``task`` gives 0 (still attached to the graph), never NaN.
        Multi-label: ``BCEWithLogits`` on float multi-hot targets (B, C), class weights as ``pos_weight``.
        """
        weight = getattr(self, self._weight_buffer[task]) if task in self._weight_buffer else None
        if self.multi_label:
            targets = labels.to(device=logits.device, dtype=torch.float32)  # (B, C)
            if targets.shape != logits.shape:
                raise ValueError(
                    f"multi-label targets must have shape {tuple(logits.shape)} (rows x labels), "
                    f"got {tuple(targets.shape)}"
                )
            return F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=weight)
        labels = labels.to(logits.device).long()  # (B,)
        if not bool((labels != IGNORE_INDEX).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(
            logits.float(), labels, weight=weight, ignore_index=IGNORE_INDEX, label_smoothing=self.label_smoothing
        )

    def loss_denominator(self, task: str, labels: torch.Tensor) -> float:
        """What :meth:`task_loss` divides its sum by for these ``labels``: the rows that have a label (weighted by
        their class weight when there are class weights, as ``F.cross_entropy`` does), or rows x labels for
        multi-label BCE. Gradient accumulation scales each micro-batch's loss by its share of the whole batch's
        denominator, so that the summed gradients equal the unsplit batch's (``ml.loop``)."""
        if self.multi_label:
            return float(labels.numel())
        labels = labels.long()
        known = labels[labels != IGNORE_INDEX]
        weight = getattr(self, self._weight_buffer[task]) if task in self._weight_buffer else None
        if weight is None:
            return float(known.numel())
        return float(weight.detach().cpu()[known.cpu()].sum())

    def compute_loss(
        self, logits: dict[str, torch.Tensor], labels: torch.Tensor | Mapping[str, torch.Tensor],
        task_scale: Mapping[str, float] | None = None,
    ) -> torch.Tensor:
        """The training objective for the given labels (overridden by multitask for task weights).

        ``task_scale``: a factor per task's loss (a micro-batch's share of its logical batch, see
        :meth:`loss_denominator`); None = 1.
        """
        if not isinstance(labels, Mapping):
            labels = {self.task: labels}
        loss = self.task_loss(self.task, logits[self.task], labels[self.task])
        return loss * task_scale[self.task] if task_scale is not None else loss

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | Mapping[str, torch.Tensor] | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> ClassifierOutput:
        """Classify a padded batch: input_ids / attention_mask / token_type_ids (B, T).

        ``labels``: (B,) label ids or ``{task: (B,)}`` (-100 = none); multi-label: float multi-hot (B, C).
        ``token_type_ids``: the segment of each token of a sentence pair (see :meth:`encode`); ``None`` = one text.
        """
        logits = self._task_logits(input_ids, attention_mask, token_type_ids)  # {task: (B, C_task)}
        loss = self.compute_loss(logits, labels) if labels is not None else None
        return ClassifierOutput(loss=loss, logits=logits if self.multitask else logits[self.task])

    def parameter_groups(self, encoder_lr: float, head_lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups: encoder vs head(s), each split into decayed / not decayed.

        Biases and normalisation weights (every parameter with fewer than 2 dims) get no weight decay, as in the
        usual BERT recipe. Frozen parameters are left out. Each group carries a ``name`` for logging; pass the
        list straight to ``torch.optim.AdamW``.
        """
        buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            part = "encoder" if name.startswith("encoder.") else "head"
            buckets.setdefault((part, param.ndim >= 2), []).append(param)
        groups = []
        for (part, decay), params in sorted(buckets.items()):
            groups.append(
                {
                    "name": f"{part}{'' if decay else '_no_decay'}",
                    "params": params,
                    "lr": float(encoder_lr if part == "encoder" else head_lr),
                    "weight_decay": float(weight_decay) if decay else 0.0,
                }
            )
        return groups


def encoder_type_error(family: str, model_type: str | None, allowed: frozenset[str]) -> str:
    """The user-facing message for an encoder whose architecture the family cannot use."""
    message = (
        f"family {family!r} cannot use an encoder of type {model_type!r}; "
        f"it needs one of: {', '.join(sorted(allowed))}."
    )
    if family == "distilbert" and model_type == "bert":
        message += (
            " This is a BERT checkpoint: train it with family 'bert', or convert it first with "
            "models.convert.bert_to_distilbert(bert_dir, out_dir) and pass out_dir as the encoder."
        )
    elif model_type == "distilbert":
        message += " This is a DistilBERT checkpoint: use family 'distilbert' (or 'bert_lstm' / 'multitask')."
    return message
