"""`linkbert-pretrain`: pretrain (or continue pretraining) LinkBERT on prepared pair shards with DeepSpeed.

Runs alone or under deepspeed / torchrun / mpirun / srun (ranks come from the environment). Rerunning
the same command with the same --output continues from the latest complete checkpoint.
`linkbert-pretrain report RUN [--out PNG]` draws RUN/report.png (see pretrain/report.py).
"""
from __future__ import annotations

import argparse
import sys

from pretrain.config import RUN_PRESETS, ConfigError, RunConfig, build
from pretrain.presets import ConfigError as ModelConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="linkbert-pretrain", description=__doc__.strip().splitlines()[0],
                                epilog="Any config key can be set as --section.key=value, e.g. --optim.name=lamb "
                                       "--schedule.decay=polynomial --data.whole_word=true. "
                                       "`linkbert-pretrain report RUN [--out PNG]` draws a run's report.png.")
    p.add_argument("--config", help="JSON, YAML or TOML file of {section: {key: value}} (may name a preset)")
    p.add_argument("--preset", choices=sorted(RUN_PRESETS), help="the paper's runs (docs/recipes.md)")
    p.add_argument("--data", nargs="+", metavar="DIR", help="prepared dataset folders (linkbert-prep build)")
    p.add_argument("--data-weights", type=float, nargs="+", metavar="W", help="mixing weights, one per --data")
    p.add_argument("--output", help="run folder: checkpoints, metrics.jsonl, tensorboard/, hf/")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--init-from", metavar="HF_DIR_OR_HUB_ID",
                   help="start from this HF BERT checkpoint's weights: a folder or a Hub id (bert-base-cased)")
    g.add_argument("--model", help="tiny | base | large (random init) or an HF config folder")
    p.add_argument("--deepspeed-config", metavar="JSON", help="a ds_configs/*.json (default zero{stage}.json)")
    p.add_argument("--zero-stage", type=int, choices=(0, 1, 2, 3))
    p.add_argument("--max-steps", type=int)
    p.add_argument("--micro-batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--save-every", type=int)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="run every start-up check (vocabulary, shard hashes, pair counts, held-out size, batch "
                        "arithmetic, devices, output free space), print them and exit: non-zero on a problem")
    p.add_argument("--force-unlock", action="store_true",
                   help="take the lock of --output from another run that holds it (only when you know that run is "
                        "gone: a live run on another host would go on writing); see docs/pretrain.md")
    p.add_argument("--world", type=int, metavar="N",
                   help="with --dry-run: the number of ranks the job will have (default: the launcher's, else 1)")
    # deepspeed's launcher appends --local_rank=N; the rank is read from the environment instead
    p.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    return p


FLAG_MAP = {  # flag attribute -> (section, key)
    "data": ("data", "paths"), "data_weights": ("data", "weights"), "output": ("train", "output"),
    "init_from": ("model", "init_from"), "model": ("model", "name"),
    "deepspeed_config": ("train", "deepspeed_config"), "zero_stage": ("train", "zero_stage"),
    "max_steps": ("train", "max_steps"), "micro_batch_size": ("train", "micro_batch_size"),
    "grad_accum": ("train", "grad_accum"), "lr": ("optim", "lr"), "seed": ("train", "seed"),
    "save_every": ("checkpoint", "save_every"), "precision": ("train", "precision"),
}


def config_from_args(argv: list[str] | None) -> tuple[RunConfig, argparse.Namespace]:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    overrides, bad = [], []
    i = 0
    while i < len(rest):   # --section.key=value or --section.key value
        a = rest[i]
        if a.startswith("--") and "." in a.split("=", 1)[0]:
            if "=" not in a and i + 1 < len(rest):
                a = f"{a}={rest[i + 1]}"
                i += 1
            overrides.append(a)
        else:
            bad.append(a)
        i += 1
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    flags: dict[str, dict] = {}
    for attr, (sec, key) in FLAG_MAP.items():
        v = getattr(args, attr)
        if v is not None:
            flags.setdefault(sec, {})[key] = v
    return build(args.preset, args.config, flags, overrides), args


def dry_run(cfg: RunConfig, world: int | None) -> int:
    """Print what start-up would check; the first problem is the last line (exit 2 config, 3 otherwise)."""
    from pretrain.dist_env import discover
    from pretrain.preflight import preflight
    world = world or discover().world_size
    if world < 1:
        raise ConfigError(f"--world {world}: give 1 or more")
    report = preflight(cfg, rank=0, world=world, hash_share=(0, 1))   # this process hashes every shard
    print(report.text())
    if report.ok:
        print("linkbert-pretrain: dry run: every start-up check passed")
        return 0
    report.raise_first()
    return 3


def main(argv: list[str] | None = None) -> int:
    """Errors a user caused are one line: config errors exit 2, other user errors (data, checkpoint,
    disk, rendezvous, preflight) exit 3. Anything else is a bug and keeps its traceback."""
    from data_prep.errors import PrepError
    from pretrain.errors import PretrainError
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:   # a subcommand in front of the training flags, which keep their old form
        from pretrain.report import main as report_main
        return report_main(argv[1:])
    try:
        cfg, args = config_from_args(argv)
        if args.print_config:
            import json
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        if not cfg.data.paths:
            raise ConfigError("no data: pass --data DIR (the --out folder of `linkbert-prep build`)")
        if not cfg.train.output:
            raise ConfigError("no output folder: pass --output DIR")
        if args.dry_run:
            return dry_run(cfg, args.world)
        from pretrain import run_guard, trainer
        run_guard.request_force_unlock(args.force_unlock)
        try:
            return trainer.train(cfg)
        finally:
            run_guard.release()
    except KeyboardInterrupt:   # Ctrl-C before the step loop (it saves and exits 0 once training runs)
        print("linkbert-pretrain: interrupted (Ctrl-C) before training started: nothing was saved", file=sys.stderr)
        return 130
    except (ConfigError, ModelConfigError) as e:
        print(f"linkbert-pretrain: error: {e}", file=sys.stderr)
        return 2
    except (PretrainError, PrepError) as e:
        print(f"linkbert-pretrain: error: {e}", file=sys.stderr)
        return 3


def entry() -> None:
    """Console-script and ``-m`` entry (see data_prep.process for why it may leave with os._exit)."""
    from data_prep.process import exit_process
    exit_process(main())

if __name__ == "__main__":
    entry()
