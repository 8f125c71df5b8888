"""Masking statistics against the recipe (15%, 80/10/10, special tokens and padding never touched)."""
import numpy as np
import pytest

from pretrain.masking import MaskingSpec, continuation_table, default_max_predictions, mask_batch

CLS, SEP, PAD, MASK, VOCAB = 101, 102, 0, 103, 30522


def batch(rng, b=512, length=128):
    lens = rng.integers(20, length + 1, size=b)
    ids = rng.integers(1000, VOCAB, size=(b, length))
    a = lens // 2
    ids[:, 0] = CLS
    ids[np.arange(b), a] = SEP
    ids[np.arange(b), lens - 1] = SEP
    ids[np.arange(length)[None, :] >= lens[:, None]] = PAD
    return ids, lens


def spec(**kw):
    from pretrain.config import DataConfig
    d = DataConfig()   # the run's defaults: 15%, 80/10/10
    rates = {"mask_prob": d.mask_prob, "mask_token_prob": d.mask_token_prob, "random_token_prob": d.random_token_prob}
    return MaskingSpec(vocab_size=VOCAB, mask_id=MASK, special_ids=(PAD, CLS, SEP, MASK),
                       max_predictions=kw.pop("max_predictions", 40), **{**rates, **kw})


def test_rates_and_special_tokens():
    rng = np.random.default_rng(0)
    ids, lens = batch(rng)
    out, pos, lab = mask_batch(ids, lens, spec(), np.random.default_rng(1))
    real = lab != -100
    # k per row = round(0.15 * len), capped; computed independently here
    want = np.minimum(40, np.maximum(1, np.rint(lens * 0.15))).astype(int)
    assert (real.sum(1) == want).all()
    rows = np.repeat(np.arange(len(ids)), real.sum(1))
    cols = pos[real]
    assert (lab[real] == ids[rows, cols]).all()                       # labels are the original tokens
    assert not np.isin(ids[rows, cols], [PAD, CLS, SEP, MASK]).any()  # never special tokens
    assert (cols < lens[rows]).all()                                  # never padding
    assert len(np.unique(rows * 1000 + cols)) == len(cols)            # no position twice
    new = out[rows, cols]
    frac_mask = (new == MASK).mean()
    frac_same = (new == ids[rows, cols]).mean()
    frac_rand = 1 - frac_mask - frac_same
    n = len(cols)
    for got, p in ((frac_mask, 0.8), (frac_same, 0.1), (frac_rand, 0.1)):
        assert abs(got - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-3, (got, p)
    untouched = np.ones_like(ids, dtype=bool)
    untouched[rows, cols] = False
    assert (out[untouched] == ids[untouched]).all()                   # only chosen positions change
    # positions are spread over the whole sequence (not biased to the start)
    rel = cols / lens[rows]
    assert 0.4 < rel.mean() < 0.6


def test_padding_slots_and_cap():
    rng = np.random.default_rng(2)
    ids, lens = batch(rng, b=64)
    out, pos, lab = mask_batch(ids, lens, spec(max_predictions=5), np.random.default_rng(3))
    assert pos.shape == (64, 5) and lab.shape == (64, 5)
    assert ((lab != -100).sum(1) == np.minimum(5, np.rint(lens * 0.15))).all()
    short = np.array([[CLS, 2000, SEP, PAD, PAD]]), np.array([3])
    o2, p2, l2 = mask_batch(*short, spec(max_predictions=4), np.random.default_rng(0))
    assert (l2[0] != -100).sum() == 1 and p2[0, 0] == 1 and (p2[0, 1:] == 0).all()


def test_same_rng_same_masks():
    ids, lens = batch(np.random.default_rng(4), b=8)
    a = mask_batch(ids, lens, spec(), np.random.default_rng(9))
    b = mask_batch(ids, lens, spec(), np.random.default_rng(9))
    c = mask_batch(ids, lens, spec(), np.random.default_rng(10))
    assert all((x == y).all() for x, y in zip(a, b))
    assert not (a[1] == c[1]).all()


def test_whole_word_masks_whole_words(minilm_dir):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    table = continuation_table(minilm_dir, VOCAB)
    assert table[tok.token_to_id("##s")] and not table[tok.token_to_id("the")]
    text = ("unbelievably hyperlinked documents characterize wikipedia's interconnectedness and "
            "biomedical citations, antidisestablishmentarianism notwithstanding")
    enc = tok.encode(text, text)
    ids = np.array([enc.ids] * 300)
    lens = np.full(300, len(enc.ids))
    words = np.array([-1 if w is None else w + 1000 * s for w, s in zip(enc.word_ids, enc.sequence_ids)])
    _, pos, lab = mask_batch(ids, lens, spec(max_predictions=20, continuation=table), np.random.default_rng(5))
    picked = 0
    for r in range(300):
        chosen = set(pos[r][lab[r] != -100].tolist())
        assert chosen
        for w in {words[p] for p in chosen}:
            members = set(np.nonzero(words == w)[0].tolist())
            assert members <= chosen, f"word {w} partly masked"
        picked += len(chosen)
    assert abs(picked / 300 - 0.15 * len(enc.ids)) < 3   # whole words, still ~15% of tokens


@pytest.mark.parametrize("length", [128, 512])
@pytest.mark.parametrize("prob", [0.15, 0.3])
def test_default_max_predictions(length, prob):
    """What the default must hold: every target of a full-length row (the most masks a row of that length
    gets, measured with no cap) fits in its slots, with at most 2 slots of padding beyond that.
    (Google's BERT release used 20 slots at 128 tokens and 80 at 512 with 15%.)"""
    rng = np.random.default_rng(7)
    ids = rng.integers(1000, VOCAB, size=(64, length))
    ids[:, 0], ids[:, length // 2], ids[:, -1] = CLS, SEP, SEP
    lens = np.full(64, length)
    uncapped = (mask_batch(ids, lens, spec(mask_prob=prob, max_predictions=length), rng)[2] != -100).sum(1)
    most = int(uncapped.max())
    assert most >= prob * (length - 3) - 1   # sanity: the uncapped run masked ~prob of the row
    default = default_max_predictions(length, prob)
    assert most <= default <= most + 2, (length, prob, most, default)
    capped = (mask_batch(ids, lens, spec(mask_prob=prob, max_predictions=default), np.random.default_rng(8))[2]
              != -100).sum(1)
    assert (capped == most).all()   # nothing dropped by the cap


@pytest.mark.parametrize("prob", [0.3])
def test_other_mask_prob(prob):
    ids, lens = batch(np.random.default_rng(6), b=128, length=64)
    _, _, lab = mask_batch(ids, lens, spec(mask_prob=prob, max_predictions=64), np.random.default_rng(0))
    assert ((lab != -100).sum(1) == np.maximum(1, np.rint(lens * prob))).all()
