"""`linkbert-finetune`: fine-tune and evaluate any BERT-family HF checkpoint on LinkBERT's tasks.

    linkbert-finetune --task qa|seqcls|multilabel|regression|ner|mc --model HF_DIR_OR_HUB_ID \
        --train F --validation F [--test F] --output DIR [--preset NAME] [Trainer flags]
    linkbert-finetune blurb-score [--split test] TASK=RUN_DIR ... | SCORES.json
    linkbert-finetune glue-score [--split validation] TASK=RUN_DIR ...

A thin shell over finetune.runner.run_finetune and finetune.blurb; errors a user can cause are one line.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from finetune.errors import FinetuneError
from finetune.presets import preset_names, resolve_preset
from finetune.runner import FinetuneArgs, run_finetune
from finetune.tasks import TASK_KINDS

_DEFAULTS = {f.name: f.default for f in fields(FinetuneArgs) if f.name not in ("notes",)}
_QA_DEFAULTS = {"max_seq_length": 384}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="linkbert-finetune", description=__doc__.splitlines()[0],
                                epilog="Also: `linkbert-finetune blurb-score --help`, `linkbert-finetune glue-score --help`.")
    S = argparse.SUPPRESS   # unset flags stay absent, so a preset can fill them and flags override it
    io = p.add_argument_group("data and model")
    io.add_argument("--task", choices=TASK_KINDS, default=S, help="task kind (a --preset implies one)")
    io.add_argument("--model", "--model_name_or_path", dest="model", required=True,
                    help="Hugging Face checkpoint directory (BERT family) or Hub id, e.g. "
                         "michiyasunaga/BioLinkBERT-base (from the Hub cache when HF_HUB_OFFLINE=1)")
    io.add_argument("--train", "--train_file", dest="train", default=S,
                    help="training JSON Lines file; without it: predict only")
    io.add_argument("--validation", "--validation_file", dest="validation", default=S,
                    help="validation JSON Lines file")
    io.add_argument("--test", "--test_file", dest="test", default=S, help="test JSON Lines file (labels optional)")
    io.add_argument("--validation_mismatched", default=S, help="MNLI: dev_mismatched.tsv, scored as its own split")
    io.add_argument("--test_mismatched", default=S, help="MNLI: test_mismatched.tsv, predicted as its own split")
    io.add_argument("--output", "--output_dir", dest="output", required=True, help="output directory")
    # LinkBERT's run_examples command lines work as they are: --do_* pick which files are used (MMLU
    # passes --train_file but only --do_predict); checkpointing is never on, outputs are overwritten.
    for flag in ("--do_train", "--do_eval", "--do_predict"):
        io.add_argument(flag, action="store_true", default=S, help=argparse.SUPPRESS)
    io.add_argument("--overwrite_output_dir", action="store_true", default=S, help=argparse.SUPPRESS)
    for flag in ("--save_strategy", "--evaluation_strategy", "--eval_strategy", "--preprocessing_num_workers"):
        io.add_argument(flag, default=S, help=argparse.SUPPRESS)
    io.add_argument("--preset", default=None, metavar="NAME",
                    help="hyperparameters of LinkBERT's run_examples for a task: "
                         + ", ".join(n for n in preset_names() if not n.endswith("-large"))
                         + " (append -large for large-model values)")
    tr = p.add_argument_group("Trainer flags (as in LinkBERT's run_examples scripts)")
    for name, typ in [("num_train_epochs", float), ("max_steps", int), ("learning_rate", float),
                      ("per_device_train_batch_size", int), ("per_device_eval_batch_size", int),
                      ("gradient_accumulation_steps", int), ("max_seq_length", int), ("warmup_ratio", float),
                      ("warmup_steps", int), ("weight_decay", float), ("adam_beta1", float),
                      ("adam_beta2", float), ("adam_epsilon", float), ("max_grad_norm", float),
                      ("lr_scheduler_type", str), ("seed", int), ("eval_steps", int), ("logging_steps", int),
                      ("report_to", str), ("dataloader_num_workers", int)]:
        default = _DEFAULTS[name]
        tr.add_argument(f"--{name}", type=typ, default=S,
                        help=f"default {default}" + (" (qa: 384)" if name == "max_seq_length" else ""))
    tr.add_argument("--fp16", action="store_true", default=S, help="fp16 mixed precision (CUDA only)")
    tr.add_argument("--bf16", action="store_true", default=S, help="bf16 mixed precision")
    tr.add_argument("--deepspeed", default=S, metavar="JSON", help="DeepSpeed config passed to the Trainer")
    tr.add_argument("--disable_tqdm", action="store_true", default=S)
    tk = p.add_argument_group("task options")
    tk.add_argument("--doc_stride", type=int, default=S, help="qa: window overlap in tokens (128)")
    tk.add_argument("--n_best_size", type=int, default=S, help="qa: start/end candidates (20)")
    tk.add_argument("--max_answer_length", type=int, default=S, help="qa: longest answer in tokens (30)")
    tk.add_argument("--ignore_negative_class", action="store_true", default=S,
                    help="seqcls: also micro P/R/F1 without the negative class, whichever of the labels "
                         "0 / false / DDI-false the training file has (ChemProt/DDI/GAD)")
    tk.add_argument("--negative_label", default=S, metavar="LABEL[,LABEL]",
                    help="seqcls: also micro P/R/F1 without this class (accepted spellings, comma-separated; "
                         "one must occur in the training labels)")
    tk.add_argument("--return_macro_metrics", action="store_true", default=S,
                    help="ner: mean of per-type P/R/F1 (EBM PICO)")
    tk.add_argument("--text_fields", default=S, metavar="A[,B]",
                    help="seqcls/multilabel/regression input fields (default sentence1,sentence2 or sentence; "
                         "e.g. question,sentence for GLUE QNLI)")
    tk.add_argument("--no_document_regroup", action="store_true", default=S,
                    help="multilabel: score rows as they are, not OR-ed per document id (HoC regroups)")
    for name in ("max_train_samples", "max_eval_samples", "max_predict_samples"):
        tk.add_argument(f"--{name}", type=int, default=S, help="use only the first N rows of that file")
    tk.add_argument("--no_save_model", dest="save_model", action="store_false", default=S,
                    help="do not write the fine-tuned model into --output")
    return p


def args_from_namespace(ns: argparse.Namespace) -> FinetuneArgs:
    """Defaults < task defaults < preset < explicit flags."""
    given = {k: v for k, v in vars(ns).items() if k != "preset"}
    for k in ("overwrite_output_dir", "save_strategy", "evaluation_strategy", "eval_strategy",
              "preprocessing_num_workers"):
        given.pop(k, None)
    dos = {k: given.pop(k) for k in ("do_train", "do_eval", "do_predict") if k in given}
    if dos:   # HF-script semantics: a file is used only when its --do_* flag is given
        for flag, split in (("do_train", "train"), ("do_eval", "validation"), ("do_predict", "test")):
            if not dos.get(flag):
                given.pop(split, None)
                given.pop(f"{split}_mismatched", None)
    values = dict(_DEFAULTS)
    task = given.get("task")
    preset_values = {}
    if ns.preset:
        preset_task, preset_values = resolve_preset(ns.preset)
        if task and task != preset_task:
            raise FinetuneError(f"--preset {ns.preset} is a {preset_task} task, not --task {task}")
        task = preset_task
    if not task:
        raise FinetuneError("give --task (one of " + ", ".join(TASK_KINDS) + ") or --preset")
    if task == "qa":
        values.update(_QA_DEFAULTS)
    values.update(preset_values)
    values.update(given)
    values["task"] = task
    return FinetuneArgs(**{k: v for k, v in values.items() if k in _DEFAULTS})


def build_blurb_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="linkbert-finetune blurb-score",
                                description="BLURB score (mean of 6 task-family means) from fine-tuning results")
    p.add_argument("results", nargs="+",
                   help="TASK=RUN_DIR (or TASK=path/metrics.json), or a JSON file mapping task -> score")
    p.add_argument("--split", default="test", help="split of metrics.json to read (default test)")
    p.add_argument("--percent", action="store_true", help="scores in JSON mapping files are percentages")
    p.add_argument("--allow_partial", action="store_true", help="score whatever families are present")
    return p


def blurb_main(argv: list[str]) -> int:
    from finetune.blurb import blurb_score, collect_scores

    a = build_blurb_parser().parse_args(argv)
    result = blurb_score(collect_scores(a.results, a.split, a.percent), allow_partial=a.allow_partial)
    print(json.dumps(result, indent=1))
    return 0


def glue_main(argv: list[str]) -> int:
    from finetune.glue import collect_runs, glue_score

    p = argparse.ArgumentParser(prog="linkbert-finetune glue-score",
                                description="GLUE score (mean of task scores) from fine-tuning results")
    p.add_argument("results", nargs="+", help="TASK=RUN_DIR (or TASK=path/metrics.json), one per GLUE task")
    p.add_argument("--split", default="validation", help="split of metrics.json to read (default validation; "
                                                         "MNLI also reads SPLIT_mismatched)")
    p.add_argument("--allow_partial", action="store_true", help="score whatever tasks are present")
    a = p.parse_args(argv)
    print(json.dumps(glue_score(collect_runs(a.results, a.split), allow_partial=a.allow_partial), indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "prepare":   # raw public releases -> task files (finetune/prepare)
        from finetune.prepare import main as prepare_main
        return prepare_main(argv[1:])
    try:
        if argv and argv[0] == "blurb-score":
            return blurb_main(argv[1:])
        if argv and argv[0] == "glue-score":
            return glue_main(argv[1:])
        run_finetune(args_from_namespace(build_parser().parse_args(argv)))
        return 0
    except FinetuneError as e:
        print(f"linkbert-finetune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("linkbert-finetune: interrupted (Ctrl-C): no metrics written (temporary files removed)", file=sys.stderr)
        return 130


def entry() -> None:
    """Console-script and ``-m`` entry (see data_prep.process for why it may leave with os._exit)."""
    from data_prep.process import exit_process
    exit_process(main())

if __name__ == "__main__":
    entry()
