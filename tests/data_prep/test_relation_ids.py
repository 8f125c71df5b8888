"""Relation label ids are defined once (data_prep.shards) and are the rows of the model's relation head."""
from __future__ import annotations

import numpy as np
import torch

from data_prep import shards
from tests.data_prep.build_checks import JARGON, load, read_jsonl, run_build, write_jsonl


def test_head_rows_are_the_shard_labels(tmp_path, minilm_dir):
    from pretrain import modeling, presets

    assert presets.RELATION_NAMES is shards.RELATION_NAMES and modeling.NUM_RELATIONS == shards.NUM_RELATIONS
    docs = read_jsonl(JARGON)[:200]
    by_id = {d["id"]: d for d in docs}
    run_build(write_jsonl(tmp_path / "c.jsonl", docs), minilm_dir, tmp_path / "ds", max_seq_len=64)
    arrays, _, ids = load(tmp_path / "ds")
    ad, pd, lab = arrays["anchor_doc"], arrays["partner_doc"], arrays["pair_labels"]
    # What each row is, read from its documents (not from its label): same document = contiguous,
    # a document A's document does not link to = random, one it links to (and labelled so) = linked.
    linked_to = np.array([ids[p] in by_id[ids[a]].get("links", []) for a, p in zip(ad, pd)])
    kind = {"contiguous": ad == pd, "random": (ad != pd) & ~linked_to, "linked": (ad != pd) & linked_to & (lab != 1)}
    model = modeling.LinkBertForPreTraining(modeling.model_config("tiny", vocab_size=30522))
    head = model.cls.seq_relationship
    assert head.out_features == len(shards.RELATION_NAMES)
    for name, rows in kind.items():
        assert rows.sum() > 10, name
        # a head that answers `name` (by the model's own row order) with certainty ...
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_(-20.0)
            head.bias[presets.RELATION_NAMES.index(name)] = 20.0
        x = torch.as_tensor(arrays["input_ids"][rows][:8].astype(np.int64))
        y = torch.as_tensor(lab[rows][:8].astype(np.int64))
        loss = model(x, attention_mask=torch.ones_like(x), token_type_ids=torch.zeros_like(x),
                     relation_labels=y).relation_loss
        # ... has no loss on the rows the data prep labelled with that relation, and a large one elsewhere
        assert float(loss) < 1e-3, (name, y)
        other = torch.as_tensor(lab[~rows][:8].astype(np.int64))
        xo = torch.as_tensor(arrays["input_ids"][~rows][:8].astype(np.int64))
        lo = model(xo, attention_mask=torch.ones_like(xo), token_type_ids=torch.zeros_like(xo),
                   relation_labels=other).relation_loss
        assert float(lo) > 10, name
