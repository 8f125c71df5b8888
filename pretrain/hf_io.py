"""Import LinkBERT from any Hugging Face BERT directory and export it as one (docs/formats.md section 6).

Import accepts BertModel (with or without the ``bert.`` prefix), BertForPreTraining and BertForMaskedLM
weights, as safetensors or pytorch_model.bin, single or sharded. Export writes config.json
(model_type "bert"), model.safetensors (relation head included) and the tokenizer files, which
transformers' AutoModel / AutoModelForMaskedLM / AutoTokenizer load offline with no conversion.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from data_prep.shards import TOKENIZER_FILES  # one list for builds, checkpoints and exports

from .modeling import NUM_RELATIONS, RELATION_NAMES, LinkBertForPreTraining, model_config
from .presets import ConfigError

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# transformers ties these to the word embeddings / cls.predictions.bias; writing them would only
# duplicate tensors (and safetensors refuses shared storage).
TIED_KEYS = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
_ENCODER_PREFIXES = ("embeddings.", "encoder.", "pooler.")


def read_hf_weights(hf_dir: str | Path) -> dict[str, torch.Tensor]:
    """The raw state dict of an HF directory (first weight file found in WEIGHT_FILES order)."""
    hf_dir = Path(hf_dir)
    for name in WEIGHT_FILES:
        path = hf_dir / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            state = {}
            for shard in shards:
                state.update(_read_one(hf_dir / shard))
            return state
        return _read_one(path)
    raise ConfigError(f"{hf_dir}: no weights ({', '.join(WEIGHT_FILES)}); point at an HF model directory")


def _read_one(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def normalize_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map HF BERT naming variants onto BertForPreTraining names."""
    out = {}
    for key, value in state.items():
        if key.startswith("module."):  # DDP / DeepSpeed wrappers
            key = key[len("module."):]
        if key.endswith("position_ids"):
            continue
        if "LayerNorm." in key:  # TF-converted checkpoints
            key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if key.startswith(_ENCODER_PREFIXES):  # BertModel saved on its own
            key = "bert." + key
        out[key] = value
    return out


def load_hf_pretrained(hf_dir: str | Path, config_overrides: dict | None = None,
                       **model_kwargs) -> LinkBertForPreTraining:
    """A LinkBertForPreTraining with every weight the directory has; the rest BERT-initialised.

    The relation head's rows 0 (contiguous) and 1 (random) start from an NSP head when there is one
    (NSP label 0 = "B follows A", 1 = "B is random"); row 2 (linked) starts fresh. What was initialised
    rather than loaded is logged and kept in ``model.load_report``.
    """
    hf_dir = Path(hf_dir)
    config = model_config(str(hf_dir), **(config_overrides or {}))
    model = LinkBertForPreTraining(config, **model_kwargs)
    source = normalize_keys(read_hf_weights(hf_dir))
    if "cls.predictions.bias" not in source and "cls.predictions.decoder.bias" in source:
        source["cls.predictions.bias"] = source["cls.predictions.decoder.bias"]
    decoder = source.get("cls.predictions.decoder.weight")
    embeddings = source.get("bert.embeddings.word_embeddings.weight")
    untied = decoder is not None and embeddings is not None and not torch.equal(decoder, embeddings)
    if untied:  # LinkBERT ties them, as BERT does; the word embeddings win
        log.warning("%s: cls.predictions.decoder.weight differs from the word embeddings; using the "
                    "embeddings for both (tied)", hf_dir)
    for key in TIED_KEYS:
        source.pop(key, None)

    target = model.state_dict()
    loaded, nsp_rows = set(), False
    with torch.no_grad():
        for key, value in source.items():
            if key not in target or key in TIED_KEYS:
                continue
            want = target[key]
            if key.startswith("cls.seq_relationship.") and value.shape[0] == 2 and want.shape[0] == NUM_RELATIONS:
                want[:2].copy_(value)
                nsp_rows = True
            elif value.shape != want.shape:
                raise ConfigError(f"{hf_dir}: weight {key} has shape {tuple(value.shape)} but the config gives "
                                  f"{tuple(want.shape)}; drop the conflicting config override (e.g. vocab_size)")
            else:
                want.copy_(value)
            loaded.add(key)
    expected = [k for k in target if k not in TIED_KEYS]
    missing = [k for k in expected if k not in loaded]
    encoder_missing = [k for k in missing if k.startswith(("bert.embeddings.", "bert.encoder."))]
    if encoder_missing:
        raise ConfigError(f"{hf_dir}: {len(encoder_missing)} encoder weights missing (first: "
                          f"{encoder_missing[0]}); this is not a BERT checkpoint of this config")
    unexpected = sorted(k for k in source if k not in target)
    model.load_report = {"loaded": len(loaded), "initialised": missing, "unexpected": unexpected,
                         "relation_rows_from_nsp": nsp_rows, "untied_decoder_dropped": untied}
    if missing:
        log.warning("%s: initialised, not loaded: %s", hf_dir, ", ".join(missing))
    if nsp_rows:
        log.warning("%s: relation head rows 0/1 from the NSP head, row 2 (linked) initialised", hf_dir)
    if unexpected:
        log.warning("%s: ignored weights not in LinkBERT: %s", hf_dir, ", ".join(unexpected))
    return model


def save_hf(model_or_state_dict, config, out_dir: str | Path, tokenizer_dir: str | Path | None = None,
            dtype: torch.dtype | None = torch.float32) -> Path:
    """Write an HF directory from a model or a plain state dict (e.g. consolidated from ZeRO-3).

    ``dtype`` casts floating tensors (None keeps them). Returns ``out_dir``.
    """
    if isinstance(model_or_state_dict, torch.nn.Module):
        state = model_or_state_dict.state_dict()
    else:
        state = dict(model_or_state_dict)
    state = normalize_keys(state)
    tensors = {}
    for key, value in state.items():
        if key in TIED_KEYS:
            continue
        t = value.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[key] = t.contiguous().clone()
    need = expected_keys(config)
    absent = [k for k in need if k not in tensors]
    if absent:
        raise ConfigError(f"save_hf: state dict lacks {len(absent)} weights (first: {absent[0]}); "
                          "pass the full LinkBertForPreTraining state dict")
    vocab = tensors["bert.embeddings.word_embeddings.weight"].shape[0]
    if vocab != config.vocab_size:
        raise ConfigError(f"save_hf: word embeddings have {vocab} rows but config.vocab_size is "
                          f"{config.vocab_size}")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    cfg = config.to_dict()
    cfg.update(model_type="bert", architectures=["BertForMaskedLM"], num_relations=NUM_RELATIONS,
               relation_names=list(RELATION_NAMES), tie_word_embeddings=True)
    if dtype is not None:
        cfg["dtype"] = str(dtype).removeprefix("torch.")
    for k in ("_name_or_path", "attn_implementation", "_attn_implementation_autoset", "torch_dtype"):
        cfg.pop(k, None)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if tokenizer_dir is not None:
        copied = [n for n in TOKENIZER_FILES if (Path(tokenizer_dir) / n).is_file()]
        if not copied:
            raise ConfigError(f"save_hf: no tokenizer files in {tokenizer_dir} ({', '.join(TOKENIZER_FILES)})")
        for name in copied:
            shutil.copyfile(Path(tokenizer_dir) / name, out_dir / name)
    return out_dir


def expected_keys(config) -> list[str]:
    """Names save_hf writes, listed from a model on the meta device (no memory for the weights)."""
    with torch.device("meta"):
        model = LinkBertForPreTraining(config)
    return [k for k in model.state_dict() if k not in TIED_KEYS]
