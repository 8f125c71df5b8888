"""The pretraining job config: typed dataclasses, the paper's presets, a file plus flag overrides.

Every knob of a run lives here (torchtitan-style). Precedence, lowest first: dataclass defaults,
``--preset``, ``--config FILE`` (JSON, YAML or TOML), the named flags of `linkbert-pretrain --help`, then generic
``--section.key=value`` overrides.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from pretrain.errors import PretrainError


class ConfigError(PretrainError, ValueError):
    """A config a user wrote wrong; the message names the key and the fix."""


@dataclass
class ModelConfig:
    name: str = "tiny"                     # tiny | base | large | an HF config directory
    init_from: str | None = None           # HF BERT directory or Hub id whose weights start the run
    dropout: float | None = None           # override hidden/attention dropout (None: the config's)


@dataclass
class DataConfig:
    paths: list[str] = field(default_factory=list)       # prepared dataset folders (linkbert-prep build)
    weights: list[float] | None = None     # mixing weights, one per path (None: proportional to size)
    mask_prob: float = 0.15
    mask_token_prob: float = 0.8           # of the chosen tokens: [MASK]
    random_token_prob: float = 0.1         # of the chosen tokens: a random token (the rest stay unchanged)
    whole_word: bool = False               # mask whole words ("##" continuation tokens join their word)
    tokenizer: str | None = None           # vocab for whole-word masking: folder or Hub id (default: init dir)
    max_predictions: int | None = None     # masked slots per sequence (None: ceil(mask_prob*len)+1)
    held_out: int = 256                    # pairs kept out of training for the relation/MLM eval
    prefetch: int = 8                      # micro-batches read ahead by the background reader
    cache_mb: int = 256                    # HDF5 chunk cache per dataset folder, split across its shards
    verify: str = "full"                   # shard check at start-up: full (sha256) | quick (HDF5 ends) | none
    ignore_unlisted: bool = False          # train on the manifest's shards when other shard files sit beside them


@dataclass
class OptimConfig:
    name: str = "adamw"                    # adamw | lamb
    impl: str = "auto"                     # auto | torch | fused (DeepSpeed/apex CUDA kernels)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01
    grad_clip: float = 1.0


@dataclass
class ScheduleConfig:
    warmup_steps: int | None = None        # absolute; else warmup_ratio * max_steps
    warmup_ratio: float = 0.06
    decay: str = "linear"                  # linear | polynomial | constant
    power: float = 1.0                     # polynomial decay exponent
    min_lr_ratio: float = 0.0              # lr at the end / peak lr


@dataclass
class TrainConfig:
    output: str = ""
    max_steps: int = 1000
    micro_batch_size: int = 8
    grad_accum: int = 1
    global_batch_size: int | None = None   # if set, must equal micro x accum x world
    seed: int = 0
    precision: str = "fp32"                # fp32 | bf16 | fp16
    zero_stage: int | None = None          # None: the DeepSpeed file's stage, else 2 (see zero_stage_of)
    deepspeed_config: str | None = None    # a ds_configs/*.json (default: ds_configs/zero{stage}.json)
    max_consecutive_skips: int = 20        # stop after this many non-finite / overflow steps in a row
    tf32: bool = True                      # fp32 on GPUs: matmuls on TF32 tensor cores (MFU assumes it)


@dataclass
class CheckpointConfig:
    save_every: int = 500                  # optimizer steps between checkpoints (0: only at the end)
    keep_last: int = 3
    hf_every: int = 0                      # steps between HF exports to OUTPUT/hf-step{N} (0: final only)
    export_final: bool = True


@dataclass
class MetricsConfig:
    log_every: int = 1
    eval_every: int = 0                    # steps between held-out evals (0: at the end only)
    eval_batches: int = 8
    tensorboard: bool = True
    progress: bool = True


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def warmup_steps(self) -> int:
        s = self.schedule
        return s.warmup_steps if s.warmup_steps is not None else int(round(s.warmup_ratio * self.train.max_steps))


# The paper's runs (docs/recipes.md gives each value's source). Batch 2048 x 512 is global: micro x accum x world must match it,
# so presets fix global_batch_size and leave micro/accum to the flags (the check tells what to change).
RUN_PRESETS: dict[str, dict] = {
    "linkbert-tiny": {"model": {"name": "tiny"}, "optim": {"lr": 5e-3},
                      "schedule": {"warmup_steps": 5000, "decay": "linear"},
                      "train": {"max_steps": 10000, "global_batch_size": 2048, "precision": "fp16"}},
    "linkbert-base": {"model": {"name": "base"}, "optim": {"lr": 3e-4},
                      "schedule": {"warmup_steps": 5000, "decay": "linear"},
                      "train": {"max_steps": 40000, "global_batch_size": 2048, "precision": "fp16"}},
    "linkbert-large": {"model": {"name": "large"}, "optim": {"lr": 2e-4},
                       "schedule": {"warmup_steps": 5000, "decay": "linear"},
                       "train": {"max_steps": 40000, "global_batch_size": 2048, "precision": "fp16"}},
    "biolinkbert-base": {"model": {"name": "base"}, "optim": {"lr": 6e-4},
                         "schedule": {"warmup_steps": None, "warmup_ratio": 0.1, "decay": "linear"},
                         "train": {"max_steps": 62500, "global_batch_size": 8192, "precision": "fp16"}},
    "biolinkbert-large": {"model": {"name": "large"}, "optim": {"lr": 4e-4},
                          "schedule": {"warmup_steps": None, "warmup_ratio": 0.2, "decay": "linear"},
                          "train": {"max_steps": 62500, "global_batch_size": 8192, "precision": "fp16"}},
}


# The vocabulary of each paper preset's released model (docs/recipes.md: from the released configs): LinkBERT continued
# BERT's cased checkpoints; BioLinkBERT was trained from scratch with PubMedBERT's uncased vocabulary.
PRESET_RECIPES: dict[str, dict] = {
    "linkbert-base": {"init_from": "bert-base-cased", "vocab_size": 28996, "lowercase": False},
    "linkbert-large": {"init_from": "bert-large-cased", "vocab_size": 28996, "lowercase": False},
    "biolinkbert-base": {"vocab_size": 28895, "lowercase": True},
    "biolinkbert-large": {"vocab_size": 28895, "lowercase": True},
}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Turn a file value or a command-line string into the field's declared type."""
    origin, args = get_origin(tp), get_args(tp)
    if value is None:
        if type(None) in args or tp is Any:
            return None
        raise ConfigError(f"{where}: null is not allowed here")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip() != ""]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        out = [_coerce(v, inner, where) for v in value]
        if origin is tuple:
            if len(args) > 1 and args[-1] is not Ellipsis and len(out) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(out)}")
            return tuple(out)
        return out
    if args and type(None) in args:  # Optional[X]
        if isinstance(value, str) and value.lower() in ("none", "null"):
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float, str):
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and not float(value).is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return out
    return value


def apply(cfg: RunConfig, updates: dict, source: str) -> RunConfig:
    """Merge ``{section: {key: value}}`` into cfg, checking every name and type."""
    sections = {f.name: f for f in dataclasses.fields(cfg)}
    for sec, kv in updates.items():
        if sec not in sections:
            raise ConfigError(f"{source}: unknown section {sec!r}; sections are {sorted(sections)}")
        if not isinstance(kv, dict):
            raise ConfigError(f"{source}: section {sec!r} must be a mapping of keys, got {kv!r}")
        obj = getattr(cfg, sec)
        hints = get_type_hints(type(obj))
        for key, val in kv.items():
            if key not in hints:
                raise ConfigError(f"{source}: unknown key {sec}.{key}; keys of {sec} are {sorted(hints)}")
            setattr(obj, key, _coerce(val, hints[key], f"{source}: {sec}.{key}"))
    return cfg


def read_file(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text) or {}
        elif p.suffix == ".toml":
            import tomllib
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as e:  # each parser has its own error type; all mean the same to the user
        raise ConfigError(f"config file {p}: cannot parse ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: top level must be a mapping of sections")
    return data


def parse_override(text: str) -> dict:
    """``section.key=value`` -> {section: {key: value}} (value still a string; apply() coerces it)."""
    body = text[2:] if text.startswith("--") else text
    if "=" not in body or "." not in body.split("=", 1)[0]:
        raise ConfigError(f"override {text!r}: write it as --section.key=value (e.g. --optim.lr=1e-4)")
    name, value = body.split("=", 1)
    sec, key = name.split(".", 1)
    return {sec: {key.replace("-", "_"): value}}


def build(preset: str | None = None, file: str | None = None, flags: dict | None = None,
          overrides: list[str] | None = None) -> RunConfig:
    cfg = RunConfig()
    chosen = preset
    if preset:
        if preset not in RUN_PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(RUN_PRESETS)}")
        apply(cfg, RUN_PRESETS[preset], f"preset {preset}")
    if file:
        data = read_file(file)
        if "preset" in data:
            name = data.pop("preset")
            if name not in RUN_PRESETS:
                raise ConfigError(f"config file {file}: unknown preset {name!r}; choose one of {sorted(RUN_PRESETS)}")
            apply(cfg, RUN_PRESETS[name], f"preset {name}")
            chosen = name
        apply(cfg, data, f"config file {file}")
    if flags:
        apply(cfg, flags, "command line")
    for o in overrides or []:
        apply(cfg, parse_override(o), "command line")
    validate(cfg)
    cfg.train.zero_stage = zero_stage_of(cfg)   # resolved here, where --print-config shows it
    resolve_sources(cfg)
    for warning in check_recipe(cfg, chosen):
        print(f"linkbert-pretrain: warning: {warning}", file=sys.stderr)
    return cfg


def resolve_sources(cfg: RunConfig) -> None:
    """--init-from and data.tokenizer given as Hub ids become local snapshot folders (data_prep.hub:
    fetched when online, from the Hub cache when offline), so the run reads local files only."""
    from data_prep.hub import HubError, resolve

    try:
        if cfg.model.init_from:
            cfg.model.init_from = str(resolve(cfg.model.init_from, "--init-from"))
        if cfg.data.tokenizer:
            cfg.data.tokenizer = str(resolve(cfg.data.tokenizer, "--data.tokenizer", weights=False))
    except HubError as e:
        raise ConfigError(str(e)) from None


def check_recipe(cfg: RunConfig, preset: str | None) -> list[str]:
    """Refuse a paper preset that would silently change its recipe; warnings for a vocabulary that
    differs from the released model's (the data's manifest and --init-from's config are read)."""
    recipe = PRESET_RECIPES.get(preset or "")
    if recipe is None:
        return []
    case = "lower-cased" if recipe["lowercase"] else "cased"
    want = f"{case}, {recipe['vocab_size']:,} tokens"
    if "init_from" in recipe and not cfg.model.init_from:
        raise ConfigError(f"preset {preset} continues pretraining from {recipe['init_from']} (the released models "
                          f"use its {want} vocabulary): pass --init-from {recipe['init_from']} (a Hub id or a "
                          "local folder), or use --model instead of the preset to train from scratch")
    warnings = []
    if cfg.model.init_from:
        v = _json_or_none(Path(cfg.model.init_from) / "config.json").get("vocab_size")
        if v is not None and v != recipe["vocab_size"]:
            warnings.append(f"preset {preset} expects the released model's vocabulary ({want}); --init-from "
                            f"{cfg.model.init_from} has {v:,} tokens")
    from data_prep.shards import Manifest, ShardError
    for path in cfg.data.paths:
        try:
            m = Manifest.read(path, shards_must_exist=False)   # the tokenizer record only; preflight checks shards
        except ShardError:   # the start-up checks report a missing or broken dataset, with its fix
            continue
        if m.tokenizer is None:
            continue
        v = m.vocab_size
        norm = _json_or_none(m.tokenizer_copy() / "tokenizer.json").get("normalizer")
        lower = norm.get("lowercase") if isinstance(norm, dict) else None
        if (v is not None and v != recipe["vocab_size"]) or (lower is not None and lower != recipe["lowercase"]):
            got = ", ".join(x for x in ("" if lower is None else "lower-cased" if lower else "cased",
                                        "" if v is None else f"{v:,} tokens") if x)
            warnings.append(f"preset {preset} expects the released model's vocabulary ({want}) but {path} was "
                            f"built with another ({got}; linkbert-prep build --tokenizer)")
    return warnings


def _json_or_none(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


VERIFY_MODES = ("full", "quick", "none")


def validate(cfg: RunConfig) -> None:
    """Every value a run cannot use is one ConfigError naming the key, the value and the fix."""
    t, d, o, s, c, m = cfg.train, cfg.data, cfg.optim, cfg.schedule, cfg.checkpoint, cfg.metrics
    checks = [
        (t.precision in ("fp32", "bf16", "fp16"), "train.precision must be fp32, bf16 or fp16"),
        (t.zero_stage in (None, 0, 1, 2, 3), f"train.zero_stage={t.zero_stage}: ZeRO stages are 0, 1, 2 or 3"),
        (t.max_steps > 0, f"train.max_steps={t.max_steps}: must be > 0"),
        (t.micro_batch_size > 0 and t.grad_accum > 0, "train.micro_batch_size and train.grad_accum must be > 0"),
        (t.global_batch_size is None or t.global_batch_size > 0, "train.global_batch_size must be > 0 (or none)"),
        (t.seed >= 0, f"train.seed={t.seed}: use a non-negative integer"),
        (t.max_consecutive_skips >= 1, "train.max_consecutive_skips must be >= 1"),
        (o.name in ("adamw", "lamb"), "optim.name must be adamw or lamb"),
        (o.impl in ("auto", "torch", "fused"), "optim.impl must be auto, torch or fused"),
        (math.isfinite(o.lr) and o.lr > 0, f"optim.lr={o.lr}: the learning rate must be > 0 (e.g. --lr 1e-4)"),
        (o.eps > 0 and o.weight_decay >= 0 and o.grad_clip >= 0,
         "optim.eps must be > 0, optim.weight_decay and optim.grad_clip >= 0"),
        (all(0 <= b < 1 for b in o.betas), f"optim.betas={list(o.betas)}: each must be in [0, 1)"),
        (s.decay in ("linear", "polynomial", "constant"), "schedule.decay must be linear, polynomial or constant"),
        (s.warmup_steps is None or s.warmup_steps >= 0, f"schedule.warmup_steps={s.warmup_steps}: must be >= 0"),
        (0 <= s.warmup_ratio <= 1 and 0 <= s.min_lr_ratio <= 1,
         "schedule.warmup_ratio and schedule.min_lr_ratio must be in [0, 1]"),
        (0 < d.mask_prob < 1, "data.mask_prob must be in (0, 1)"),
        (d.mask_token_prob + d.random_token_prob <= 1, "data.mask_token_prob + data.random_token_prob must be <= 1"),
        (d.weights is None or len(d.weights) == len(d.paths),
         f"data.weights has {len(d.weights or [])} values for {len(d.paths)} data paths: give one weight per path"),
        (d.weights is None or all(w >= 0 and math.isfinite(w) for w in d.weights) and sum(d.weights) > 0,
         "data.weights must be non-negative with a positive sum"),
        (d.held_out >= 0, f"data.held_out={d.held_out}: must be >= 0"),
        (d.prefetch >= 0 and d.cache_mb >= 1, "data.prefetch must be >= 0 and data.cache_mb >= 1"),
        (d.max_predictions is None or d.max_predictions >= 1, "data.max_predictions must be >= 1 (or none)"),
        (d.verify in VERIFY_MODES, f"data.verify={d.verify!r}: use full, quick or none"),
        (c.save_every >= 0, f"checkpoint.save_every={c.save_every}: must be >= 0 (0 saves only at the end)"),
        (c.hf_every >= 0, f"checkpoint.hf_every={c.hf_every}: must be >= 0 (0 exports only at the end)"),
        (c.keep_last >= 1, "checkpoint.keep_last must be >= 1"),
        (m.log_every >= 1 and m.eval_every >= 0 and m.eval_batches >= 1,
         "metrics.log_every and metrics.eval_batches must be >= 1, metrics.eval_every >= 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)


def ds_config_dir() -> Path:
    here = Path(__file__).resolve().parent.parent / "ds_configs"
    if here.is_dir():
        return here
    import sys
    return Path(sys.prefix) / "share" / "linkbert" / "ds_configs"


def check_batch(cfg: RunConfig, world: int) -> int:
    """global = micro x accum x world, or a clear error saying which flag to change."""
    t = cfg.train
    got = t.micro_batch_size * t.grad_accum * world
    if t.global_batch_size is not None and t.global_batch_size != got:
        per = t.micro_batch_size * world
        hint = (f"use --grad-accum {t.global_batch_size // per}" if t.global_batch_size % per == 0 else
                f"pick --micro-batch-size and --grad-accum with micro x accum = {t.global_batch_size / world:g}")
        raise ConfigError(f"batch size: train.global_batch_size={t.global_batch_size} but micro "
                          f"{t.micro_batch_size} x accum {t.grad_accum} x world {world} = {got}; {hint} "
                          "(or set --train.global_batch_size=none)")
    return got


DEFAULT_ZERO_STAGE = 2


def _ds_path(cfg: RunConfig, stage: int | None = None) -> Path:
    t = cfg.train
    return Path(t.deepspeed_config) if t.deepspeed_config else ds_config_dir() / f"zero{stage}.json"


def _read_ds(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"DeepSpeed config {path} not found; pass --deepspeed-config ds_configs/zero2.json")
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"DeepSpeed config {path}: not valid JSON ({e})") from None
    if not isinstance(ds, dict):
        raise ConfigError(f"DeepSpeed config {path}: not a JSON object")
    return ds


def zero_stage_of(cfg: RunConfig) -> int:
    """The run's ZeRO stage: train.zero_stage, else the --deepspeed-config file's, else 2. A file whose
    stage differs from an explicit train.zero_stage is one error (never silently one or the other)."""
    t = cfg.train
    file_stage = None
    if t.deepspeed_config:
        path = Path(t.deepspeed_config)
        s = _read_ds(path).get("zero_optimization", {}).get("stage", "auto")
        if s != "auto":
            if s not in (0, 1, 2, 3) or isinstance(s, bool):
                raise ConfigError(f"DeepSpeed config {path}: zero_optimization.stage={s!r}; ZeRO stages are "
                                  "0, 1, 2 or 3")
            file_stage = int(s)
    if t.zero_stage is None:
        return DEFAULT_ZERO_STAGE if file_stage is None else file_stage
    if file_stage is not None and file_stage != t.zero_stage:
        raise ConfigError(f"DeepSpeed config {t.deepspeed_config}: zero_optimization.stage={file_stage} contradicts "
                          f"--zero-stage {t.zero_stage}; drop one of them (or write \"auto\" in the file)")
    return t.zero_stage


def fill_ds_config(cfg: RunConfig, world: int, device_type: str = "cpu") -> tuple[dict, bool]:
    """The DeepSpeed JSON with every "auto" filled from the run's config.

    Returns (config, client_optimizer): with optimizer type "auto" (ours) the optimizer section is
    dropped and linkbert-pretrain passes its own optimizer; a real DeepSpeed type is kept for DeepSpeed.
    """
    t, o = cfg.train, cfg.optim
    stage = zero_stage_of(cfg)
    if t.zero_stage is None:   # a config built by hand, not by build(): resolve it the same way
        t.zero_stage = stage
    path = _ds_path(cfg, stage)
    ds = _read_ds(path)
    global_batch = check_batch(cfg, world)
    if t.precision == "fp16" and device_type != "cuda":
        raise ConfigError(f"--precision fp16 needs CUDA GPUs (DeepSpeed has no fp16 on {device_type}); "
                          "use --precision bf16 or fp32 here")

    def fill(d: dict, key: str, value):
        if d.get(key, "auto") == "auto":
            d[key] = value
        elif d[key] != value and key != "gradient_clipping":
            raise ConfigError(f"DeepSpeed config {path}: {key}={d[key]} contradicts the run's {value}; "
                              f'write "auto" there and set it with linkbert-pretrain flags')

    fill(ds, "train_micro_batch_size_per_gpu", t.micro_batch_size)
    fill(ds, "gradient_accumulation_steps", t.grad_accum)
    fill(ds, "train_batch_size", global_batch)
    fill(ds, "gradient_clipping", o.grad_clip)
    for name in ("bf16", "fp16"):
        sec = ds.setdefault(name, {})
        if sec.get("enabled", "auto") == "auto":
            sec["enabled"] = t.precision == name
    if ds.get("bf16", {}).get("enabled") and ds.get("fp16", {}).get("enabled"):
        raise ConfigError(f"DeepSpeed config {path}: bf16 and fp16 are both enabled; enable one")
    zo = ds.setdefault("zero_optimization", {})
    zo["stage"] = stage   # equal to the file's own when it names one (zero_stage_of)
    ds_opt = str((ds.get("optimizer") or {}).get("type", "auto")).lower()
    if ((o.name == "lamb" and ds_opt == "auto") or ds_opt in ("lamb", "onebitlamb")) and t.zero_stage >= 1:
        raise ConfigError(f"LAMB with ZeRO-{t.zero_stage}: ZeRO hands the optimizer flat partitions "
                          "that cut across tensors, so LAMB's per-tensor trust ratios would be wrong; use "
                          "--zero-stage 0 with lamb, or --optim.name=adamw with ZeRO")
    if t.precision == "bf16" and t.zero_stage in (1, 2, 3):
        # accumulate micro-batch gradients in fp32: bf16 sums lose the small ones over many micro-batches.
        # ZeRO-3 takes it too (its partitioned gradient buffers default to the model's dtype). Without ZeRO
        # (stage 0) DeepSpeed refuses a bf16 model with fp32 accumulation ("unsupported mix"), so stage 0
        # accumulates in bf16; ZeRO-1 with it selects DeepSpeed's BF16_Optimizer (checkpoint.py exports it).
        ds.setdefault("data_types", {}).setdefault("grad_accum_dtype", "fp32")
    off = zo.get("offload_optimizer") or {}
    if off and device_type != "cuda":
        off["pin_memory"] = False
    opt = ds.get("optimizer")
    client = opt is None or opt.get("type", "auto") == "auto"
    if client:
        ds.pop("optimizer", None)
    else:
        p = opt.setdefault("params", {})
        for k, v in (("lr", o.lr), ("betas", list(o.betas)), ("eps", o.eps), ("weight_decay", o.weight_decay)):
            if p.get(k, "auto") == "auto":
                p[k] = v
    ds.setdefault("zero_allow_untested_optimizer", True)
    if off:
        ds.setdefault("zero_force_ds_cpu_optimizer", False)
    ds.setdefault("steps_per_print", 10**9)
    return ds, client
