"""One fine-tuning run: check the model dir, read and encode the files, train, predict, write outputs.

`run_finetune(FinetuneArgs(...))` is what `linkbert-finetune` calls and what tests call directly.
Outputs in `output`: metrics.json ({split: {metric: value}}, unrounded), predictions_<split>.json
({id: prediction}), run_info.json (options, label list, counts of truncated/skipped things, timings),
and the fine-tuned model + tokenizer (unless save_model is off) for a later predict-only run.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from finetune.data_io import read_jsonl
from finetune.errors import FinetuneError
from finetune.tasks import TASK_KINDS, Split, TaskOptions, make_task

# Encoders whose AutoModelFor{SequenceClassification,QuestionAnswering,TokenClassification,MultipleChoice}
# heads exist and take [CLS] A [SEP] B [SEP]-style pairs: the family LinkBERT's scripts were written for.
BERT_FAMILY = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "deberta", "deberta-v2", "distilbert",
               "albert", "mpnet", "megatron-bert", "ernie", "xlm-roberta-xl", "modernbert")

log = logging.getLogger("linkbert.finetune")


@dataclass
class FinetuneArgs:
    task: str
    model: str
    output: str
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    validation_mismatched: str | None = None   # MNLI: a second evaluated file (dev_mismatched.tsv)
    test_mismatched: str | None = None
    # Trainer flags of LinkBERT's run_examples (HF defaults where they pass none)
    num_train_epochs: float = 3.0
    max_steps: int = -1
    learning_rate: float = 5e-5
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    max_seq_length: int = 128
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_scheduler_type: str = "linear"
    seed: int = 42
    fp16: bool = False
    bf16: bool = False
    eval_steps: int = 0
    logging_steps: int = 50
    deepspeed: str | None = None
    report_to: str = "none"
    dataloader_num_workers: int = 0
    disable_tqdm: bool = False
    # task options
    doc_stride: int = 128
    n_best_size: int = 20
    max_answer_length: int = 30
    ignore_negative_class: bool = False     # = negative_label "0,false,DDI-false" (whichever the file has)
    negative_label: str | None = None       # seqcls: label(s) of the class P/R/F1 leave out, comma-separated
    return_macro_metrics: bool = False
    no_document_regroup: bool = False
    text_fields: str | None = None           # e.g. "question,sentence" for GLUE QNLI-style files
    glue_task: str | None = None             # set by the GLUE presets: .tsv files read as GLUE releases them
    max_train_samples: int | None = None    # first N rows only (quick runs, as in HF's run_* scripts)
    max_eval_samples: int | None = None
    max_predict_samples: int | None = None
    save_model: bool = True
    notes: list = field(default_factory=list)


def resolve_model(name: str) -> Path:
    """--model as a local folder: the folder itself, or the Hub snapshot of an id (fetched when online,
    from the cache when offline), or a FinetuneError naming the id and how to fetch it."""
    from data_prep.hub import HubError, resolve

    try:
        return resolve(name, "--model")
    except HubError as e:
        raise FinetuneError(str(e)) from None


def check_model_dir(path: str | Path) -> dict:
    """config.json of a BERT-family Hugging Face directory, or a FinetuneError saying what is wrong."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not path.is_dir():
        raise FinetuneError(f"{path}: no such model directory (give a Hugging Face checkpoint directory)")
    if not cfg_file.is_file():
        raise FinetuneError(f"{path}: no config.json; not a Hugging Face checkpoint directory "
                            "(linkbert-export writes one)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise FinetuneError(f"{cfg_file}:{e.lineno}: not valid JSON ({e.msg})") from None
    mt = cfg.get("model_type")
    if mt not in BERT_FAMILY:
        raise FinetuneError(f"{cfg_file}: model_type {mt!r} is not a BERT-family encoder "
                            f"(supported: {', '.join(BERT_FAMILY)})")
    if not any((path / n).is_file() for n in ("model.safetensors", "pytorch_model.bin",
                                               "model.safetensors.index.json", "pytorch_model.bin.index.json")):
        raise FinetuneError(f"{path}: no model.safetensors or pytorch_model.bin weights")
    if not any((path / n).is_file() for n in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise FinetuneError(f"{path}: no tokenizer files (tokenizer.json or vocab.txt)")
    return cfg


def _negative_labels(args: FinetuneArgs) -> tuple[str, ...]:
    """Accepted spellings of the negative class: --negative_label A[,B], or the standard ones."""
    from finetune.tasks.classification import STANDARD_NEGATIVE_LABELS

    if args.negative_label:
        names = tuple(n.strip() for n in str(args.negative_label).split(",") if n.strip())
        if not names:
            raise FinetuneError(f"--negative_label {args.negative_label!r}: give a label name, e.g. false")
        return names
    return STANDARD_NEGATIVE_LABELS if args.ignore_negative_class else ()


def _precision(args: FinetuneArgs) -> tuple[bool, bool]:
    import torch

    fp16, bf16 = args.fp16, args.bf16
    if fp16 and bf16:
        raise FinetuneError("--fp16 and --bf16 are exclusive; pick one")
    if fp16 and not torch.cuda.is_available():
        # fp16 mixed precision needs CUDA; the presets ask for it (as the authors' scripts do)
        args.notes.append("fp16 requested but no CUDA device: training in fp32")
        fp16 = False
    return fp16, bf16


def _training_arguments(args: FinetuneArgs, has_eval: bool):
    import torch
    from transformers import TrainingArguments

    fp16, bf16 = _precision(args)
    # transformers 5 folds warmup_ratio into warmup_steps (a float < 1 is a ratio); an explicit
    # step count wins over a ratio, as it did in transformers 4.
    warmup = args.warmup_steps if args.warmup_steps > 0 else float(args.warmup_ratio)
    evaluating = bool(args.eval_steps) and has_eval
    return TrainingArguments(
        output_dir=args.output, num_train_epochs=args.num_train_epochs, max_steps=args.max_steps,
        learning_rate=args.learning_rate, per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, warmup_steps=warmup,
        weight_decay=args.weight_decay, adam_beta1=args.adam_beta1, adam_beta2=args.adam_beta2,
        adam_epsilon=args.adam_epsilon, max_grad_norm=args.max_grad_norm,
        lr_scheduler_type=args.lr_scheduler_type, seed=args.seed, data_seed=args.seed, fp16=fp16, bf16=bf16,
        eval_strategy="steps" if evaluating else "no", eval_steps=args.eval_steps if evaluating else None,
        save_strategy="no", logging_steps=args.logging_steps, report_to=args.report_to,
        deepspeed=args.deepspeed, dataloader_num_workers=args.dataloader_num_workers,
        disable_tqdm=args.disable_tqdm, remove_unused_columns=False,
        dataloader_pin_memory=torch.cuda.is_available(),
        # without CUDA, accelerate only sets up multi-process (DDP over gloo) training under a torchrun/
        # mpirun launch when told it is on CPU; left out, every process trains alone on all the data
        use_cpu=not torch.cuda.is_available(),
    )


# files evaluated after training, in order, with the option naming each and its row limit
EVAL_SPLITS = (("validation", "max_eval_samples"), ("validation_mismatched", "max_eval_samples"),
               ("test", "max_predict_samples"), ("test_mismatched", "max_predict_samples"))


def _read_split(task, path: str, split: str, limit: int | None = None, glue_task: str | None = None,
                skipped: dict | None = None) -> tuple[list[dict], bool]:
    if str(path).endswith(".tsv"):
        if not glue_task:
            raise FinetuneError(f"{path}: a .tsv file; GLUE's files are read with --preset "
                                "cola|sst2|mrpc|qqp|stsb|mnli|qnli|rte|wnli, other tasks take JSON Lines")
        from finetune.glue import read_glue_tsv
        rows, bad = read_glue_tsv(path, glue_task)
        if skipped is not None:
            skipped[split] = bad
    else:
        rows = read_jsonl(path)
    if limit is not None and limit > 0:
        rows = rows[:limit]
    has_gold = task.validate(rows, split)
    return rows, has_gold


def _task_options(args: FinetuneArgs) -> TaskOptions:
    extra, positive = (), None
    if args.glue_task:
        from finetune.glue import TASKS
        if args.glue_task not in TASKS:
            raise FinetuneError(f"unknown GLUE task {args.glue_task!r}; one of {', '.join(TASKS)}")
        spec = TASKS[args.glue_task]
        if spec.kind != args.task:
            raise FinetuneError(f"GLUE {spec.name} is a {spec.kind} task, not --task {args.task}")
        extra, positive = spec.metrics, spec.positive_label
        if "f1" in extra and _negative_labels(args):
            raise FinetuneError(f"--negative_label and GLUE {spec.name}'s F1 of class {positive!r} would both be "
                                "reported as 'f1'; drop --negative_label / --ignore_negative_class")
    return TaskOptions(
        max_seq_length=args.max_seq_length, doc_stride=args.doc_stride, n_best_size=args.n_best_size,
        max_answer_length=args.max_answer_length, negative_labels=_negative_labels(args),
        macro_metrics=args.return_macro_metrics, document_regroup=not args.no_document_regroup,
        text_fields=tuple(f.strip() for f in (args.text_fields or "").split(",") if f.strip()),
        extra_metrics=extra, positive_label=positive)


def run_finetune(args: FinetuneArgs) -> dict:
    """Fine-tune (when `train` is given) and evaluate/predict; returns the metrics.json content."""
    _check_args(args)
    model_dir = resolve_model(args.model)
    # from here on everything is read from local folders (a Hub id was fetched or found in the cache above)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    check_model_dir(model_dir)
    task = make_task(args.task, _task_options(args))
    import transformers
    transformers.logging.set_verbosity_warning()
    splits_rows, skipped = _read_splits(task, args, model_dir)   # a bad file fails before the model loads
    tokenizer, model = _load_model(task, args, model_dir)
    encoded: dict[str, Split] = {name: task.encode(rows, tokenizer, name, has_gold)
                                 for name, (rows, has_gold) in splits_rows.items()}
    for name, lines in skipped.items():
        encoded[name].note_ids("malformed_tsv_lines_skipped", lines)
    trainer = _trainer(task, args, model, tokenizer, encoded)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    info: dict = {"options": {k: v for k, v in asdict(args).items() if k != "notes"}, "model_path": str(model_dir),
                  "task_info": task.task_info(), "splits": {}}
    if "train" in encoded:
        result = trainer.train()
        info["train"] = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
        info["train"]["steps"] = int(result.global_step)
        info["log_history"] = trainer.state.log_history   # losses, lr and --eval_steps evaluations
        if args.save_model:
            trainer.save_model(str(out_dir))
    all_metrics, split_predictions = _evaluate_splits(trainer, encoded, info)
    info["notes"] = list(args.notes) + [n for s in encoded.values() for n in s.notes]
    if trainer.is_world_process_zero():   # under a distributed launch only rank 0 writes
        _write_outputs(out_dir, all_metrics, split_predictions, info)
    _cleanup_distributed()
    return all_metrics


def _check_args(args: FinetuneArgs) -> None:
    if args.task not in TASK_KINDS:
        raise FinetuneError(f"unknown --task {args.task!r}; one of {', '.join(TASK_KINDS)}")
    if not (args.validation or args.test):
        raise FinetuneError("give --validation and/or --test (what to evaluate or predict)")
    if args.deepspeed and not Path(args.deepspeed).is_file():
        raise FinetuneError(f"{args.deepspeed}: no such DeepSpeed config file")


def _read_splits(task, args: FinetuneArgs, model_dir: Path):
    """Every given file read and checked; the label vocabulary from train, or from a fine-tuned model's
    config. Returns ({split: (rows, has_gold)}, {split: skipped GLUE .tsv lines})."""
    from transformers import AutoConfig
    splits_rows: dict[str, tuple[list[dict], bool]] = {}
    skipped: dict[str, list[str]] = {}    # GLUE .tsv lines with a wrong number of columns, per split
    if args.train:
        splits_rows["train"] = _read_split(task, args.train, "train", args.max_train_samples, args.glue_task,
                                           skipped)
        task.fit_labels(splits_rows["train"][0])
    else:
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        task.labels_from_config(config)
        head = task.auto_model_class().__name__.replace("AutoModel", "")
        if not any(a.endswith(head) for a in (config.architectures or [])):
            args.notes.append(f"{args.model} has no trained {head} head (architectures: {config.architectures}); "
                              "its predictions come from a randomly initialised head")
    for name, limit in EVAL_SPLITS:
        if getattr(args, name):
            splits_rows[name] = _read_split(task, getattr(args, name), name, getattr(args, limit), args.glue_task,
                                            skipped)
    for name, (rows, has_gold) in splits_rows.items():
        if has_gold and name != "train":
            task.check_labels(rows, name)
    return splits_rows, skipped


def _load_model(task, args: FinetuneArgs, model_dir: Path):
    from transformers import AutoConfig, AutoTokenizer, set_seed
    set_seed(args.seed)   # before the head is created: its random init is part of the run
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    overrides = task.config_overrides() if args.train else {}
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True, **overrides)
    model = task.auto_model_class().from_pretrained(model_dir, config=config, local_files_only=True)
    if args.train:
        model.config.linkbert_finetune = task.task_info()
    if args.max_seq_length > tokenizer.model_max_length:
        raise FinetuneError(f"--max_seq_length {args.max_seq_length} exceeds the model's "
                            f"{tokenizer.model_max_length} positions")
    return tokenizer, model


def _trainer(task, args: FinetuneArgs, model, tokenizer, encoded: dict[str, Split]):
    from finetune.trainer import TaskTrainer  # imports transformers' Trainer: only once inputs are checked
    validation = encoded.get("validation")
    gold_validation = validation if validation is not None and validation.has_gold else None
    return TaskTrainer(
        model=model, args=_training_arguments(args, has_eval=gold_validation is not None),
        train_dataset=encoded["train"].dataset if "train" in encoded else None,
        # the Trainer insists on an eval_dataset with --eval_steps; TaskTrainer.evaluate uses eval_split
        eval_dataset=gold_validation.dataset if gold_validation is not None else None,
        data_collator=task.collator(tokenizer), processing_class=tokenizer, task=task, eval_split=gold_validation)


def _evaluate_splits(trainer, encoded: dict[str, Split], info: dict) -> tuple[dict, dict]:
    all_metrics: dict[str, dict] = {}
    split_predictions: dict[str, dict] = {}
    for name, _ in EVAL_SPLITS:
        if name not in encoded:
            continue
        predictions, metrics, stats = trainer.run_split(encoded[name], "test" if name.startswith("test") else "eval")
        if encoded[name].has_gold:
            all_metrics[name] = metrics
        split_predictions[name] = predictions
        info["splits"][name] = {**stats, "counts": encoded[name].counts, "has_gold": encoded[name].has_gold,
                                "first_ids": encoded[name].first_ids}
    if "train" in encoded:
        info["splits"]["train"] = {"examples": len(encoded["train"].rows),
                                   "features": len(encoded["train"].features), "counts": encoded["train"].counts,
                                   "first_ids": encoded["train"].first_ids}
    return all_metrics, split_predictions


def _write_outputs(out_dir: Path, all_metrics: dict, split_predictions: dict, info: dict) -> None:
    for name, predictions in split_predictions.items():
        _write_json(out_dir / f"predictions_{name}.json", predictions)
    _write_json(out_dir / "metrics.json", all_metrics)
    _write_json(out_dir / "run_info.json", info)
    for note in info["notes"]:
        print(f"linkbert-finetune: note: {note}", file=sys.stderr)
    for name, s in info["splits"].items():
        nonzero = {k: v for k, v in s.get("counts", {}).items() if v and k != "windows"}
        if nonzero:
            print(f"linkbert-finetune: {name}: {nonzero}", file=sys.stderr)
        for what, ids in s.get("first_ids", {}).items():
            more = ", ..." if s["counts"].get(what, 0) > len(ids) else ""
            print(f"linkbert-finetune: {name}: {what}: first {', '.join(ids)}{more}", file=sys.stderr)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str) + "\n")
        tmp.replace(path)
    except BaseException:   # Ctrl-C or a full disk: no half-written file stays behind
        tmp.unlink(missing_ok=True)
        raise


def _cleanup_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
