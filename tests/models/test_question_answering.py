"""QA heads: shapes, the start/end loss, HF-style keyword arguments, saving, and the transformers layout."""
from __future__ import annotations

import pytest
import torch

from models.encoders import load_encoder, load_tokenizer
from models.io import load_model, save_model
from models.question_answering import FAMILIES, TASK
from models.registry import build_model, model_class


def _model(family, tiny_bert_dir, tiny_distilbert_dir, **options):
    encoder = load_encoder(tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir)
    torch.manual_seed(0)
    return FAMILIES[family](encoder.config, encoder=encoder, **options).eval()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_start_end_logits_and_loss(family, tiny_bert_dir, tiny_distilbert_dir):
    model = _model(family, tiny_bert_dir, tiny_distilbert_dir)
    ids = torch.tensor([[101, 2000, 2001, 102, 2003, 102], [101, 2002, 102, 2004, 102, 0]])  # (B=2, T=6)
    mask = (ids != 0).long()
    starts, ends = torch.tensor([4, 0]), torch.tensor([4, 0])
    out = model(ids, mask, start_positions=starts, end_positions=ends)
    assert out.logits.shape == (2, 6, 2) and out.start_logits.shape == (2, 6) and out.end_logits.shape == (2, 6)
    expected = (torch.nn.functional.cross_entropy(out.start_logits, starts)
                + torch.nn.functional.cross_entropy(out.end_logits, ends)) / 2
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the shared loop's form: labels (B, 2) as the one task's
    assert model(ids, mask, labels={TASK: torch.stack([starts, ends], 1)}).loss.item() == pytest.approx(out.loss.item())
    assert model(ids, mask).loss is None
    with pytest.raises(ValueError):
        model(ids, mask, labels=torch.tensor([1, 2]))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_padding_is_nobodys_answer_and_leaves_the_loss_alone(family, tiny_bert_dir, tiny_distilbert_dir):
    model = _model(family, tiny_bert_dir, tiny_distilbert_dir, label_smoothing=0.2)
    ids = torch.tensor([[101, 2000, 2001, 102, 2003, 102], [101, 2002, 102, 2004, 102, 0]])  # (B=2, T=6)
    mask = (ids != 0).long()
    labels = torch.tensor([[4, 4], [3, 3]])
    out = model(ids, mask, labels=labels)
    assert torch.isinf(out.logits[1, 5]).all() and torch.isfinite(out.logits[mask.bool()]).all()
    wider = torch.nn.functional.pad(ids, (0, 4))  # four more padded positions: the same loss, smoothing included
    assert model(wider, (wider != 0).long(), labels=labels).loss.item() == pytest.approx(out.loss.item(), rel=1e-5)
    rows = []  # smoothing spreads over each row's real positions: F.cross_entropy on the unpadded logits
    for b, real in enumerate(mask.sum(1).tolist()):
        for side in (0, 1):
            rows.append(torch.nn.functional.cross_entropy(out.logits[b:b + 1, :real, side], labels[b:b + 1, side],
                                                          label_smoothing=0.2))
    expected = (torch.stack(rows[0::2]).mean() + torch.stack(rows[1::2]).mean()) / 2  # (start + end) / 2
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    on_padding = model(ids, mask, labels=torch.tensor([[4, 4], [5, 5]])).loss  # row 2's position 5 is padding
    assert on_padding.item() == pytest.approx(model(ids[:1], mask[:1], labels=labels[:1]).loss.item(), rel=1e-5)
    gone = model(ids, mask, labels=torch.tensor([[99, 99], [99, 99]])).loss  # past the window: ignored
    assert gone.item() == 0.0 and gone.requires_grad  # a zero still attached to the graph, never NaN


def test_registry_builds_it_and_io_round_trips(tiny_bert_dir, tmp_path):
    assert model_class("distilbert", "question-answering") is FAMILIES["distilbert"]
    model = build_model("bert", {TASK: ["start", "end"]}, tiny_bert_dir, task_type="question-answering",
                        no_answer=True).eval()
    model.max_length, model.stride = 64, 16
    save_model(model, load_tokenizer(tiny_bert_dir), tmp_path)
    loaded, _ = load_model(tmp_path)
    assert loaded.no_answer and loaded.stride == 16 and loaded.max_length == 64
    ids = torch.tensor([[101, 2000, 2001, 102, 2003, 102]])
    assert torch.allclose(model(ids, torch.ones_like(ids)).logits, loaded(ids, torch.ones_like(ids)).logits)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_transformers_checkpoint_once_renamed(family, tiny_bert_dir, tiny_distilbert_dir):
    """Same weights in Bert/DistilBertForQuestionAnswering (keys ``bert.*`` / ``distilbert.*``, ``qa_outputs.*``)
    give the same start and end logits."""
    from transformers import AutoConfig, BertForQuestionAnswering, DistilBertForQuestionAnswering

    model = _model(family, tiny_bert_dir, tiny_distilbert_dir)
    directory = tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir
    reference_class = DistilBertForQuestionAnswering if family == "distilbert" else BertForQuestionAnswering
    reference = reference_class(AutoConfig.from_pretrained(directory)).eval()
    prefix = "distilbert." if family == "distilbert" else "bert."
    renamed = {(prefix + k[len("encoder."):] if k.startswith("encoder.") else k[len("head."):]): v
               for k, v in model.state_dict().items()}
    missing, unexpected = reference.load_state_dict(renamed, strict=False)
    assert not unexpected and not [k for k in missing if "position_ids" not in k]
    ids = torch.tensor([[101, 2000, 2001, 102, 2003, 102]])
    mask = torch.ones_like(ids)
    ours, theirs = model(ids, mask), reference(input_ids=ids, attention_mask=mask)
    assert torch.allclose(ours.start_logits, theirs.start_logits, atol=1e-5)
    assert torch.allclose(ours.end_logits, theirs.end_logits, atol=1e-5)
