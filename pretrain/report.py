"""report.png: one picture of a pretraining run, drawn from its metrics.jsonl (and eval.json).

Rank 0 redraws RUN/report.png at checkpoints (at most once a minute) and at the last step; `linkbert-pretrain report RUN
[--out PNG]` draws it for any run folder, one still running (a half-written last line is skipped) or one
written by an older version (a panel whose fields were not recorded says so instead of failing).

Panels: loss (total, MLM, relation; held-out MLM as points), relation accuracy (train, held-out points,
chance), learning rate, gradient norm, throughput (tokens/s and MFU), loss scale and skipped steps.
Drawn with matplotlib's object API on the Agg canvas (no pyplot: no global state, no display needed).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

from pretrain.metrics import METRICS_FILE

REPORT_FILE = "report.png"
CHANCE = 1 / 3
MAX_POINTS = 4000   # rows drawn per curve; longer runs are thinned (smoothing uses every row)

log = logging.getLogger("linkbert-pretrain")


def _num(v) -> float:
    """A metric value as a float: None, missing and the strings metrics.jsonl writes for NaN/inf -> nan."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return math.nan
    return math.nan


def read_records(run: Path) -> tuple[list[dict], list[dict], dict | None]:
    """(train records, held-out records, final eval) of a run; tolerant of a line being written right now."""
    train, evals = [], []
    path = run / METRICS_FILE
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(rec, dict) or "step" not in rec:
                continue
            if "eval_relation_acc" in rec or "eval_mlm_loss" in rec:
                evals.append(rec)
            if "loss" in rec or "mlm_loss" in rec:
                train.append(rec)
    final = None
    try:
        final = json.loads((run / "eval.json").read_text())
    except (OSError, ValueError):
        pass
    if isinstance(final, dict) and "step" in final and not any(e["step"] == final["step"] for e in evals):
        evals.append(final)
    return train, evals, final if isinstance(final, dict) else None


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]] | None:
    """(steps, values) of a field, or None when no row recorded a finite value of it."""
    xs, ys = [], []
    for r in rows:
        y = _num(r.get(key))
        if math.isfinite(y):
            xs.append(_num(r["step"]))
            ys.append(y)
    return (xs, ys) if ys else None


def _smooth(ys: list[float]) -> list[float]:
    """Trailing moving average over ~2% of the run (at least 1, at most 200 rows)."""
    w = max(1, min(200, len(ys) // 50))
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= w:
            acc -= ys[i - w]
        out.append(acc / min(i + 1, w))
    return out


def _thin(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    k = max(1, len(xs) // MAX_POINTS)
    return xs[::k], ys[::k]


def _curve(ax, rows, key, label, color, smooth=True) -> bool:
    s = _series(rows, key)
    if s is None:
        return False
    xs, ys = s
    if smooth and len(ys) > 20:
        ax.plot(*_thin(xs, ys), color=color, alpha=0.18, lw=0.8)
        ax.plot(*_thin(xs, _smooth(ys)), color=color, lw=1.6, label=label)
    else:
        ax.plot(*_thin(xs, ys), color=color, lw=1.4, label=label)
    return True


def _missing(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"{what}\nnot recorded", ha="center", va="center", transform=ax.transAxes, color="0.5")


def _panel_mlm(ax, train, evals) -> None:
    ax.set_title("MLM loss (train smoothed; held-out points)")
    drawn = [_curve(ax, train, "mlm_loss", "MLM (train)", "tab:blue"),
             _curve(ax, train, "loss", "total = MLM + relation", "0.55")]
    s = _series(evals, "eval_mlm_loss")
    if s:
        ax.plot(*s, "o-", color="navy", mec="white", ms=6, lw=1.2, label="MLM (held-out)")
        ax.annotate(f"{s[1][-1]:.2f}", (s[0][-1], s[1][-1]), textcoords="offset points", xytext=(-6, 8),
                    ha="right", fontsize=9, color="navy", weight="bold")
    if any(drawn) or s:
        ax.legend(fontsize=8, loc="upper right")
    else:
        _missing(ax, "losses")


def _panel_relation_loss(ax, train) -> None:
    ax.set_title("relation loss (train; chance ln 3)")
    if _curve(ax, train, "relation_loss", None, "tab:orange"):
        ax.axhline(math.log(3), color="0.4", ls="--", lw=1)
    else:
        _missing(ax, "relation loss")


def _panel_relation(ax, train, evals) -> None:
    ax.set_title("relation accuracy (chance 1/3)")
    ok = _curve(ax, train, "relation_acc", "train", "tab:orange")
    s = _series(evals, "eval_relation_acc")
    if s:
        ax.plot(*s, "o-", color="tab:red", mec="white", ms=6, lw=1.2, label="held-out")
        ax.annotate(f"{s[1][-1]:.3f}", (s[0][-1], s[1][-1]), textcoords="offset points", xytext=(-6, 8),
                    ha="right", fontsize=9, color="tab:red", weight="bold")
    if ok or s:
        ax.axhline(CHANCE, color="0.4", ls="--", lw=1, label="chance")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8, loc="upper left")
    else:
        _missing(ax, "relation accuracy")


def relation_pvalue(acc: float, pairs: int) -> float:
    """One-sided binomial p-value of ``acc`` on ``pairs`` held-out pairs against chance (1/3)."""
    from scipy.stats import binomtest
    return binomtest(round(acc * pairs), pairs, CHANCE, alternative="greater").pvalue


def _mean(rows, key) -> float:
    vals = [v for v in (_num(r.get(key)) for r in rows) if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


def summary_lines(run: Path, train: list[dict], evals: list[dict], final: dict | None) -> list[str]:
    """The text panel: where the run stands, its settings, the last held-out figures, throughput, skips."""
    try:
        cfg = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        cfg = {}
    t, o, m = cfg.get("train", {}), cfg.get("optim", {}), cfg.get("model", {})
    step = int(_num(train[-1]["step"])) if train else 0
    done = final is not None and final.get("step") == step and step == t.get("max_steps", step)
    lines = [f"step {step}" + (f" of {t['max_steps']}" if "max_steps" in t else "")
             + ("  (finished)" if done else "  (running or stopped)")]
    if t:
        lines.append(f"{t.get('precision', '?')}, micro-batch {t.get('micro_batch_size', '?')} x accum "
                     f"{t.get('grad_accum', '?')}, lr {o.get('lr', '?')}")
    if m:
        init = m.get("init_from")
        lines.append(f"model: {Path(init).name + ' (continued)' if init else m.get('name', '?')}")
    last = evals[-1] if evals else None
    if last is not None:
        acc, n = _num(last.get("eval_relation_acc")), last.get("eval_pairs")
        lines.append(f"held-out at step {last['step']}:")
        lines.append(f"  MLM loss {_num(last.get('eval_mlm_loss')):.3f}")
        text = f"  relation acc {acc:.3f}"
        if isinstance(n, int) and n > 0 and math.isfinite(acc):
            text += f" on {n} pairs"
            try:
                text += f",\n  p = {relation_pvalue(acc, n):.1e} against chance (binomial)"
            except ImportError:
                pass
        lines.extend(text.split("\n"))
        rec = [f"{k[len('eval_recall_'):]} {_num(v):.2f}" for k, v in last.items() if k.startswith("eval_recall_")]
        if rec:
            lines.append("  recall " + ", ".join(rec[:2]) + ("," if len(rec) > 2 else ""))
            if len(rec) > 2:
                lines.append("         " + ", ".join(rec[2:]))
    if train:
        k = max(1, len(train) // 10)
        lines.append(f"train (first -> last {k} steps):")
        lines.append(f"  MLM loss {_mean(train[:k], 'mlm_loss'):.2f} -> {_mean(train[-k:], 'mlm_loss'):.2f}")
        lines.append(f"  relation acc {_mean(train[:k], 'relation_acc'):.2f} -> {_mean(train[-k:], 'relation_acc'):.2f}")
        tps, mfu = _mean(train[1:], "tokens_per_s"), _mean(train[1:], "mfu")
        parts = [(f"{tps:,.0f} tokens/s" + (f", MFU {100 * mfu:.1f}%" if math.isfinite(mfu) else ""))
                 if math.isfinite(tps) else "throughput not recorded"]
        skipped = _num(train[-1].get("skipped_total"))
        parts.append(f"{int(skipped)} skipped steps" if math.isfinite(skipped) else "skipped steps not recorded")
        lines.append("; ".join(parts))
    return lines


def _panel_summary(ax, lines: list[str]) -> None:
    ax.axis("off")
    ax.set_title("summary")
    ax.text(-0.05, 1.0, "\n".join(lines), ha="left", va="top", transform=ax.transAxes, fontsize=9,
            family="monospace", linespacing=1.5)


def _panel_simple(ax, train, key, title, color, log_y=False) -> None:
    ax.set_title(title)
    if not _curve(ax, train, key, None, color, smooth=key == "grad_norm"):
        _missing(ax, title)
    elif log_y:
        ax.set_yscale("log")


def _panel_throughput(ax, train) -> None:
    ax.set_title("throughput")
    ok = _curve(ax, train[1:], "tokens_per_s", "tokens/s", "tab:green")   # step 1 includes start-up
    ax.set_ylabel("non-pad tokens/s", color="tab:green", fontsize=8)
    mfu = _series(train[1:], "mfu")
    if mfu:
        ax2 = ax.twinx()
        xs, ys = mfu
        ax2.plot(*_thin(xs, [100 * y for y in _smooth(ys)]), color="tab:purple", lw=1.2)
        ax2.set_ylabel("MFU %", color="tab:purple", fontsize=8)
        ax2.set_ylim(bottom=0)
    if not ok and not mfu:
        _missing(ax, "tokens/s and MFU")


def _panel_skips(ax, train) -> None:
    ax.set_title("loss scale (fp16) and skipped steps")
    scale = _series(train, "loss_scale")
    skipped = _series(train, "skipped_total")
    if scale:
        ax.plot(*_thin(*scale), color="tab:brown", lw=1.4)
        ax.set_yscale("log", base=2)
        ax.set_ylabel("loss scale", color="tab:brown", fontsize=8)
    else:
        ax.text(0.5, 0.62, "no loss scale (fp32 / bf16)", ha="center", transform=ax.transAxes, color="0.5")
    if not skipped:
        ax.text(0.5, 0.45, "skipped steps not recorded", ha="center", transform=ax.transAxes, color="0.5")
    else:
        ax2 = ax.twinx() if scale else ax
        ax2.step(*_thin(*skipped), where="post", color="tab:red", lw=1.4)
        ax2.set_ylabel("skipped steps (total)", color="tab:red", fontsize=8)
        ax2.set_ylim(bottom=0, top=max(1.0, max(skipped[1]) * 1.2))
        ax.text(0.5, 0.9, f"{int(skipped[1][-1])} skipped", ha="center", transform=ax.transAxes, color="tab:red")


def draw(run: str | Path, out: str | Path | None = None) -> Path:
    """Draw the report of run folder ``run`` to ``out`` (default RUN/report.png); returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, LogLocator
    run = Path(run)
    out = Path(out) if out else run / REPORT_FILE
    train, evals, final = read_records(run)
    fig = Figure(figsize=(18, 8), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 4)
    fig.subplots_adjust(left=0.04, right=0.96, top=0.91, bottom=0.07, wspace=0.32, hspace=0.28)
    _panel_mlm(axes[0, 0], train, evals)
    _panel_relation_loss(axes[0, 1], train)
    _panel_relation(axes[0, 2], train, evals)
    _panel_summary(axes[0, 3], summary_lines(run, train, evals, final))
    _panel_simple(axes[1, 0], train, "lr", "learning rate", "tab:cyan")
    _panel_simple(axes[1, 1], train, "grad_norm", "gradient norm (before clipping)", "tab:gray", log_y=True)
    _panel_throughput(axes[1, 2], train)
    _panel_skips(axes[1, 3], train)
    skips_axis = axes[1, 3]   # its log2 loss-scale axis keeps matplotlib's powers of two
    for ax in fig.axes:   # twin axes included; few ticks and no minor ones: tick artists dominate the cost
        if ax.axison:
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
            ax.minorticks_off()
            if ax.get_xscale() == "linear":
                ax.locator_params(axis="x", nbins=5)
            if ax.get_yscale() == "linear":
                ax.locator_params(axis="y", nbins=5)
            elif ax.yaxis.get_scale() == "log" and ax is not skips_axis:   # 1-2-5 labels instead of minor ticks
                ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    for ax in axes[1]:
        ax.set_xlabel("optimizer step", fontsize=8)
    fig.suptitle(f"LinkBERT pretraining run {run}", fontsize=12, weight="bold")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.png")   # readers never see a half-written PNG
    fig.savefig(tmp, pil_kwargs={"compress_level": 1})   # fast zlib: a larger file, a third of the time
    tmp.replace(out)
    return out


MIN_INTERVAL_S = 60.0   # between checkpoint redraws: runs that save every few seconds (tests) draw rarely
_last_drawn = -math.inf


def redraw(run: str | Path, force: bool = False) -> None:
    """The trainer's hook (rank 0), at each checkpoint (``force`` at the last step): at most one drawing per
    MIN_INTERVAL_S unless forced; a drawing failure is one warning, never a failed run."""
    global _last_drawn
    t0 = time.perf_counter()
    if not force and t0 - _last_drawn < MIN_INTERVAL_S:
        return
    _last_drawn = t0
    try:
        path = draw(run)
        log.debug("report %s drawn in %.0f ms", path, 1000 * (time.perf_counter() - t0))
    except Exception as e:   # a picture must not stop training: the metrics file remains the record
        log.warning("report.png not drawn: %s: %s", type(e).__name__, e)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="linkbert-pretrain report",
                                description="draw report.png for a run folder (finished, running or older)")
    p.add_argument("run", help="run folder (the --output of linkbert-pretrain)")
    p.add_argument("--out", help="PNG to write (default RUN/report.png)")
    args = p.parse_args(argv)
    run = Path(args.run)
    if not (run / METRICS_FILE).is_file():
        print(f"linkbert-pretrain report: error: {run / METRICS_FILE} not found: give the --output folder of a "
              "linkbert-pretrain run", file=sys.stderr)
        return 3
    print(draw(run, args.out))
    return 0
