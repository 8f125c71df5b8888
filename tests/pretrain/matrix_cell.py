"""One cell of the configuration matrix, every phase in one process (one import of torch and DeepSpeed):

1. ``a``: train STEPS steps, saving every SAVE steps with an HF export at each save (hf_every), and
   the final export;
2. ``b``: a copy of ``a``'s checkpoint at step SAVE resumed to STEPS (its losses must equal ``a``'s);
3. ``a`` continued to MORE steps (a larger --max-steps on a finished run).

Usage: python -m tests.pretrain.matrix_cell OUT STEPS SAVE MORE -- linkbert-pretrain flags (no --output,
--max-steps, --save-every). Writes OUT/{a,b}; exit status: the first non-zero status of a phase.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path


def _forget_deepspeed_groups() -> None:
    """DeepSpeed caches its process groups in module globals; a run ends by destroying the process
    group, so the next run in this process must not find the old ones (a test-only concern: a real
    job is one run per process)."""
    from deepspeed.utils import groups
    for name, value in list(vars(groups).items()):
        if name.startswith("_") and name.isupper() and isinstance(value, dict):
            value.clear()
        elif (name.startswith("_") and name.isupper() and name.endswith(("GROUP", "SIZE", "RANK"))) or name in (
                "mpu", "mesh_device"):
            setattr(groups, name, None)


def main(argv: list[str]) -> int:
    from pretrain.cli import main as pretrain

    def run(args):
        rc = pretrain(args)
        _forget_deepspeed_groups()
        return rc
    sep = argv.index("--")
    out, steps, save, more = Path(argv[0]), int(argv[1]), int(argv[2]), int(argv[3])
    flags = argv[sep + 1:]
    a, b = out / "a", out / "b"
    common = [*flags, "--save-every", str(save), "--checkpoint.keep_last=100", f"--checkpoint.hf_every={save}"]
    rc = run([*common, "--output", str(a), "--max-steps", str(steps)])
    if rc:
        return rc
    shutil.copytree(a / "checkpoints" / f"step{save}", b / "checkpoints" / f"step{save}")
    rc = run([*common, "--output", str(b), "--max-steps", str(steps), "--checkpoint.export_final=false"])
    if rc:
        return rc
    return run([*common, "--output", str(a), "--max-steps", str(more)])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
