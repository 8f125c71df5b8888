"""A checkpoint written by the pretraining export (pretrain.hf_io.save_hf) fine-tunes with no conversion."""
import pytest
import torch
from safetensors.torch import load_file

from tests.finetune.helpers import finetune, rows
from tests.needs import need_module

hf_io = need_module("pretrain.hf_io")

pytestmark = pytest.mark.slow


def test_exported_linkbert_fine_tunes_as_is(tmp_path, minilm_dir):
    # a 2-layer LinkBERT started from the real MiniLM weights, exported with its relation head
    model = hf_io.load_hf_pretrained(minilm_dir, {"num_hidden_layers": 2})
    export = hf_io.save_hf(model, model.config, tmp_path / "hf", tokenizer_dir=minilm_dir)
    saved = load_file(str(export / "model.safetensors"))
    assert any(k.startswith("cls.seq_relationship.") for k in saved)   # the head LinkBERT adds is there

    out = finetune("seqcls", export, tmp_path / "run", train="seqcls_train.jsonl",
                   validation="seqcls_validation.jsonl", max_seq_length=48, save_model=True)
    gold = {r["id"]: r["label"] for r in rows("seqcls_validation.jsonl")}
    assert set(out["validation"]) == set(gold)   # predictions_validation.json: every row, nothing else
    acc = sum(out["validation"][i] == gold[i] for i in gold) / len(gold)
    assert out["metrics"]["validation"]["accuracy"] == pytest.approx(acc)

    # the fine-tuned encoder started from the exported weights: embeddings barely move in one short epoch
    from transformers import AutoModelForSequenceClassification
    tuned = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run", local_files_only=True)
    emb = tuned.bert.embeddings.word_embeddings.weight.detach()
    ref = saved["bert.embeddings.word_embeddings.weight"]
    assert emb.shape == ref.shape
    assert torch.allclose(emb, ref, atol=5e-3)
    rand = torch.nn.init.normal_(torch.empty_like(ref), std=0.02)
    assert not torch.allclose(rand, ref, atol=5e-3)
