"""Model size presets (BERT shapes) and the config builder: tiny, base, large, or any HF config."""
from __future__ import annotations

import json
from pathlib import Path

from transformers import BertConfig

# The relation head's rows are the shard label ids: defined once, where the shards are written.
from data_prep.shards import NUM_RELATIONS, RELATION_NAMES  # noqa: F401 (re-exported)
from pretrain.errors import PretrainError

# Shapes from the BERT releases; "tiny" is BERT-tiny of Turc et al. 2019, the shape LinkBERT-tiny used.
MODEL_SHAPES: dict[str, dict] = {
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "medium": dict(num_hidden_layers=8, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "large": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096),
}
_COMMON = dict(vocab_size=30522, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
               hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.02,
               layer_norm_eps=1e-12, pad_token_id=0)


class ConfigError(PretrainError, ValueError):
    """A model spec or override a user got wrong; the message names it and the fix."""


def model_config(spec: str, **overrides) -> BertConfig:
    """BertConfig for a preset name, an HF model directory or a config.json path; overrides win."""
    spec = str(spec)
    if spec in MODEL_SHAPES:
        values = {**_COMMON, **MODEL_SHAPES[spec]}
    else:
        path = Path(spec)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"model spec {spec!r}: not a model shape ({', '.join(MODEL_SHAPES)}) and no config.json "
                              f"at {path}; pass a model shape or an HF model directory")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the model config ({e}); fix or replace the file") from None
        mt = values.get("model_type", "bert")
        if mt not in ("bert", "linkbert"):
            raise ConfigError(f"{path}: model_type {mt!r} is not a BERT; LinkBERT needs a BERT-shaped model")
        values.pop("model_type", None)
    values.update(overrides)
    values.setdefault("num_relations", NUM_RELATIONS)
    if values["num_relations"] != NUM_RELATIONS:
        raise ConfigError(f"num_relations={values['num_relations']}: the relation head has exactly "
                          f"{NUM_RELATIONS} classes (contiguous, random, linked)")
    cfg = BertConfig(**values)
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ConfigError(f"hidden_size {cfg.hidden_size} is not a multiple of num_attention_heads "
                          f"{cfg.num_attention_heads}")
    if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
        raise ConfigError(f"position_embedding_type {cfg.position_embedding_type!r}: only absolute "
                          "position embeddings are supported")
    cfg.num_relations = NUM_RELATIONS
    return cfg
