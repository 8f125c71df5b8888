"""LinkBERT for pretraining: a BERT encoder with transformers' parameter names, a sparse masked-LM head
(decoder tied to the word embeddings) and the 3-way document-relation head (contiguous/random/linked).

``state_dict()`` keys are exactly those of ``transformers.BertForPreTraining`` (the relation head is
``cls.seq_relationship`` with 3 rows), so HF tools load the weights with no conversion (see hf_io.py).
Speed comes from doing less work: MLM logits only at masked positions, optional unpadded attention
(FlashAttention varlen on CUDA) and fused kernels (pretrain/kernels) for memory-bound ops.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from . import kernels
from .presets import MODEL_SHAPES, NUM_RELATIONS, RELATION_NAMES, ConfigError, model_config

__all__ = ["NUM_RELATIONS", "RELATION_NAMES", "MODEL_SHAPES", "ConfigError", "BertConfig", "model_config",
           "LinkBertOutput", "LinkBertModel", "LinkBertForPreTraining", "flash_attn_available",
           "selection"]


@dataclass
class LinkBertOutput(ModelOutput):  # a ModelOutput (dict) so DeepSpeed ZeRO-3 hooks see its tensors
    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    relation_loss: torch.Tensor | None = None
    relation_logits: torch.Tensor | None = None   # [B, 3]
    mlm_logits: torch.Tensor | None = None        # [B, P, V] at masked_positions ([B, S, V] without them)
    last_hidden_state: torch.Tensor | None = None  # [B, S, H]
    num_masked: torch.Tensor | None = None        # real masked tokens in the batch (a tensor: no host sync)


@functools.lru_cache(maxsize=1)
def flash_attn_status() -> tuple[bool, str]:
    """(usable, why), asked once per process: importing flash_attn loads its CUDA extension, so a
    wheel built for another torch/CUDA fails here (and is reported) rather than in the first forward."""
    try:
        import flash_attn
        from flash_attn import flash_attn_varlen_func  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any failure means "use SDPA"
        return False, f"flash_attn not importable ({type(e).__name__}: {str(e)[:80]})"
    if not torch.cuda.is_available():
        return False, "flash_attn installed but no CUDA device"
    return True, f"flash_attn {getattr(flash_attn, '__version__', '?')} varlen"


def flash_attn_available() -> bool:
    return flash_attn_status()[0]


def selection(model: LinkBertForPreTraining | None = None, device=None,
              dtype: torch.dtype | None = None) -> dict:
    """What the model will run on ``device`` in ``dtype`` and why: attention (flash varlen / sdpa /
    varlen-torch reference), fused kernels (triton / torch), cross-entropy path, LayerNorm (apex / torch;
    residual LayerNorms triton / torch). Plain data, for a start-up log line and run.json."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    dtype = dtype or torch.float32
    mode = model.bert.attention if model is not None else "auto"
    half = dtype in (torch.float16, torch.bfloat16)
    fa_ok, fa_why = flash_attn_status()
    if mode == "sdpa":
        attn, why = "sdpa", "attention='sdpa' (padded)"
    elif device.type == "cuda" and half and fa_ok:
        attn, why = "flash_varlen", f"{fa_why}, unpadded ({mode})"
    elif mode == "varlen":
        attn = "varlen_torch"
        why = ("attention='varlen' forced, PyTorch reference: "
               + (fa_why if not fa_ok else "not CUDA" if device.type != "cuda" else "flash-attn needs fp16/bf16"))
    else:
        attn = "sdpa"
        why = ("padded SDPA: " + ("not CUDA" if device.type != "cuda" else
                                  f"dtype {str(dtype).replace('torch.', '')}" if not half else fa_why))
    out = {"attention": attn, "attention_why": why, "device": str(device),
           "dtype": str(dtype).replace("torch.", "")}
    out.update(kernels.selection(device))
    if model is not None:
        fused = model.fused_mlm_loss
        out["mlm_loss"] = ("fused" if (device.type == "cuda" if fused is None else fused) else "dense")
        out["mlm_loss_why"] = "fused_mlm_loss=" + ("auto (fused on CUDA)" if fused is None else str(fused))
        out["ce_chunk_size"] = model.ce_chunk_size
    return out


def _torch_varlen_attention(q, k, v, cu_seqlens, max_seqlen, dropout_p, scale):
    """Reference for flash_attn_varlen_func ([T, heads, dim] packed sequences); used where flash-attn
    is missing so the unpadded path stays testable on CPU."""
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (t[s:e].transpose(0, 1) for t in (q, k, v))
        out[s:e] = F.scaled_dot_product_attention(qs, ks, vs, dropout_p=dropout_p, scale=scale).transpose(0, 1)
    return out


def varlen_attention(q, k, v, cu_seqlens, max_seqlen, dropout_p, scale):
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and flash_attn_available():
        from flash_attn import flash_attn_varlen_func
        return flash_attn_varlen_func(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                                      dropout_p=dropout_p, softmax_scale=scale)
    return _torch_varlen_attention(q, k, v, cu_seqlens, max_seqlen, dropout_p, scale)


@dataclass
class _Varlen:
    cu_seqlens: torch.Tensor  # [B+1] int32
    max_seqlen: int


def _layer_norm(config):
    return kernels.layer_norm_class()(config.hidden_size, eps=config.layer_norm_eps)


# Every parameter is used inside the forward of the module that owns it: DeepSpeed ZeRO-3 gathers a
# module's partitioned parameters only around that module's own forward.
class ResidualLayerNorm(nn.LayerNorm):
    """LayerNorm(x + residual) in one fused op; parameters named as nn.LayerNorm's."""

    def forward(self, x, residual):
        return kernels.add_layer_norm(x, residual, self.weight, self.bias, self.eps)


class LinearAct(nn.Linear):
    """Linear + activation; for BERT's erf GELU on the Triton path the bias add is fused into the
    activation kernel."""

    def __init__(self, in_features, out_features, act: str):
        super().__init__(in_features, out_features)
        self.act = act

    def forward(self, x):
        if self.act == "gelu" and kernels.use_triton(x):
            return kernels.bias_gelu(F.linear(x, self.weight), self.bias)
        return ACT2FN[self.act](super().forward(x))  # on CPU addmm already fuses the bias


class TiedDecoder(nn.Linear):
    """The MLM decoder (weight = word embeddings, bias = cls.predictions.bias): logits, or the summed
    cross-entropy straight from the hidden states (``labels`` given) without keeping [N, V] logits."""

    def forward(self, hidden, labels=None, fused: bool = False, chunk_size: int = 4096):
        if labels is None:
            return super().forward(hidden)
        return kernels.linear_cross_entropy(hidden, self.weight, self.bias, labels, fused=fused,
                                            chunk_size=chunk_size)


class LinkBertEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = _layer_norm(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings)[None],
                             persistent=False)

    def forward(self, input_ids, token_type_ids):
        seq_len = input_ids.shape[1]
        emb = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
               + self.position_embeddings(self.position_ids[:, :seq_len]))
        return self.dropout(self.LayerNorm(emb))


class LinkBertSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, hidden, attn_mask, varlen: _Varlen | None):
        p = self.dropout_p if self.training else 0.0
        scale = 1.0 / math.sqrt(self.head_dim)
        if varlen is not None:  # hidden: [T, H], padding removed
            t = hidden.shape[0]
            q, k, v = (lin(hidden).view(t, self.num_heads, self.head_dim)
                       for lin in (self.query, self.key, self.value))
            return varlen_attention(q, k, v, varlen.cu_seqlens, varlen.max_seqlen, p, scale).reshape(t, -1)
        b, s, h = hidden.shape
        q, k, v = (lin(hidden).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
                   for lin in (self.query, self.key, self.value))
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p, scale=scale)
        return ctx.transpose(1, 2).reshape(b, s, h)


class LinkBertBlockOutput(nn.Module):
    """dense -> dropout -> residual add + LayerNorm: closes both the attention and the feed-forward block."""

    def __init__(self, config, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = ResidualLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden)), residual)


class LinkBertAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = LinkBertSelfAttention(config)
        self.output = LinkBertBlockOutput(config, config.hidden_size)

    def forward(self, hidden, attn_mask, varlen):
        return self.output(self.self(hidden, attn_mask, varlen), hidden)


class LinkBertIntermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = LinearAct(config.hidden_size, config.intermediate_size, config.hidden_act)

    def forward(self, hidden):
        return self.dense(hidden)


class LinkBertLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = LinkBertAttention(config)
        self.intermediate = LinkBertIntermediate(config)
        self.output = LinkBertBlockOutput(config, config.intermediate_size)

    def forward(self, hidden, attn_mask, varlen):
        a = self.attention(hidden, attn_mask, varlen)
        return self.output(self.intermediate(a), a)


class LinkBertEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList(LinkBertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden, attn_mask, varlen):
        for layer in self.layer:
            hidden = layer(hidden, attn_mask, varlen)
        return hidden


class LinkBertPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))


class LinkBertModel(nn.Module):
    """The encoder (transformers' ``bert.*``). ``attention``: "auto" (unpadded FlashAttention when
    flash-attn is installed and the batch is on CUDA in half precision, else padded SDPA), "sdpa",
    or "varlen" (forced; without flash-attn a slow PyTorch reference, for tests)."""

    def __init__(self, config, attention: str = "auto"):
        super().__init__()
        self.config = config
        self.embeddings = LinkBertEmbeddings(config)
        self.encoder = LinkBertEncoder(config)
        self.pooler = LinkBertPooler(config)
        if attention not in ("auto", "sdpa", "varlen"):
            raise ConfigError(f"attention={attention!r}: use auto, sdpa or varlen")
        self.attention = attention

    def _use_varlen(self, x, attention_mask) -> bool:
        if attention_mask is None or self.attention == "sdpa":
            return False
        if self.attention == "varlen":
            return True
        return x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and flash_attn_available()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, cu_seqlens=None, max_seqlen=None,
                unpad_indices=None):
        """Returns (sequence_output [B, S, H], pooled_output [B, H]).

        ``cu_seqlens`` [B+1] int32, ``max_seqlen`` (host int) and ``unpad_indices`` (flat positions of the
        real tokens) come from the loader, which knows the lengths: computing them here from the mask
        would make the host wait for the device (nonzero, lens.max()) every micro-batch."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        emb = self.embeddings(input_ids, token_type_ids)
        b, s, h = emb.shape
        if self._use_varlen(emb, attention_mask):
            if cu_seqlens is None or unpad_indices is None or max_seqlen is None:   # callers without a loader
                unpad_indices = attention_mask.reshape(-1).bool().nonzero().squeeze(1)
                lens = attention_mask.sum(1, dtype=torch.int32)
                cu_seqlens = F.pad(lens.cumsum(0, dtype=torch.int32), (1, 0))
                max_seqlen = int(lens.max())
            idx = unpad_indices
            packed = self.encoder(emb.reshape(b * s, h).index_select(0, idx), None, _Varlen(cu_seqlens, max_seqlen))
            seq = packed.new_zeros(b * s, h).index_copy(0, idx, packed).view(b, s, h)
        else:
            mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
            seq = self.encoder(emb, mask, None)
        return seq, self.pooler(seq)


class LinkBertPredictionHeadTransform(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = LinearAct(config.hidden_size, config.hidden_size, config.hidden_act)
        self.LayerNorm = _layer_norm(config)

    def forward(self, hidden):
        return self.LayerNorm(self.dense(hidden))


class LinkBertLMPredictionHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.transform = LinkBertPredictionHeadTransform(config)
        self.decoder = TiedDecoder(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias  # as transformers: cls.predictions.decoder.bias is cls.predictions.bias


class LinkBertPreTrainingHeads(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = LinkBertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, NUM_RELATIONS)


class LinkBertForPreTraining(nn.Module):
    """Encoder + sparse MLM head + relation head; loss = mean MLM CE over masked tokens + relation CE.

    ``fused_mlm_loss``: None = auto (on CUDA: decoder and CE fused, vocabulary-chunked, no [N, V]
    logits; on CPU the dense CE over the masked rows, which is faster there), True/False to force.
    """

    def __init__(self, config: BertConfig, attention: str = "auto", fused_mlm_loss: bool | None = None,
                 ce_chunk_size: int = 4096):
        super().__init__()
        if getattr(config, "num_relations", NUM_RELATIONS) != NUM_RELATIONS:
            raise ConfigError(f"config.num_relations={config.num_relations}: must be {NUM_RELATIONS}")
        config.num_relations = NUM_RELATIONS
        self.config = config
        self.bert = LinkBertModel(config, attention=attention)
        self.cls = LinkBertPreTrainingHeads(config)
        self.fused_mlm_loss = fused_mlm_loss
        self.ce_chunk_size = ce_chunk_size
        self.tie_weights()
        self.init_weights()

    def tie_weights(self):
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    @torch.no_grad()
    def _init_module(self, m):
        std = self.config.initializer_range
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, std)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.Embedding):
            m.weight.normal_(0.0, std)
            if m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
        elif hasattr(m, "weight") and hasattr(m, "bias") and "LayerNorm" in type(m).__name__:
            m.weight.fill_(1.0)
            m.bias.zero_()
        elif isinstance(m, LinkBertLMPredictionHead):
            m.bias.zero_()

    def init_weights(self):
        """BERT's initialisation: normal(0, initializer_range) weights, zero biases, LayerNorm 1/0.
        The tied decoder is skipped (it is the word embedding matrix, initialised once)."""
        decoder = self.cls.predictions.decoder
        for m in self.modules():
            if m is not decoder:
                self._init_module(m)

    def _mlm_fused(self, x) -> bool:
        return x.is_cuda if self.fused_mlm_loss is None else self.fused_mlm_loss

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, masked_positions=None,
                masked_labels=None, relation_labels=None, return_mlm_logits: bool = False, cu_seqlens=None,
                max_seqlen=None, unpad_indices=None) -> LinkBertOutput:
        """masked_positions [B, P] int64 (padded with 0) and masked_labels [B, P] (-100 at padding).
        Without masked_positions, masked_labels may be [B, S] (HF style) and every position is scored."""
        seq, pooled = self.bert(input_ids, attention_mask, token_type_ids, cu_seqlens, max_seqlen, unpad_indices)
        out = LinkBertOutput(last_hidden_state=seq)
        head = self.cls.predictions
        if masked_labels is not None or return_mlm_logits:
            if masked_positions is not None:
                # Fixed P per sequence: a gather with a static shape, no host sync, no boolean indexing.
                idx = masked_positions.unsqueeze(-1).expand(-1, -1, seq.shape[-1])
                picked = seq.gather(1, idx)
            else:
                picked = seq
            lead = picked.shape[:2]
            hidden = head.transform(picked.reshape(-1, seq.shape[-1]))
            if return_mlm_logits:
                out.mlm_logits = head.decoder(hidden).view(*lead, -1)
            if masked_labels is not None:
                labels = masked_labels.reshape(-1)
                total = head.decoder(hidden, labels, fused=self._mlm_fused(hidden),
                                     chunk_size=self.ce_chunk_size)
                out.num_masked = (labels != -100).sum()
                out.mlm_loss = total / out.num_masked.clamp(min=1)
        out.relation_logits = self.cls.seq_relationship(pooled)
        if relation_labels is not None:
            logits = out.relation_logits
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 loss under bf16
            out.relation_loss = F.cross_entropy(logits, relation_labels.view(-1))
        losses = [x for x in (out.mlm_loss, out.relation_loss) if x is not None]
        out.loss = sum(losses[1:], losses[0]) if losses else None
        return out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
