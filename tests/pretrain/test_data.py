"""The loader: every pair once per epoch across ranks (also across a resume), mixing, reads, tensors."""
from collections import Counter

import h5py
import numpy as np
import pytest
import torch
from engine_helpers import synthetic_dataset

from data_prep.shards import ShardError
from pretrain.config import DataConfig
from pretrain.data import BatchLoader, PretrainData, SampleOrder


@pytest.mark.parametrize("world,micro", [(1, 7), (2, 4), (3, 5)])
def test_each_pair_once_per_epoch_across_ranks(world, micro):
    order = SampleOrder([40, 33], seed=3, held_out=5)
    n = order.epoch_size
    assert n == 68
    held = set(order.held_out().tolist())
    assert len(held) == 5
    seen = []   # (epoch of the stream position, id) as the ranks would read them
    pos = 0
    while pos < 3 * n:
        for r in range(world):
            start = pos + r * micro
            for k, gid in enumerate(order.ids(start, micro)):
                seen.append(((start + k) // n, int(gid)))
        pos += micro * world
    for e in range(3):
        ids = [g for ep, g in seen if ep == e]
        assert sorted(ids) == sorted(set(range(73)) - held), f"epoch {e}"
    assert [g for ep, g in seen if ep == 0] != [g for ep, g in seen if ep == 1]   # reshuffled per epoch


def test_resume_mid_epoch_continues_the_same_stream():
    order = SampleOrder([50], seed=1)
    full = order.ids(0, 120)
    again = SampleOrder([50], seed=1)          # a fresh process: state is only the position
    assert (np.concatenate([again.ids(0, 37), again.ids(37, 83)]) == full).all()
    assert not (SampleOrder([50], seed=2).ids(0, 50) == full[:50]).all()


def test_weighted_mix():
    order = SampleOrder([100, 10], seed=0, weights=[1, 1])
    assert order.per_epoch == [55, 55]
    ids = order.ids(0, order.epoch_size * 4)
    c = Counter((ids >= 100).tolist())
    assert c[True] == c[False] == 220
    small = ids[ids >= 100] - 100
    # the small set is cycled through whole permutations: each row 22 times in 4 epochs
    assert set(Counter(small.tolist()).values()) == {22}
    big = ids[ids < 100]
    assert set(Counter(big.tolist()).values()) <= {2, 3}


def test_reads_and_tensors_match_the_shards(tmp_path):
    d = synthetic_dataset(tmp_path / "ds", n=60, max_seq_len=16, shards=3)
    data = PretrainData(DataConfig(paths=[str(d)], held_out=4), seed=0)
    gids = np.array([59, 0, 21, 20, 20, 41])
    got = data.read(gids)
    raw = {}
    for name in ("input_ids", "seq_lens", "a_lens", "pair_labels"):
        parts = []
        for k in range(3):
            with h5py.File(d / f"shard_{k:05d}.h5") as f:
                parts.append(f[name][:])
        raw[name] = np.concatenate(parts)
    for name in raw:
        assert (got[name] == raw[name][gids]).all(), name
    b = data.make_batch(gids, np.random.default_rng(0), 0)
    t = b.tensors
    longest = raw["seq_lens"][gids].max()
    width = min(16, -(-longest // 8) * 8)   # the longest pair, rounded up to a multiple of 8
    assert t["input_ids"].shape == (6, width)
    # unpadding metadata from the loader: what the model would otherwise ask the device for
    lens = raw["seq_lens"][gids]
    assert t["cu_seqlens"].dtype == torch.int32 and t["cu_seqlens"].tolist() == [0, *np.cumsum(lens).tolist()]
    assert (t["unpad_indices"] == t["attention_mask"].reshape(-1).nonzero().squeeze(1)).all()
    assert b.max_seqlen == longest
    assert b.to("cpu")["max_seqlen"] == longest
    for i, g in enumerate(gids):
        n, a = raw["seq_lens"][g], raw["a_lens"][g]
        assert t["attention_mask"][i].sum() == n
        assert t["token_type_ids"][i, :a].sum() == 0 and t["token_type_ids"][i, a:n].sum() == n - a
        assert t["token_type_ids"][i, n:].sum() == 0
        assert t["relation_labels"][i] == raw["pair_labels"][g]
    assert b.n_tokens == raw["seq_lens"][gids].sum()


def test_prefetch_thread_gives_the_same_batches(tmp_path):
    d = synthetic_dataset(tmp_path / "ds", n=50)
    data = PretrainData(DataConfig(paths=[str(d)], held_out=0), seed=5)
    a = BatchLoader(data, 4, rank=1, world=2, start=16, prefetch=3)
    b = BatchLoader(data, 4, rank=1, world=2, start=16, prefetch=0)
    try:
        for _ in range(20):
            x, y = next(a), next(b)
            assert x.position == y.position
            for k in x.tensors:
                assert (x.tensors[k] == y.tensors[k]).all(), k
        assert a.state_dict() == {"consumed_samples": 16 + 20 * 8}
    finally:
        a.close()
        b.close()


def test_bad_data_errors(tmp_path):
    with pytest.raises(ShardError, match="manifest.json"):
        PretrainData(DataConfig(paths=[str(tmp_path)]), seed=0)
    d1 = synthetic_dataset(tmp_path / "a", max_seq_len=16)
    d2 = synthetic_dataset(tmp_path / "b", max_seq_len=24)
    with pytest.raises(ShardError, match="max-seq-len"):
        PretrainData(DataConfig(paths=[str(d1), str(d2)]), seed=0)
    with pytest.raises(ValueError, match="held_out"):
        PretrainData(DataConfig(paths=[str(d1)], held_out=1000), seed=0)
