"""Run metrics on rank 0: OUTPUT/metrics.jsonl (one object per optimizer step), TensorBoard, progress bar.

On resume, records past the checkpoint's step (written by the run that died) are dropped so the file
reads as one uninterrupted trajectory; TensorBoard gets the same purge through ``purge_step``.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from pretrain.storage import write_error

METRICS_FILE = "metrics.jsonl"


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)   # JSON has no NaN/inf; keep it visible rather than dropping the record
    return v


def truncate_after(path: Path, step: int) -> int:
    """Drop records with step > ``step``; returns how many were dropped."""
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:   # a line cut by a kill mid-write
            dropped += 1
            continue
        if rec.get("step", 0) > step:
            dropped += 1
        else:
            keep.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(x + "\n" for x in keep))
    tmp.replace(path)
    return dropped


class MetricsWriter:
    def __init__(self, output: str | Path, start_step: int, max_steps: int, tensorboard: bool = True,
                 progress: bool = True):
        self.path = Path(output) / METRICS_FILE
        try:   # a rerun on a disk that is still full fails here: one line naming the file and the disk
            self.path.parent.mkdir(parents=True, exist_ok=True)
            truncate_after(self.path, start_step)
            self._f = open(self.path, "a", buffering=1)
        except OSError as e:
            raise write_error(self.path, e, "the metrics file") from None
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(Path(output) / "tensorboard"), purge_step=start_step + 1)
            except Exception as e:  # TensorBoard is optional: the JSONL file is the record
                print(f"[linkbert-pretrain] tensorboard disabled: {e}", file=sys.stderr)
        self.bar = None
        if progress:
            from tqdm import tqdm
            self.bar = tqdm(total=max_steps, initial=start_step, desc="pretrain", unit="step",
                            dynamic_ncols=True, file=sys.stderr, mininterval=1.0)

    def log(self, rec: dict) -> None:
        try:
            self._f.write(json.dumps({k: _clean(v) for k, v in rec.items()}) + "\n")
        except OSError as e:
            raise write_error(self.path, e, "the metrics file") from None
        if self.tb is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, int | float) and v is not None and math.isfinite(v):
                    self.tb.add_scalar(f"{'eval' if k.startswith('eval_') else 'train'}/{k}", v, rec["step"])
        if self.bar is not None:
            self.bar.update(rec["step"] - self.bar.n)   # records may be every metrics.log_every steps
            self.bar.set_postfix(loss=f"{rec.get('loss', float('nan')):.4f}",
                                 rel_acc=f"{rec.get('relation_acc', float('nan')):.3f}", refresh=False)

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:   # already reported by log(); closing must not hide that line
            pass
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()


def read_metrics(output: str | Path) -> list[dict]:
    p = Path(output) / METRICS_FILE
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.is_file() else []
