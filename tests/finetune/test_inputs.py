"""Bad inputs fail with one line naming file, line and field; presets carry LinkBERT's values."""
import json
import shutil

import pytest

from finetune.cli import args_from_namespace, build_parser, main
from finetune.errors import FinetuneError
from finetune.runner import FinetuneArgs, check_model_dir, run_finetune
from tests import procs
from tests.finetune.helpers import FIX


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_missing_field_names_file_line_and_field(tmp_path, minilm_dir):
    good = {"id": "q1", "question": "What?", "context": "A 12 B", "answers": {"text": ["12"], "answer_start": [2]}}
    bad = {"id": "q2", "question": "Why?", "context": "C"}
    train = _write(tmp_path / "train.jsonl", [good, bad])
    with pytest.raises(FinetuneError, match=r"train\.jsonl:2: missing field 'answers' for task qa"):
        run_finetune(FinetuneArgs(task="qa", model=str(minilm_dir), output=str(tmp_path / "o"), train=train,
                                  validation=train))


def test_invalid_json_and_wrong_types(tmp_path, minilm_dir):
    f = _write(tmp_path / "v.jsonl", ['{"id": "1", "sentence": "x", "label": "a"}', '{"id": 2, "sentence": '])
    with pytest.raises(FinetuneError, match=r"v\.jsonl:2: not valid JSON"):
        run_finetune(FinetuneArgs(task="seqcls", model=str(minilm_dir), output=str(tmp_path / "o"), train=f,
                                  validation=f))
    f = _write(tmp_path / "n.jsonl", [{"id": "1", "tokens": ["a", "b"], "ner_tags": ["O"]}])
    with pytest.raises(FinetuneError, match=r"n\.jsonl:1: 1 ner_tags for 2 tokens"):
        run_finetune(FinetuneArgs(task="ner", model=str(minilm_dir), output=str(tmp_path / "o"), train=f,
                                  validation=f))


def test_label_unseen_in_training(tmp_path, minilm_dir):
    train = _write(tmp_path / "t.jsonl", [{"id": "1", "sentence": "x", "label": "yes"},
                                          {"id": "2", "sentence": "y", "label": "no"}])
    val = _write(tmp_path / "d.jsonl", [{"id": "1", "sentence": "x", "label": "yes"},
                                        {"id": "2", "sentence": "z", "label": "maybe"}])
    with pytest.raises(FinetuneError, match=r"d\.jsonl:2: label 'maybe' of the validation file never occurs"):
        run_finetune(FinetuneArgs(task="seqcls", model=str(minilm_dir), output=str(tmp_path / "o"), train=train,
                                  validation=val))
    ner_val = _write(tmp_path / "nv.jsonl", [{"id": "1", "tokens": ["x"], "ner_tags": ["B-Gene"]}])
    with pytest.raises(FinetuneError, match=r"nv\.jsonl:1: tag 'B-Gene' of the validation file never occurs"):
        run_finetune(FinetuneArgs(task="ner", model=str(minilm_dir), output=str(tmp_path / "o"),
                                  train=str(FIX / "ner_train.jsonl"), validation=ner_val))


def test_model_dir_must_be_bert_family(tmp_path, minilm_dir):
    assert check_model_dir(minilm_dir)["model_type"] == "bert"
    with pytest.raises(FinetuneError, match="no config.json"):
        check_model_dir(tmp_path)
    gpt = tmp_path / "gpt"
    shutil.copytree(minilm_dir, gpt)
    cfg = json.loads((gpt / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (gpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FinetuneError, match=r"config\.json: model_type 'gpt2' is not a BERT-family encoder"):
        check_model_dir(gpt)


def test_cli_prints_one_error_line(tmp_path, minilm_dir, capsys):
    f = _write(tmp_path / "t.jsonl", [{"id": "1", "sentence1": "x", "label": "a"}])
    rc = main(["--task", "seqcls", "--model", str(minilm_dir), "--train", f, "--validation", f,
               "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err == [f"linkbert-finetune: error: {f}:1: missing field 'sentence2' for task seqcls "
                   "(expected {id, sentence, label} or {id, sentence1, sentence2, label})"]


def test_console_script_error_exit(tmp_path):
    cp = procs.run([str(procs.VENV_BIN / "linkbert-finetune"), "--task", "qa", "--model", str(tmp_path),
                    "--validation", "x", "--output", str(tmp_path / "o")], timeout=120, check=False)
    assert cp.returncode == 2
    assert cp.stdout.strip().endswith("no config.json; not a Hugging Face checkpoint directory "
                                      "(linkbert-export writes one)")


def _args(argv):
    return args_from_namespace(build_parser().parse_args(argv + ["--model", "m", "--output", "o"]))


def test_presets_carry_run_examples_values_and_flags_override():
    # values typed in from LinkBERT's run_examples_blurb_biolinkbert-large.sh (ChemProt block)
    a = _args(["--preset", "chemprot-large"])
    assert (a.task, a.per_device_train_batch_size, a.gradient_accumulation_steps, a.learning_rate,
            a.num_train_epochs, a.max_seq_length, a.warmup_ratio, a.fp16, a.negative_label) == \
        ("seqcls", 16, 1, 2e-5, 4, 256, 0.5, True, "0,false")
    # base BIOSSES: seed 5; large JNLPBA: seed 3 and the (0.9, 0.98, 1e-6, wd 0.01) Adam settings
    assert _args(["--preset", "biosses"]).seed == 5
    j = _args(["--preset", "jnlpba-large"])
    assert (j.seed, j.adam_beta2, j.adam_epsilon, j.weight_decay, j.learning_rate) == (3, 0.98, 1e-6, 0.01, 3e-5)
    # MRQA base SQuAD: 12 x 1, 3e-5, 2 epochs, 384/128, eval every 1000 steps
    s = _args(["--preset", "squad"])
    assert (s.task, s.per_device_train_batch_size, s.gradient_accumulation_steps, s.learning_rate,
            s.num_train_epochs, s.max_seq_length, s.doc_stride, s.eval_steps) == ("qa", 12, 1, 3e-5, 2, 384, 128, 1000)
    assert _args(["--preset", "ebmpico"]).return_macro_metrics is True
    m = _args(["--preset", "medqa", "--learning_rate", "1e-5"])
    assert (m.task, m.learning_rate, m.gradient_accumulation_steps, m.warmup_steps) == ("mc", 1e-5, 8, 100)
    assert _args(["--task", "qa"]).max_seq_length == 384 and _args(["--task", "ner"]).max_seq_length == 128
    with pytest.raises(FinetuneError, match="is a seqcls task, not --task qa"):
        _args(["--preset", "gad", "--task", "qa"])
    with pytest.raises(FinetuneError, match="unknown --preset 'squadd'"):
        _args(["--preset", "squadd"])


def test_fp16_falls_back_to_fp32_without_cuda():
    import torch

    from finetune.runner import _precision
    a = FinetuneArgs(task="seqcls", model="m", output="o", fp16=True)
    if torch.cuda.is_available():
        assert _precision(a) == (True, False)
    else:
        assert _precision(a) == (False, False) and "no CUDA" in a.notes[0]
    with pytest.raises(FinetuneError, match="exclusive"):
        _precision(FinetuneArgs(task="seqcls", model="m", output="o", fp16=True, bf16=True))


def test_run_examples_command_lines_are_accepted():
    """MMLU in run_examples passes --train_file but only --do_predict: nothing is trained."""
    a = args_from_namespace(build_parser().parse_args(
        ["--model_name_or_path", "runs/medqa", "--train_file", "dev.json", "--validation_file", "val.json",
         "--test_file", "test.json", "--do_predict", "--per_device_eval_batch_size", "4", "--max_seq_length",
         "512", "--fp16", "--output_dir", "out", "--overwrite_output_dir", "--task", "mc"]))
    assert (a.model, a.output, a.train, a.validation, a.test) == ("runs/medqa", "out", None, None, "test.json")
    assert (a.per_device_eval_batch_size, a.max_seq_length, a.fp16) == (4, 512, True)
    b = _args(["--task", "ner", "--train_file", "t", "--validation_file", "v", "--do_train", "--do_eval",
               "--save_strategy", "no", "--evaluation_strategy", "no", "--warmup_ratio", "0.1"])
    assert (b.train, b.validation, b.test, b.warmup_ratio) == ("t", "v", None, 0.1)


def test_text_fields_option_for_glue_style_files(tmp_path):
    from finetune.tasks import TaskOptions, make_task
    rows = [{"id": "1", "question": "Is it?", "sentence": "It is.", "label": "entailment", "_where": "f:1"}]
    t = make_task("seqcls", TaskOptions(text_fields=("question", "sentence")))
    assert t.validate(rows, "train") and t.text_fields == ("question", "sentence")
    t = make_task("seqcls", TaskOptions(text_fields=("question", "hypothesis")))
    with pytest.raises(FinetuneError, match="f:1: missing field 'hypothesis'"):
        t.validate(rows, "train")
    assert _args(["--task", "seqcls", "--text_fields", "question,sentence"]).text_fields == "question,sentence"
