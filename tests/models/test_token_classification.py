"""Token heads: shapes, the per-token loss, padding invariance, and the transformers layout."""
from __future__ import annotations

import pytest
import torch

from models.base import IGNORE_INDEX
from models.encoders import load_encoder
from models.token_classification import FAMILIES

TAGS = {"ner": ["O", "B-person", "I-person"]}


def _model(family, tiny_bert_dir, tiny_distilbert_dir, **options):
    encoder = load_encoder(tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir)
    torch.manual_seed(0)
    return FAMILIES[family](encoder.config, TAGS, encoder=encoder, **options).eval()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_token_logits_and_loss_over_scored_positions_only(family, tiny_bert_dir, tiny_distilbert_dir):
    model = _model(family, tiny_bert_dir, tiny_distilbert_dir)
    ids = torch.tensor([[101, 2000, 2001, 102], [101, 2002, 102, 0]])  # (B=2, T=4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    labels = torch.tensor([[IGNORE_INDEX, 1, 2, IGNORE_INDEX], [IGNORE_INDEX, 0, IGNORE_INDEX, IGNORE_INDEX]])
    out = model(ids, mask, labels=labels)
    assert out.logits.shape == (2, 4, 3)
    expected = torch.nn.functional.cross_entropy(out.logits[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX])
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    nothing = model(ids, mask, labels=torch.full_like(labels, IGNORE_INDEX)).loss
    assert nothing.item() == 0.0 and nothing.requires_grad


@pytest.mark.parametrize("family", list(FAMILIES))
def test_padding_changes_no_real_token(family, tiny_bert_dir, tiny_distilbert_dir):
    model = _model(family, tiny_bert_dir, tiny_distilbert_dir)
    ids = torch.tensor([[101, 2000, 2001, 102]])
    short = model(ids, torch.ones_like(ids)).logits  # (1, 4, C)
    padded_ids = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    padded_mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]])
    padded = model(padded_ids, padded_mask).logits[:, :4]
    assert torch.allclose(short, padded, atol=1e-5)


def test_multi_label_is_refused():
    assert not FAMILIES["bert"].supports_multi_label


def test_bert_token_model_is_a_transformers_checkpoint_once_renamed(tiny_bert_dir, tiny_distilbert_dir):
    """Same weights in BertForTokenClassification (keys ``bert.*``, ``classifier.*``) give the same logits."""
    from transformers import BertConfig, BertForTokenClassification

    model = _model("bert", tiny_bert_dir, tiny_distilbert_dir)
    config = BertConfig.from_pretrained(tiny_bert_dir, num_labels=3)
    reference = BertForTokenClassification(config).eval()
    renamed = {("bert." + k[len("encoder."):] if k.startswith("encoder.") else k[len("head."):]): v
               for k, v in model.state_dict().items()}
    missing, unexpected = reference.load_state_dict(renamed, strict=False)
    assert not unexpected and not [k for k in missing if "position_ids" not in k]
    ids = torch.tensor([[101, 2000, 2001, 102]])
    mask = torch.ones_like(ids)
    assert torch.allclose(model(ids, mask).logits, reference(input_ids=ids, attention_mask=mask).logits, atol=1e-5)
