"""`linkbert-export CKPT --out HF_DIR`: a training checkpoint (any ZeRO stage) -> a Hugging Face folder.

CKPT is a run's --output folder (its newest complete checkpoint is used), its checkpoints/ folder, or
one checkpoints/stepN folder. Consolidation runs on CPU in one process: no process group needed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pretrain.checkpoint import CheckpointError, export_hf, resolve


def export(ckpt: str | Path, out: str | Path) -> Path:
    folder = resolve(ckpt)
    return export_hf(folder, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="linkbert-export", description=__doc__.strip().splitlines()[0])
    p.add_argument("ckpt", help="run folder, its checkpoints/ folder, or checkpoints/stepN")
    p.add_argument("--out", required=True, help="Hugging Face output folder")
    args = p.parse_args(argv)
    try:
        folder = resolve(args.ckpt)
        export_hf(folder, args.out)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"linkbert-export: error: {e}", file=sys.stderr)
        return 2
    print(f"exported {folder} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
