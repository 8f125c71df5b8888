"""Hyperparameters of LinkBERT's run_examples_*.sh scripts, one preset per task, base and large.

`--preset chemprot` (= chemprot-base) or `--preset chemprot-large`; explicit flags override a preset.
All of the authors' runs use fp16 (applied here only where CUDA is present) and no checkpoint saving;
unless `eval_steps` is listed they evaluate only at the end (BLURB: no dev-set model selection).
Sources: michiyasunaga/LinkBERT src/run_examples_{mrqa_linkbert,blurb_biolinkbert,medqa_biolinkbert}-
{base,large}.sh, listed with their sources in docs/recipes.md. GLUE has no script there (paper App. B gives only a
grid: length 128, lr 5e-6..5e-5, batch 16/32/64, 3-10 epochs); its presets take BERT's recipe from that grid.
"""
from __future__ import annotations

from finetune.errors import FinetuneError
from finetune.glue import TASKS as GLUE_TASKS


def _mrqa(base_accum: int, base_ep: int, large_ep: int) -> dict:
    common = {"max_seq_length": 384, "doc_stride": 128, "eval_steps": 1000}
    return {"task": "qa", "family": "MRQA",
            "base": {**common, "per_device_train_batch_size": 12, "gradient_accumulation_steps": base_accum,
                     "learning_rate": 3e-5, "num_train_epochs": base_ep},
            "large": {**common, "per_device_train_batch_size": 16, "gradient_accumulation_steps": 1,
                      "learning_rate": 2e-5, "num_train_epochs": large_ep}}


_LARGE_ADAM = {"weight_decay": 0.01, "adam_beta1": 0.9, "adam_beta2": 0.98, "adam_epsilon": 1e-6}


def _blurb(task: str, base: dict, large: dict, **task_opts) -> dict:
    length = task_opts.pop("max_seq_length", 512)
    return {"task": task, "family": "BLURB",
            "base": {"max_seq_length": length, "gradient_accumulation_steps": 1, **task_opts, **base},
            "large": {"max_seq_length": length, "warmup_ratio": 0.5, **task_opts, **large}}


def _glue(task: str) -> dict:
    # BERT's GLUE recipe (len 128, batch 32, lr 2e-5, 3 epochs), inside LinkBERT's App. B grid
    values = {"max_seq_length": 128, "per_device_train_batch_size": 32, "learning_rate": 2e-5,
              "num_train_epochs": 3, "glue_task": task}
    return {"task": GLUE_TASKS[task].kind, "family": "GLUE", "base": dict(values), "large": dict(values)}


def _b(bs, lr, ep, accum=1, **kw):
    return {"per_device_train_batch_size": bs, "gradient_accumulation_steps": accum, "learning_rate": lr,
            "num_train_epochs": ep, **kw}


PRESETS: dict[str, dict] = {
    # MRQA (LinkBERT-base/large)
    "squad": _mrqa(1, 2, 2),
    "hotpotqa": _mrqa(2, 4, 4),
    "naturalqa": _mrqa(2, 4, 4),
    "triviaqa": _mrqa(2, 4, 4),
    "newsqa": _mrqa(2, 4, 2),
    "searchqa": _mrqa(2, 1, 2),
    # BLURB (BioLinkBERT-base/large)
    "pubmedqa": _blurb("seqcls", _b(16, 2e-5, 30, warmup_steps=100), _b(8, 3e-5, 23, 4)),
    "bioasq": _blurb("seqcls", _b(16, 2e-5, 20, warmup_steps=100), _b(8, 3e-5, 30, 4)),
    "biosses": _blurb("regression", _b(16, 1e-5, 30, seed=5), _b(8, 3e-5, 100, 4, **_LARGE_ADAM)),
    "hoc": _blurb("multilabel", _b(32, 4e-5, 40), _b(8, 3e-5, 20, 4)),
    # relation extraction: F1 leaves out the negative class, named as the authors' files ("0") and the
    # raw releases (ChemProt "false", DDI "DDI-false"; GAD's raw labels are already 0/1) spell it
    "chemprot": _blurb("seqcls", _b(32, 3e-5, 10), _b(16, 2e-5, 4), max_seq_length=256, negative_label="0,false"),
    "ddi": _blurb("seqcls", _b(32, 2e-5, 5), _b(16, 2e-5, 3), max_seq_length=256, negative_label="0,DDI-false"),
    "gad": _blurb("seqcls", _b(32, 3e-5, 10), _b(16, 2e-5, 5), max_seq_length=256, negative_label="0,false"),
    "ebmpico": _blurb("ner", _b(32, 5e-5, 1), _b(8, 2e-5, 1, 2), return_macro_metrics=True),
    "jnlpba": _blurb("ner", _b(16, 1e-5, 5, warmup_ratio=0.1), _b(8, 3e-5, 4, 2, seed=3, **_LARGE_ADAM)),
    "ncbi-disease": _blurb("ner", _b(32, 5e-5, 20, warmup_ratio=0.1), _b(8, 2e-5, 10, 2)),
    "bc2gm": _blurb("ner", _b(32, 6e-5, 50, warmup_ratio=0.1), _b(8, 2e-5, 30, 2)),
    "bc5cdr-disease": _blurb("ner", _b(16, 5e-5, 8, warmup_ratio=0.1), _b(8, 3e-5, 20, 4)),
    "bc5cdr-chem": _blurb("ner", _b(32, 5e-5, 20, warmup_ratio=0.1), _b(8, 2e-5, 8, 2)),
    # MedQA-USMLE (BioLinkBERT-base/large); MMLU professional medicine = predict with the MedQA model
    "medqa": {"task": "mc", "family": "MedQA",
              "base": {"max_seq_length": 512, **_b(4, 2e-5, 2, 8, warmup_steps=100)},
              "large": {"max_seq_length": 512, "per_device_eval_batch_size": 2, "eval_steps": 100,
                        **_b(2, 3e-5, 6, 32, warmup_steps=500, **_LARGE_ADAM)}},
    "mmlu-professional-medicine": {"task": "mc", "family": "MedQA",
                                   "base": {"max_seq_length": 512, "per_device_eval_batch_size": 4},
                                   "large": {"max_seq_length": 512, "per_device_eval_batch_size": 4}},
    # GLUE (LinkBERT-base/large, Table 3): the official TSV files as released
    **{t: _glue(t) for t in GLUE_TASKS},
}


def preset_names() -> list[str]:
    return sorted(f"{n}{s}" for n in PRESETS for s in ("", "-large"))


def resolve_preset(name: str) -> tuple[str, dict]:
    """(task kind, option values) for `name` or `name-large`; all run_examples runs use fp16."""
    size = "base"
    base_name = name
    for suffix, sz in (("-large", "large"), ("-base", "base")):
        if name.endswith(suffix):
            base_name, size = name[: -len(suffix)], sz
    if base_name.lower() in ("sst-2", "sts-b"):   # GLUE's own folder names
        base_name = base_name.lower().replace("-", "")
    if base_name not in PRESETS:
        raise FinetuneError(f"unknown --preset {name!r}; known: {', '.join(sorted(PRESETS))} "
                            "(add -large for the large-model values)")
    p = PRESETS[base_name]
    return p["task"], {"fp16": True, **p[size]}
