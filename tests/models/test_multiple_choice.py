"""Multiple-choice heads: (B, C, T) in, (B, C) logits out, padded choices masked, the transformers layouts."""
from __future__ import annotations

import pytest
import torch

from models.base import IGNORE_INDEX
from models.encoders import load_encoder
from models.io import load_model, save_model
from models.multiple_choice import FAMILIES
from models.registry import build_model

POSITIONS = {"choice": ["0", "1", "2"]}


def _model(family, tiny_bert_dir, tiny_distilbert_dir, **options):
    encoder = load_encoder(tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir)
    torch.manual_seed(0)
    return FAMILIES[family](encoder.config, POSITIONS, encoder=encoder, **options).eval()


def _batch():
    """Two rows: three choices, and two choices plus a padded one (all-zero mask). (B=2, C=3, T=5)"""
    ids = torch.tensor([[[101, 2000, 102, 2001, 102], [101, 2000, 102, 2002, 102], [101, 2000, 102, 2003, 102]],
                        [[101, 2004, 102, 2005, 102], [101, 2004, 102, 2006, 102], [0, 0, 0, 0, 0]]])
    mask = (ids != 0).long()
    types = torch.tensor([0, 0, 0, 1, 1]).expand(2, 3, 5).clone() * mask
    return ids, mask, types


@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_mask_padded_choices_and_the_loss_reads_real_ones(family, tiny_bert_dir, tiny_distilbert_dir):
    model = _model(family, tiny_bert_dir, tiny_distilbert_dir)
    ids, mask, types = _batch()
    labels = torch.tensor([2, 1])
    out = model(ids, mask, labels=labels, token_type_ids=types)
    assert out.logits.shape == (2, 3)
    assert torch.isinf(out.logits[1, 2]) and torch.isfinite(out.logits[:, :2]).all() and torch.isfinite(out.loss)
    expected = torch.nn.functional.cross_entropy(out.logits, labels)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    probs = torch.softmax(out.logits, dim=-1)
    assert probs[1, 2].item() == 0.0 and torch.allclose(probs.sum(-1), torch.ones(2))
    # a row's choices score alone exactly as in the padded batch: padding changes nothing
    alone = model(ids[1:, :2], mask[1:, :2], token_type_ids=types[1:, :2]).logits
    assert torch.allclose(alone, out.logits[1:, :2], atol=1e-5)
    nothing = model(ids, mask, labels=torch.full((2,), IGNORE_INDEX)).loss
    assert nothing.item() == 0.0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_label_smoothing_spreads_over_real_choices_only(family, tiny_bert_dir, tiny_distilbert_dir):
    model = _model(family, tiny_bert_dir, tiny_distilbert_dir, label_smoothing=0.2)
    ids, mask, types = _batch()
    labels = torch.tensor([2, 1])
    out = model(ids, mask, labels=labels, token_type_ids=types)
    first = torch.nn.functional.cross_entropy(out.logits[:1], labels[:1], label_smoothing=0.2)
    second = torch.nn.functional.cross_entropy(out.logits[1:, :2], labels[1:], label_smoothing=0.2)
    assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(((first + second) / 2).item(), rel=1e-5)


def test_class_weights_and_flat_input_are_refused(tiny_bert_dir, tiny_distilbert_dir):
    with pytest.raises(ValueError, match="class_weights"):
        _model("bert", tiny_bert_dir, tiny_distilbert_dir, class_weights=[1.0, 1.0, 1.0])
    model = _model("bert", tiny_bert_dir, tiny_distilbert_dir)
    with pytest.raises(ValueError, match="rows, choices, tokens"):
        model(torch.tensor([[101, 102]]), torch.tensor([[1, 1]]))


@pytest.mark.parametrize("family,reference_name,prefix", [("bert", "BertForMultipleChoice", "bert."),
                                                          ("distilbert", "DistilBertForMultipleChoice", "distilbert.")])
def test_a_model_is_a_transformers_checkpoint_once_renamed(family, reference_name, prefix, tiny_bert_dir,
                                                           tiny_distilbert_dir):
    """Same weights in transformers' multiple-choice class (keys ``bert.*`` / ``distilbert.*``, the head's names)
    give the same logits, within 1e-4."""
    import transformers

    model = _model(family, tiny_bert_dir, tiny_distilbert_dir)
    config = transformers.AutoConfig.from_pretrained(tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir)
    reference = getattr(transformers, reference_name)(config).eval()
    renamed = {(prefix + k[len("encoder."):] if k.startswith("encoder.") else k[len("head."):]): v
               for k, v in model.state_dict().items()}
    missing, unexpected = reference.load_state_dict(renamed, strict=False)
    assert not unexpected and not [k for k in missing if "position_ids" not in k]
    ids, mask, types = _batch()
    ids, mask, types = ids[:1], mask[:1], types[:1]  # transformers has no padded choices
    extra = {"token_type_ids": types} if family == "bert" else {}
    expected = reference(input_ids=ids, attention_mask=mask, **extra).logits
    assert torch.allclose(model(ids, mask, token_type_ids=types).logits, expected, atol=1e-4)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_save_and_load_round_trip(family, tiny_bert_dir, tiny_distilbert_dir, tmp_path):
    from models.encoders import load_tokenizer

    encoder = tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir
    model = build_model(family, POSITIONS, encoder, task_type="multiple-choice", dropout=0.0).eval()
    model.max_length = 32
    save_model(model, load_tokenizer(encoder), tmp_path)
    loaded, _ = load_model(tmp_path)
    assert loaded.task_type == "multiple-choice" and loaded.max_length == 32 and loaded.tasks == model.tasks
    ids, mask, types = _batch()
    assert torch.allclose(loaded(ids, mask, token_type_ids=types).logits,
                          model(ids, mask, token_type_ids=types).logits, atol=1e-6)


def test_the_export_config_names_the_multiple_choice_class(tiny_distilbert_dir, tmp_path):
    """A multiple-choice model exports as DistilBertForMultipleChoice (no labels: one output per choice); a task type
    without a transformers declaration is never mapped as another's (same head names, other shapes)."""
    from core.hf_format import hf_config, hf_export_problem
    from models.encoders import load_tokenizer
    from models.io import read_model_config

    model = build_model("distilbert", POSITIONS, tiny_distilbert_dir, task_type="multiple-choice")
    save_model(model, load_tokenizer(tiny_distilbert_dir), tmp_path)
    config = read_model_config(tmp_path)
    assert hf_export_problem(config) is None
    exported = hf_config(config)
    assert exported["architectures"] == ["DistilBertForMultipleChoice"] and "id2label" not in exported
    assert "summarization" in hf_export_problem({**config, "task_type": "summarization"})
