"""Pretraining batches from prepared pair shards (docs/formats.md section 3): order, rank slicing, reads, masking.

The order is Megatron-style: the training stream is the concatenation of per-epoch permutations keyed
by (seed, epoch); stream position p is one integer, so the loader's whole state is ``consumed_samples``
and resuming costs nothing. Global micro-batch m covers stream positions [m*B*W, (m+1)*B*W); rank r
reads its own contiguous B of them. A batch may straddle an epoch boundary, so every training pair is
seen exactly once per epoch whatever B and W are. Masks are drawn per batch from an RNG keyed by
(seed, stream position, rank): the same batch gets the same masks after a resume.

Several datasets can be mixed with weights: each contributes round(w_d * N) pairs per epoch, taken
in order from its own endless sequence of permutations, then the epoch is shuffled as one.
A fixed, seed-keyed set of ``held_out`` pairs never enters training and feeds the evaluation.

Reads go through h5py with a bounded chunk cache per shard (memory does not grow with shard size) on
a background thread that keeps ``prefetch`` micro-batches ready.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from data_prep.shards import Manifest, ShardError, check_shard_attrs
from pretrain import faults
from pretrain.config import DataConfig
from pretrain.masking import MaskingSpec, mask_batch

READ_FIELDS = ("input_ids", "seq_lens", "a_lens", "pair_labels")


class PairDataset:
    """One prepared dataset folder: its shards seen as one array of pairs."""

    def __init__(self, path: str | Path, cache_mb: int):
        self.path = Path(path)
        self.manifest = Manifest.read(self.path)
        self.shard_paths = self.manifest.shard_paths
        counts = []
        attrs = None
        for sp in self.shard_paths:
            with h5py.File(sp, "r") as f:
                a = check_shard_attrs(sp, f.attrs)
                n = len(f["seq_lens"])
                for name in READ_FIELDS:
                    if name not in f:
                        raise ShardError(f"{sp}: dataset {name} is missing; re-run `linkbert-prep build`")
            if attrs is None:
                attrs = a
            elif a != attrs:
                raise ShardError(f"{sp}: attributes {a} differ from the first shard's {attrs}")
            counts.append(n)
        if attrs is None or sum(counts) == 0:
            raise ShardError(f"{self.path}: the dataset holds no pairs")
        self.attrs = attrs
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        # one budget for the folder, split across shards: memory stays bounded however many shards
        self.cache_bytes = max(1 << 20, (cache_mb << 20) // len(self.shard_paths))
        self._local = threading.local()   # h5py handles are per thread

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _datasets(self, k: int) -> dict[str, h5py.Dataset]:
        """Open dataset handles of shard k: the chunk cache lives in the handle, so it must stay open
        (reopening per read re-inflates every chunk: 20x slower)."""
        files = getattr(self._local, "files", None)
        if files is None:
            files = self._local.files = {}
        if k not in files:
            f = h5py.File(self.shard_paths[k], "r", rdcc_nbytes=self.cache_bytes, rdcc_nslots=10007)
            files[k] = (f, {name: f[name] for name in READ_FIELDS})
        return files[k][1]

    def read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Rows ``idx`` (any order, repeats allowed) of every READ_FIELDS dataset."""
        idx = np.asarray(idx, dtype=np.int64)
        uniq, inverse = np.unique(idx, return_inverse=True)
        shard = np.searchsorted(self.offsets, uniq, side="right") - 1
        out = {k: [] for k in READ_FIELDS}
        for k in np.unique(shard):
            rows = uniq[shard == k] - self.offsets[k]
            try:
                handles = self._datasets(int(k))
                for name in READ_FIELDS:
                    out[name].append(handles[name][rows])   # h5py wants increasing indices: np.unique sorted them
            except (OSError, KeyError, ValueError) as e:   # h5py's errors for a damaged or replaced file
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ShardError(f"{self.shard_paths[int(k)]}: cannot read rows {int(rows[0])}..{int(rows[-1])} "
                                 f"({first}); the shard is damaged: run `linkbert-prep verify {self.path}` and "
                                 "restore or rebuild it") from None
        return {k: np.concatenate(v)[inverse] for k, v in out.items()}

    def close(self) -> None:
        for f, _ in getattr(self._local, "files", {}).values():
            f.close()
        self._local.files = {}


def _perm(seed: int, *key: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, *key]).permutation(n)


class SampleOrder:
    """Stream position -> (dataset, row); held-out rows excluded. Pure function of (seed, sizes, weights)."""

    HELD_OUT_KEY, EPOCH_KEY, ROUND_KEY = 101, 102, 103

    def __init__(self, sizes: list[int], seed: int, weights: list[float] | None = None, held_out: int = 0):
        self.seed = seed
        total = sum(sizes)
        if held_out >= total:
            raise ValueError(f"data.held_out={held_out} leaves no training pairs (the data holds {total})")
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        h = [int(round(held_out * s / total)) for s in sizes]
        h[int(np.argmax(sizes))] += held_out - sum(h)
        self.train_rows, self.held_rows = [], []
        for d, (s, hd) in enumerate(zip(sizes, h)):
            p = _perm(seed, self.HELD_OUT_KEY, d, n=s)
            self.held_rows.append(np.sort(p[:hd]))
            self.train_rows.append(np.sort(p[hd:]))
        n_train = [len(r) for r in self.train_rows]
        if weights is None:
            self.per_epoch = n_train
        else:
            w = np.asarray(weights, dtype=np.float64) / sum(weights)
            self.per_epoch = [int(round(x * sum(n_train))) for x in w]
        self.epoch_size = int(sum(self.per_epoch))
        self._cache: tuple[int, np.ndarray] | None = None

    def held_out(self) -> np.ndarray:
        """Global ids (dataset offset + row) of the held-out pairs."""
        return np.concatenate([rows + self.offsets[d] for d, rows in enumerate(self.held_rows)])

    def _dataset_take(self, d: int, start: int, n: int) -> np.ndarray:
        """Positions [start, start+n) of dataset d's endless sequence of permutations of its train rows."""
        rows = self.train_rows[d]
        m = len(rows)
        out, pos = [], start
        while pos < start + n:
            r, off = divmod(pos, m)
            take = min(m - off, start + n - pos)
            out.append(rows[_perm(self.seed, self.ROUND_KEY, d, r, n=m)[off:off + take]])
            pos += take
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def epoch(self, e: int) -> np.ndarray:
        if self._cache is not None and self._cache[0] == e:
            return self._cache[1]
        parts = [self._dataset_take(d, e * n, n) + self.offsets[d] for d, n in enumerate(self.per_epoch)]
        ids = np.concatenate(parts)[_perm(self.seed, self.EPOCH_KEY, e, n=self.epoch_size)]
        self._cache = (e, ids)
        return ids

    def ids(self, start: int, n: int) -> np.ndarray:
        out, pos = [], start
        while pos < start + n:
            e, off = divmod(pos, self.epoch_size)
            take = min(self.epoch_size - off, start + n - pos)
            out.append(self.epoch(e)[off:off + take])
            pos += take
        return np.concatenate(out)


@dataclass
class Batch:
    tensors: dict[str, torch.Tensor]
    position: int            # stream position of this global micro-batch's first pair
    n_tokens: int            # non-pad tokens on this rank
    ids: np.ndarray | None = None   # global pair ids (dataset offset + row), for tracing
    max_seqlen: int = 0      # longest pair (host int: the unpadded attention needs it without a sync)

    def pin(self) -> Batch:
        """Page-locked copies (loader thread, CUDA runs): only those make `to(non_blocking=True)` async."""
        self.tensors = {k: v.pin_memory() for k, v in self.tensors.items()}
        return self

    def to(self, device) -> dict:
        """Model keyword arguments on ``device``: the tensors plus ``max_seqlen``."""
        out = {k: v.to(device, non_blocking=True) for k, v in self.tensors.items()}
        out["max_seqlen"] = self.max_seqlen
        return out


class PretrainData:
    """The datasets of a run, their common attributes, the order and the masking spec."""

    def __init__(self, config: DataConfig, seed: int):
        """``config``: the run's data section (its defaults are the only ones). Whole-word masking: the
        trainer sets ``spec.continuation`` from the tokenizer (pretrain.masking.continuation_table)."""
        c = config
        if not c.paths:
            raise ShardError("no data: pass --data DIR (the --out folder of `linkbert-prep build`)")
        self.datasets = [PairDataset(p, c.cache_mb) for p in c.paths]
        a0 = self.datasets[0].attrs
        for ds in self.datasets[1:]:
            if ds.attrs != a0:
                raise ShardError(f"{ds.path}: shard attributes {ds.attrs} differ from {self.datasets[0].path}'s "
                                 f"{a0}; mix only datasets built with the same tokenizer and --max-seq-len")
        self.attrs = a0
        self.offsets = np.concatenate([[0], np.cumsum([len(d) for d in self.datasets])]).astype(np.int64)
        self.order = SampleOrder([len(d) for d in self.datasets], seed, c.weights, c.held_out)
        self.seed = seed
        from pretrain.masking import default_max_predictions
        self.spec = MaskingSpec(
            vocab_size=a0["vocab_size"], mask_id=a0["mask_id"],
            special_ids=tuple(sorted({a0["cls_id"], a0["sep_id"], a0["pad_id"], a0["mask_id"]})),
            max_predictions=c.max_predictions or default_max_predictions(a0["max_seq_len"], c.mask_prob),
            mask_prob=c.mask_prob, mask_token_prob=c.mask_token_prob, random_token_prob=c.random_token_prob,
            continuation=None)

    def read(self, gids: np.ndarray) -> dict[str, np.ndarray]:
        d = np.searchsorted(self.offsets, gids, side="right") - 1
        parts = {k: np.zeros((len(gids),) + (() if k != "input_ids" else (self.attrs["max_seq_len"],)),
                             dtype=np.int64) for k in READ_FIELDS}
        for k in np.unique(d):
            sel = d == k
            got = self.datasets[int(k)].read(gids[sel] - self.offsets[k])
            for name in READ_FIELDS:
                parts[name][sel] = got[name]
        return parts

    def make_batch(self, gids: np.ndarray, rng: np.random.Generator, position: int) -> Batch:
        raw = self.read(gids)
        lens = raw["seq_lens"]
        # trim to the longest pair (padding costs compute, not accuracy), rounded up to a multiple of 8
        # (tensor-core friendly shapes), never past the shards' width
        width = min(self.attrs["max_seq_len"], -(-int(lens.max()) // 8) * 8)
        ids, positions, labels = mask_batch(raw["input_ids"][:, :width], lens, self.spec, rng)
        col = np.arange(width)[None, :]
        attn = col < lens[:, None]
        ttype = (col >= raw["a_lens"][:, None]) & attn
        t = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(attn.astype(np.int64)),
             "token_type_ids": torch.from_numpy(ttype.astype(np.int64)),
             "masked_positions": torch.from_numpy(positions), "masked_labels": torch.from_numpy(labels),
             "relation_labels": torch.from_numpy(raw["pair_labels"].astype(np.int64)),
             # unpadding metadata, computed here so the model never asks the device for it
             "cu_seqlens": torch.from_numpy(np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)),
             "unpad_indices": torch.from_numpy(np.flatnonzero(attn.reshape(-1)).astype(np.int64))}
        return Batch(t, position, int(lens.sum()), np.asarray(gids), int(lens.max()))

    def batch_at(self, position: int, micro_batch: int, rank: int, world: int) -> Batch:
        start = position + rank * micro_batch
        gids = self.order.ids(start, micro_batch)
        rng = np.random.default_rng([self.seed, 104, start])
        return self.make_batch(gids, rng, position)

    def eval_batches(self, micro_batch: int, rank: int, world: int, max_batches: int):
        """This rank's share of the held-out pairs, masked with a fixed RNG (the same every eval)."""
        all_held = self.order.held_out()
        held = all_held[rank::world][:len(all_held) // world]   # equal counts: ZeRO-3 forwards are collective
        for i in range(min(max_batches, -(-len(held) // micro_batch))):
            g = held[i * micro_batch:(i + 1) * micro_batch]
            if len(g):
                yield self.make_batch(g, np.random.default_rng([self.seed, 105, rank, i]), -1)

    def close(self):
        for d in self.datasets:
            d.close()


class BatchLoader:
    """Iterates this rank's micro-batches from stream position ``start``; a thread reads ahead."""

    def __init__(self, data: PretrainData, micro_batch: int, rank: int, world: int, start: int = 0,
                 prefetch: int = 8, pin_memory: bool = False):
        self._trace = faults.Trace(rank)
        self.data, self.mb, self.rank, self.world = data, micro_batch, rank, world
        self.step_samples = micro_batch * world
        self.next_position = start          # first stream position not yet handed to the trainer
        self.pin_memory = pin_memory
        self._q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._thread = None
        if prefetch > 0:
            self._thread = threading.Thread(target=self._run, args=(start,), daemon=True, name="batch-reader")
            self._thread.start()

    def _run(self, pos: int) -> None:
        try:
            while not self._stop.is_set():
                b = self.data.batch_at(pos, self.mb, self.rank, self.world)
                if self.pin_memory:
                    b.pin()
                while not self._stop.is_set():
                    try:
                        self._q.put(b, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                pos += self.step_samples
        except BaseException as e:  # surfaced in the trainer's thread by __next__
            self._q.put(e)

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        if self._thread is None:
            b = self.data.batch_at(self.next_position, self.mb, self.rank, self.world)
            if self.pin_memory:
                b.pin()
        else:
            b = self._q.get()
            if isinstance(b, BaseException):
                raise b
        assert b.position == self.next_position, (b.position, self.next_position)
        self._trace.write(b.position, b.ids)
        self.next_position += self.step_samples
        return b

    def state_dict(self) -> dict:
        return {"consumed_samples": self.next_position}

    def close(self) -> None:
        self._stop.set()
        self._trace.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
