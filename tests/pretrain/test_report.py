"""report.png and `linkbert-pretrain report RUN`: drawn for a finished run, a run still being written and a
run of an older version (fields missing); the summary's figures and p-value are right (in-process, ~5 s).
The trainer's own redraw at each checkpoint is checked on real runs in test_engine_runs.py."""
import json
import math

import pytest
from PIL import Image

from pretrain.cli import main as cli_main
from pretrain.report import read_records, relation_pvalue, summary_lines


def _rows(n, old=False):
    rows = []
    for s in range(1, n + 1):
        r = {"step": s, "loss": 9.0 - s / n, "mlm_loss": 8.0 - s / n, "relation_loss": 1.1 - 0.2 * s / n,
             "relation_acc": 0.33 + 0.2 * s / n, "lr": 1e-3}
        if not old:
            r.update(grad_norm=2.0, loss_scale=None, tokens_per_s=1000.0 + s, mfu=0.02, skipped=s == 3,
                     skipped_total=int(s >= 3), step_time_s=0.1)
        rows.append(r)
    return rows


def _write(run, rows, tail=""):
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_old_and_still_running_runs_are_drawn(tmp_path):
    run = tmp_path / "old"
    # an older version's records (no grad norm, throughput, skips), the last line cut mid-write
    _write(run, _rows(40, old=True), tail='{"step": 41, "loss": 8.')
    train, evals, final = read_records(run)
    assert [r["step"] for r in train] == list(range(1, 41)) and evals == [] and final is None
    png = tmp_path / "pics" / "old.png"
    assert cli_main(["report", str(run), "--out", str(png)]) == 0
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (1440, 640)
    lines = summary_lines(run, train, evals, final)
    assert lines[0] == "step 40  (running or stopped)", lines
    assert not (run / "report.png").exists()   # --out was honoured
    assert cli_main(["report", str(run)]) == 0 and (run / "report.png").is_file()


def test_finished_run_summary_and_pvalue(tmp_path):
    run = tmp_path / "done"
    rows = _rows(100)
    rows[49].update(eval_mlm_loss=7.5, eval_relation_acc=0.40, eval_pairs=512)
    _write(run, rows)
    final = {"step": 100, "eval_mlm_loss": 7.1, "eval_relation_acc": 0.45, "eval_pairs": 512,
             "eval_recall_contiguous": 0.5, "eval_recall_random": 0.4, "eval_recall_linked": 0.45}
    (run / "eval.json").write_text(json.dumps(final))
    (run / "config.json").write_text(json.dumps({"train": {"max_steps": 100, "precision": "bf16",
                                                           "micro_batch_size": 16, "grad_accum": 1},
                                                 "optim": {"lr": 0.002}, "model": {"name": "tiny"}}))
    train, evals, fin = read_records(run)
    assert [e["step"] for e in evals] == [50, 100]     # eval.json joins the held-out points
    text = "\n".join(summary_lines(run, train, evals, fin))
    assert "step 100 of 100  (finished)" in text and "bf16, micro-batch 16 x accum 1, lr 0.002" in text
    # one-sided binomial tail P(X >= 230 | n=512, p=1/3), summed exactly
    k, n = round(0.45 * 512), 512
    tail = sum(math.comb(n, i) * (1 / 3) ** i * (2 / 3) ** (n - i) for i in range(k, n + 1))
    assert relation_pvalue(0.45, 512) == pytest.approx(tail, rel=1e-6)
    assert f"relation acc 0.450 on 512 pairs,\n  p = {tail:.1e} against chance" in text
    assert "recall contiguous 0.50, random 0.40,\n         linked 0.45" in text
    assert "1 skipped steps" in text
    assert cli_main(["report", str(run)]) == 0
    with Image.open(run / "report.png") as im:
        assert im.size == (1440, 640)


def test_not_a_run_folder_is_one_line(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "nothing")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metrics.jsonl not found" in err[0], err


def test_trainer_hook_draws_at_most_once_a_minute_but_always_at_the_end(tmp_path, monkeypatch):
    from pretrain import report
    run = tmp_path / "run"
    _write(run, _rows(10))
    monkeypatch.setattr(report, "_last_drawn", -math.inf)
    report.redraw(run)                      # a checkpoint: drawn
    png = run / "report.png"
    assert png.is_file()
    png.unlink()
    report.redraw(run)                      # the next checkpoint seconds later: skipped
    assert not png.exists()
    report.redraw(run, force=True)          # the last step: always drawn
    assert png.is_file()
