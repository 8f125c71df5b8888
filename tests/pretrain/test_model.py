"""LinkBertForPreTraining against transformers' BertForPreTraining and independent loss computations."""
import json

import pytest
import torch
import torch.nn.functional as F
from transformers import BertForPreTraining

from pretrain import kernels
from pretrain.kernels import reference
from pretrain.modeling import NUM_RELATIONS, ConfigError, LinkBertForPreTraining, model_config

CONFIGS = [  # (layers, hidden, heads, intermediate, vocab, act)
    (1, 32, 2, 64, 97, "gelu"),
    (2, 48, 3, 80, 150, "gelu"),
    (3, 64, 8, 96, 211, "relu"),
]


def _pair(layers, hidden, heads, inter, vocab, act, seed=0, **kw):
    cfg = dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, intermediate_size=inter,
               vocab_size=vocab, hidden_act=act, max_position_embeddings=64)
    torch.manual_seed(seed)
    ours = LinkBertForPreTraining(model_config("tiny", **cfg), **kw).eval()
    # Non-trivial LayerNorm and bias values so a swapped or dropped parameter shows.
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    hf = BertForPreTraining(model_config("tiny", attn_implementation="eager", **cfg))
    hf.cls.seq_relationship = torch.nn.Linear(hidden, NUM_RELATIONS)
    hf.load_state_dict(ours.state_dict(), strict=True)
    return ours, hf.eval()


def _batch(vocab, b=3, s=16, pad=True, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    if pad:
        for i, n in enumerate([s, s - 5, 7][:b]):
            mask[i, n:] = 0
            ids[i, n:] = 0
    tt = torch.zeros_like(ids)
    tt[:, s // 3:] = 1
    tt *= mask
    return ids, mask, tt


def _masks(mask, p=4, seed=2):
    """Fixed P masked positions per row among real tokens (1..len-1), padded with 0 / -100."""
    g = torch.Generator().manual_seed(seed)
    b = mask.shape[0]
    pos = torch.zeros(b, p, dtype=torch.long)
    for i in range(b):
        n = int(mask[i].sum())
        k = min(p - (i % 2), n - 1)  # some rows have padding slots
        pos[i, :k] = torch.randperm(n - 1, generator=g)[:k] + 1
    return pos


def test_state_dict_names_are_transformers_names():
    ours, hf = _pair(*CONFIGS[0])
    assert list(ours.state_dict()) == list(hf.state_dict())
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight
    assert ours.cls.predictions.decoder.bias is ours.cls.predictions.bias
    assert ours.cls.seq_relationship.weight.shape == (NUM_RELATIONS, 32)


@pytest.mark.parametrize("conf", CONFIGS, ids=lambda c: f"L{c[0]}H{c[1]}{c[5]}")
@pytest.mark.parametrize("pad", [False, True], ids=["nopad", "pad"])
def test_matches_hf_bert_for_pretraining(conf, pad):
    ours, hf = _pair(*conf)
    ids, mask, tt = _batch(conf[4], pad=pad)
    with torch.no_grad():
        o = ours(ids, mask, tt, return_mlm_logits=True)
        h = hf(input_ids=ids, attention_mask=mask, token_type_ids=tt, output_hidden_states=True)
    torch.testing.assert_close(o.last_hidden_state, h.hidden_states[-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(o.mlm_logits, h.prediction_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(o.relation_logits, h.seq_relationship_logits, atol=1e-5, rtol=0)
    # Sparse logits at masked positions are the dense logits gathered there.
    pos = _masks(mask)
    with torch.no_grad():
        sparse = ours(ids, mask, tt, masked_positions=pos, return_mlm_logits=True).mlm_logits
    want = torch.stack([h.prediction_logits[i, pos[i]] for i in range(len(pos))])
    torch.testing.assert_close(sparse, want, atol=1e-5, rtol=0)


def test_unpadded_path_matches_padded():
    """The varlen (unpad -> packed attention -> repad) path, run with its PyTorch attention."""
    ours, _ = _pair(*CONFIGS[1])
    ids, mask, tt = _batch(CONFIGS[1][4], pad=True)
    with torch.no_grad():
        a = ours(ids, mask, tt, return_mlm_logits=True)
        ours.bert.attention = "varlen"
        b = ours(ids, mask, tt, return_mlm_logits=True)
    real = mask.bool()
    torch.testing.assert_close(b.last_hidden_state[real], a.last_hidden_state[real], atol=1e-5, rtol=0)
    assert b.last_hidden_state[~real].abs().max() == 0
    torch.testing.assert_close(b.relation_logits, a.relation_logits, atol=1e-5, rtol=0)
    # the same with the loader's unpadding metadata (what training passes: no host sync in the model)
    lens = mask.sum(1)
    meta = {"cu_seqlens": F.pad(lens.cumsum(0), (1, 0)).to(torch.int32), "max_seqlen": int(lens.max()),
            "unpad_indices": mask.reshape(-1).nonzero().squeeze(1)}
    with torch.no_grad():
        c = ours(ids, mask, tt, return_mlm_logits=True, **meta)
    assert torch.equal(c.last_hidden_state, b.last_hidden_state)


def _dense_reference_loss(hf, ids, mask, tt, pos, labels, rel):
    """Loss from transformers' full [B, S, V] logits and HF-style [B, S] labels."""
    out = hf(input_ids=ids, attention_mask=mask, token_type_ids=tt)
    full = torch.full_like(ids, -100)
    for i in range(len(pos)):
        keep = labels[i] != -100
        full[i, pos[i][keep]] = labels[i][keep]
    mlm = F.cross_entropy(out.prediction_logits.reshape(-1, out.prediction_logits.shape[-1]), full.view(-1))
    return mlm, F.cross_entropy(out.seq_relationship_logits, rel)


@pytest.mark.parametrize("fused", [False, True], ids=["dense_ce", "chunked_ce"])
def test_sparse_loss_equals_dense_loss(fused):
    conf = CONFIGS[1]
    ours, hf = _pair(*conf, fused_mlm_loss=fused, ce_chunk_size=37)  # 37 does not divide the vocab
    ids, mask, tt = _batch(conf[4])
    pos = _masks(mask)
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, conf[4], pos.shape, generator=g)
    labels[pos == 0] = -100
    rel = torch.tensor([0, 2, 1])
    o = ours(ids, mask, tt, masked_positions=pos, masked_labels=labels, relation_labels=rel)
    mlm, rl = _dense_reference_loss(hf, ids, mask, tt, pos, labels, rel)
    torch.testing.assert_close(o.mlm_loss, mlm, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(o.relation_loss, rl, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(o.loss, mlm + rl, atol=1e-5, rtol=1e-5)
    assert int(o.num_masked) == int((labels != -100).sum())
    # Gradients of every parameter agree with transformers' dense computation.
    o.loss.backward()
    (mlm + rl).backward()
    hf_grads = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, hf_grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_no_masked_tokens_gives_zero_mlm_loss_not_nan():
    ours, _ = _pair(*CONFIGS[0])
    ids, mask, tt = _batch(CONFIGS[0][4])
    pos = torch.zeros(3, 2, dtype=torch.long)
    o = ours(ids, mask, tt, masked_positions=pos, masked_labels=torch.full_like(pos, -100))
    assert o.mlm_loss.item() == 0.0 and o.relation_loss is None and o.loss.item() == 0.0


def test_chunked_cross_entropy_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(13, 6, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(13, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.tensor([3, -100, 12, 0, 7])
    torch.autograd.gradcheck(lambda *a: reference.linear_cross_entropy_chunked(*a, labels, 4), (h, w, b))
    want = reference.linear_cross_entropy_dense(h, w, b, labels)
    torch.testing.assert_close(reference.linear_cross_entropy_chunked(h, w, b, labels, 4), want)


def test_relation_head_gradcheck_float64():
    """d(relation loss)/d(pooler, relation head) against finite differences, in float64."""
    ours, _ = _pair(1, 16, 2, 32, 31, "gelu")
    ours = ours.double().eval()  # eval: no dropout, so the loss is a deterministic function
    ids, mask, tt = _batch(31, s=8)
    rel = torch.tensor([2, 0, 1])
    names = ("bert.pooler.dense.weight", "cls.seq_relationship.weight", "cls.seq_relationship.bias")
    params = dict(ours.named_parameters())

    def loss(*values):
        return torch.func.functional_call(ours, dict(zip(names, values)), (ids, mask, tt),
                                          {"relation_labels": rel}).relation_loss

    args = tuple(params[n].detach().clone().requires_grad_() for n in names)
    assert torch.autograd.gradcheck(loss, args, fast_mode=True)  # random projections of the Jacobian


def test_init_weights_is_bert_init():
    torch.manual_seed(0)
    m = LinkBertForPreTraining(model_config("tiny", vocab_size=5000, initializer_range=0.05))
    w = m.bert.encoder.layer[0].intermediate.dense.weight
    assert abs(w.std().item() - 0.05) < 0.003 and abs(w.mean().item()) < 0.003
    assert m.bert.embeddings.word_embeddings.weight[0].abs().max() == 0  # padding row
    assert (m.bert.encoder.layer[1].output.LayerNorm.weight == 1).all()
    assert (m.cls.predictions.bias == 0).all() and (m.cls.seq_relationship.bias == 0).all()


def test_presets_and_config_files(tmp_path):
    tiny = model_config("tiny", vocab_size=1234)
    assert (tiny.num_hidden_layers, tiny.hidden_size, tiny.num_attention_heads, tiny.intermediate_size) == (
        2, 128, 2, 512)
    assert tiny.vocab_size == 1234 and tiny.num_relations == 3
    base, large = model_config("base"), model_config("large")
    assert (base.num_hidden_layers, base.hidden_size, large.num_hidden_layers, large.hidden_size) == (
        12, 768, 24, 1024)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 64,
                                                      "num_attention_heads": 4, "num_hidden_layers": 1,
                                                      "intermediate_size": 100, "vocab_size": 77}))
    c = model_config(str(tmp_path), vocab_size=80)
    assert (c.hidden_size, c.vocab_size, c.intermediate_size) == (64, 80, 100)
    with pytest.raises(ConfigError, match="not a model shape"):
        model_config("huge")
    with pytest.raises(ConfigError, match="multiple of num_attention_heads"):
        model_config("tiny", num_attention_heads=3)


def test_kernel_mode_dispatch_on_cpu():
    x = torch.randn(4, 8)
    assert kernels.kernel_mode() in ("auto", "torch")
    assert not kernels.use_triton(x)  # CPU tensors take the PyTorch path unless forced
    with pytest.raises(ValueError):
        kernels.set_kernel_mode("cuda")


def test_chunked_mlm_loss_keeps_no_full_logits():
    """With the fused path on, nothing saved for the backward is as large as [masked rows, V] logits."""
    conf = CONFIGS[1]
    ours, _ = _pair(*conf, fused_mlm_loss=True, ce_chunk_size=37)
    ids, mask, tt = _batch(conf[4])
    pos = _masks(mask, p=6)
    labels = torch.randint(0, conf[4], pos.shape)
    n, v = pos.numel(), conf[4]
    weight = ours.bert.embeddings.word_embeddings.weight
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        ours(ids, mask, tt, masked_positions=pos, masked_labels=labels)
    big = [tuple(t.shape) for t in saved if t.shape[-1:] == (v,) and t.numel() >= n * v
           and t.data_ptr() != weight.data_ptr()]
    assert not big, big
    saved.clear()
    ours.fused_mlm_loss = False  # the dense path does keep them: the check can fail
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        ours(ids, mask, tt, masked_positions=pos, masked_labels=labels)
    assert any(tuple(t.shape) == (n, v) for t in saved)
