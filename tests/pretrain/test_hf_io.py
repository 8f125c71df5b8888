"""HF import/export: our exports load in transformers with equal outputs; any HF BERT dir loads in ours."""
import json
import logging

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertForMaskedLM,
    BertForPreTraining,
    BertModel,
)

from pretrain.hf_io import load_hf_pretrained, save_hf
from pretrain.modeling import ConfigError, LinkBertForPreTraining, model_config

SMALL = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=64)


def _randomised(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _inputs(vocab, b=2, s=12):
    torch.manual_seed(3)
    ids = torch.randint(5, vocab, (b, s))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return ids, mask, (torch.arange(s) >= 5).long().expand(b, s) * mask


def test_export_loads_in_transformers_with_equal_outputs(tmp_path, minilm_dir):
    torch.manual_seed(0)
    vocab = AutoTokenizer.from_pretrained(minilm_dir).vocab_size
    ours = _randomised(LinkBertForPreTraining(model_config("tiny", vocab_size=vocab, **SMALL))).eval()
    out = save_hf(ours, ours.config, tmp_path / "hf", tokenizer_dir=minilm_dir)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["architectures"] == ["BertForMaskedLM"]
    assert cfg["num_relations"] == 3 and cfg["vocab_size"] == vocab
    assert load_file(str(out / "model.safetensors"))["cls.seq_relationship.weight"].shape == (3, 32)

    ids, mask, tt = _inputs(vocab)
    with torch.no_grad():
        o = ours(ids, mask, tt, return_mlm_logits=True)
        mlm = AutoModelForMaskedLM.from_pretrained(out, attn_implementation="eager").eval()
        torch.testing.assert_close(mlm(input_ids=ids, attention_mask=mask, token_type_ids=tt).logits,
                                   o.mlm_logits, atol=1e-5, rtol=0)
        enc = AutoModel.from_pretrained(out, attn_implementation="eager").eval()
        e = enc(input_ids=ids, attention_mask=mask, token_type_ids=tt)
        torch.testing.assert_close(e.last_hidden_state, o.last_hidden_state, atol=1e-5, rtol=0)
        torch.testing.assert_close(e.pooler_output, ours.bert(ids, mask, tt)[1], atol=1e-5, rtol=0)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok("linked documents")["input_ids"] == AutoTokenizer.from_pretrained(minilm_dir)(
        "linked documents")["input_ids"]

    back = load_hf_pretrained(out)
    assert back.load_report["initialised"] == [] and not back.load_report["relation_rows_from_nsp"]
    for (name, a), b in zip(ours.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name


def test_save_hf_accepts_a_plain_state_dict(tmp_path):
    torch.manual_seed(1)
    ours = _randomised(LinkBertForPreTraining(model_config("tiny", vocab_size=50, **SMALL))).eval()
    # As consolidated from a DeepSpeed checkpoint: wrapper prefix, bf16, no tied duplicates needed.
    sd = {f"module.{k}": v.to(torch.bfloat16) for k, v in ours.state_dict().items()
          if not k.startswith("cls.predictions.decoder")}
    save_hf(sd, ours.config, tmp_path)
    back = load_hf_pretrained(tmp_path)
    torch.testing.assert_close(back.cls.seq_relationship.weight, ours.cls.seq_relationship.weight.to(
        torch.bfloat16).float())
    sd.pop("module.bert.pooler.dense.bias")
    with pytest.raises(ConfigError, match="bert.pooler.dense.bias"):
        save_hf(sd, ours.config, tmp_path / "x")


def test_minilm_weights_give_transformers_hidden_states(minilm_dir, caplog):
    with caplog.at_level(logging.WARNING):
        ours = load_hf_pretrained(minilm_dir).eval()
    report = ours.load_report
    assert report["loaded"] == 103 and report["unexpected"] == []
    assert "cls.predictions.transform.dense.weight" in report["initialised"]  # BertModel has no MLM head
    assert "initialised, not loaded" in caplog.text
    ref = BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    batch = tok(["Anarchism is a political philosophy.", "Links between documents carry knowledge "
                 "that a single document does not."], padding=True, return_tensors="pt")
    with torch.no_grad():
        want = ref(**batch).last_hidden_state
        got = ours.bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])[0]
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=0)


def test_nsp_head_seeds_contiguous_and_random_rows(tmp_path):
    torch.manual_seed(2)
    cfg = model_config("tiny", vocab_size=60, **SMALL)
    hf = _randomised(BertForPreTraining(cfg))
    hf.save_pretrained(tmp_path)
    ours = load_hf_pretrained(tmp_path)
    nsp_w, nsp_b = hf.cls.seq_relationship.weight, hf.cls.seq_relationship.bias
    assert torch.equal(ours.cls.seq_relationship.weight[:2], nsp_w)
    assert torch.equal(ours.cls.seq_relationship.bias[:2], nsp_b)
    assert ours.cls.seq_relationship.bias[2] == 0 and ours.cls.seq_relationship.weight[2].abs().sum() > 0
    assert ours.load_report["relation_rows_from_nsp"] and ours.load_report["initialised"] == []
    assert torch.equal(ours.cls.predictions.transform.dense.weight, hf.cls.predictions.transform.dense.weight)
    assert torch.equal(ours.cls.predictions.bias, hf.cls.predictions.bias)


def test_masked_lm_pytorch_bin_without_prefix_variants(tmp_path):
    torch.manual_seed(4)
    cfg = model_config("tiny", vocab_size=60, **SMALL)
    hf = _randomised(BertForMaskedLM(cfg))
    hf.config.to_json_file(tmp_path / "config.json")
    sd = {k.replace("LayerNorm.weight", "LayerNorm.gamma"): v for k, v in hf.state_dict().items()}
    torch.save(sd, tmp_path / "pytorch_model.bin")  # old format, TF-style LayerNorm names
    ours = load_hf_pretrained(tmp_path)
    assert set(ours.load_report["initialised"]) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias",
                                                     "cls.seq_relationship.weight", "cls.seq_relationship.bias"}
    ids, mask, tt = _inputs(60)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(ids, mask, tt, return_mlm_logits=True).mlm_logits,
                                   hf.eval()(input_ids=ids, attention_mask=mask, token_type_ids=tt).logits,
                                   atol=1e-5, rtol=0)


def test_import_errors_name_the_problem(tmp_path, minilm_dir):
    with pytest.raises(ConfigError, match="vocab_size"):
        load_hf_pretrained(minilm_dir, config_overrides={"vocab_size": 100})
    with pytest.raises(ConfigError, match="no config.json"):
        load_hf_pretrained(tmp_path)
    model_config("tiny", vocab_size=60, **SMALL).to_json_file(tmp_path / "config.json")
    with pytest.raises(ConfigError, match="no weights"):
        load_hf_pretrained(tmp_path)
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="encoder weights missing"):
        load_hf_pretrained(tmp_path)


def test_sharded_checkpoint(tmp_path):
    torch.manual_seed(5)
    hf = _randomised(BertForPreTraining(model_config("tiny", vocab_size=60, **SMALL)))
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ours = load_hf_pretrained(tmp_path)
    assert ours.load_report["initialised"] == []
    assert torch.equal(ours.bert.encoder.layer[1].output.dense.weight, hf.bert.encoder.layer[1].output.dense.weight)
