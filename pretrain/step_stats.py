"""What the step loop and the held-out eval add up, kept on the engine's device.

Reading a CUDA value on the host (`.item()`, `bool(t)`, `.cpu()`) waits for every queued kernel: one
per micro-batch drains the GPU queue again and again. So everything is accumulated by device-side
adds (host numbers enter as scalar arguments of an add, which copies nothing), reduced with one
all-reduce on the device tensor (NCCL has no CPU tensors) and read back with one transfer when a
metrics line, a checkpoint or the end of the run needs it.
"""
from __future__ import annotations

import torch

from pretrain.presets import RELATION_NAMES


class _Slots:
    """A float64 vector on ``device`` with named slots."""

    FIELDS: tuple[str, ...] = ()

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.index = {name: i for i, name in enumerate(self.FIELDS)}
        self.values = torch.zeros(len(self.FIELDS), dtype=torch.float64, device=self.device)

    def add(self, name: str, value) -> None:
        """value: a device tensor (0-dim) or a host number (passed as a scalar: no copy, no sync)."""
        self.values[self.index[name]] += value

    def all_reduce(self) -> None:
        import torch.distributed as dist
        dist.all_reduce(self.values)

    def read(self, *extra: torch.Tensor) -> dict[str, float]:
        """The one device-to-host transfer: the slots, plus any 0-dim device tensors given (returned
        under ``extra0``, ``extra1``...)."""
        vec = self.values
        if extra:
            vec = torch.cat([vec] + [e.detach().to(vec.device, torch.float64).reshape(1) for e in extra])
        host = vec.tolist()
        out = dict(zip(self.FIELDS, host))
        out.update({f"extra{i}": v for i, v in enumerate(host[len(self.FIELDS):])})
        return out


class StepStats(_Slots):
    """Per optimizer step (reset by ``begin_step``) and per logging interval (reset by ``begin_interval``).

    step: loss / mlm_loss / relation_loss sums over finite micro-batches, relation hits and pairs, and
    the non-finite micro-batches; interval: tokens, padded widths and micro-batches since the last
    read (tokens/s and MFU are rates over the interval: on a GPU only a read marks where the work ends),
    non-finite micro-batches (added to the run's total) and the stop flag (a signal on any rank).
    """

    STEP = ("loss", "mlm_loss", "relation_loss", "relation_correct", "relation_count", "nonfinite")
    INTERVAL = ("tokens", "widths", "micro_batches", "nonfinite_interval", "stop")
    FIELDS = STEP + INTERVAL

    def begin_step(self) -> None:
        self.values[:len(self.STEP)].zero_()

    def begin_interval(self) -> None:
        self.values[len(self.STEP):].zero_()

    def add_micro(self, outp, relation_labels: torch.Tensor, n_tokens: int, width: int) -> None:
        """One micro-batch's outputs (device tensors) and its host-side counts (non-pad tokens, padded width)."""
        loss = outp.loss.detach().float()
        finite = torch.isfinite(loss)
        zero = torch.zeros((), dtype=torch.float32, device=loss.device)
        v = self.values
        i = self.index
        # a non-finite loss poisons nothing: it is counted and left out of the sums
        v[i["loss"]] += torch.where(finite, loss, zero)
        v[i["mlm_loss"]] += torch.where(finite, outp.mlm_loss.detach().float(), zero)
        v[i["relation_loss"]] += torch.where(finite, outp.relation_loss.detach().float(), zero)
        v[i["relation_correct"]] += (outp.relation_logits.detach().argmax(-1) == relation_labels).sum()
        v[i["relation_count"]] += relation_labels.numel()
        bad = (~finite).to(torch.float64)
        v[i["nonfinite"]] += bad
        v[i["nonfinite_interval"]] += bad
        v[i["tokens"]] += n_tokens
        v[i["widths"]] += width
        v[i["micro_batches"]] += 1


class EvalStats(_Slots):
    """Held-out MLM loss (summed over masked tokens), relation accuracy and per-relation recall."""

    FIELDS = (("mlm_loss_sum", "masked", "relation_correct", "pairs")
              + tuple(f"hit_{n}" for n in RELATION_NAMES) + tuple(f"count_{n}" for n in RELATION_NAMES))

    def add_batch(self, outp, masked_labels: torch.Tensor, relation_labels: torch.Tensor) -> None:
        k = len(RELATION_NAMES)
        v, i = self.values, self.index
        n = (masked_labels != -100).sum()
        hit = (outp.relation_logits.argmax(-1) == relation_labels).to(torch.float64)
        v[i["mlm_loss_sum"]] += outp.mlm_loss.detach().double() * n
        v[i["masked"]] += n
        v[i["relation_correct"]] += hit.sum()
        v[i["pairs"]] += relation_labels.numel()
        # per-relation counts by scatter (boolean indexing would ask the host for the result's size)
        h0, c0 = i[f"hit_{RELATION_NAMES[0]}"], i[f"count_{RELATION_NAMES[0]}"]
        v[h0:h0 + k].scatter_add_(0, relation_labels, hit)
        v[c0:c0 + k].scatter_add_(0, relation_labels, torch.ones_like(hit))

    def summary(self) -> dict:
        r = self.read()
        out = {"eval_mlm_loss": r["mlm_loss_sum"] / max(1.0, r["masked"]),
               "eval_relation_acc": r["relation_correct"] / max(1.0, r["pairs"]), "eval_pairs": int(r["pairs"])}
        for name in RELATION_NAMES:   # recall of each relation: which ones the head tells apart
            out[f"eval_recall_{name}"] = r[f"hit_{name}"] / max(1.0, r[f"count_{name}"])
        return out
