"""`make demo` end to end, shortened: prepare the bundled corpus, pretrain on 2 ranks with ZeRO-2, export,
fill a mask with transformers, print the summary and report.png; rerunning resumes."""
import json
import re
import sys

import pytest

from tests.procs import child_env, run

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_and_reruns_from_its_checkpoint(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "pretrain.demo", "--out", str(out), "--steps", "6", "--micro-batch", "4",
           "--max-seq-len", "32", "--held-out", "64", "--timeout", "400"]
    first = run(cmd, timeout=450, env=child_env(OMP_NUM_THREADS=1)).stdout
    hf = out / "run" / "hf"
    assert json.loads((hf / "config.json").read_text())["model_type"] == "bert", first[-3000:]
    assert (out / "run" / "checkpoints" / "step6" / "COMPLETE").is_file()
    # the summary: a fill-mask line with 5 predictions, one held-out row per eval, recall per relation
    fill = re.search(r"programmable \[MASK\]\.\s+->\s+(.+)", first)
    assert fill and len(fill.group(1).split(", ")) == 5, first[-3000:]
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)$", first, re.M)
    assert [int(r[0]) for r in rows][-1] == 6 and all(0 <= float(r[2]) <= 1 for r in rows), first[-3000:]
    assert re.search(r"recall per relation at the end: contiguous [\d.]+, random [\d.]+, linked [\d.]+", first)
    assert f"Hugging Face export:                {hf}" in first
    # held-out accuracy with its p-value and the majority baseline; the picture of the run
    assert re.search(r"held-out relation accuracy [\d.]+ on 64 pairs: one-sided binomial p = \S+ against chance "
                     r"1/3 \(the held-out mix is [\d.]+/[\d.]+/[\d.]+: always answering", first), first[-3000:]
    assert re.search(r"^   precision (bf16|fp32): ", first, re.M), first[-3000:]
    assert (out / "run" / "report.png").stat().st_size > 10_000
    final = json.loads((out / "run" / "eval.json").read_text())
    assert final["step"] == 6
    # rerun: the data is not rebuilt and the finished run is resumed, not restarted
    again = run(cmd, timeout=450, env=child_env(OMP_NUM_THREADS=1)).stdout
    assert "resuming from" in again.lower() or "resumed" in again.lower(), again[-3000:]
    assert json.loads((out / "run" / "eval.json").read_text())["step"] == 6
