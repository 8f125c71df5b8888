"""`linkbert-eval crossdoc`: a zero-shot cross-document cloze for any masked-LM Hugging Face checkpoint.

For an item (A links to B and mentions B's title; see finetune/crossdoc_items.py) the input is
`[CLS] A [SEP] second [SEP]`, with the mention in A replaced by one [MASK] per token of the answer and
the answer's title removed everywhere else (rest of A, second segment). Three conditions on the same
items: `linked` (second = B's text), `random` (a random document's text), `none` (A alone, no second
segment). A's window is the same in all three. The model ranks the candidates by the sum of the
log-probabilities of each candidate's tokens at the [MASK]s (all candidates of an item have the answer's
token length, so one forward pass scores them all, and sum and mean rank alike); an item is right when
the answer's score is strictly the highest (a tie counts wrong).

Two readings of the same scores. Raw: is the answer the top candidate under each condition;
`linked_minus_random` (paired over the same items) is the issue's original test. Effect: did the second
segment raise the answer's score, relative to A alone, more than every distractor's (`effect_correct`)?
A alone fixes the raw ranking of most items (a candidate's own prior dominates a small model's scores), so
a second segment that a model does use seldom flips the raw winner; the effect reading cancels A and the
candidates' priors and asks only where the second segment pushed. The probe is valid for a model (it uses
the second segment) when the paired linked-minus-random interval of the effect reading is above 0
(`valid`); `valid_raw` is the same test on raw accuracy.

A diagnostic fourth condition, `titled` (`--titled`): B's text with its title left in, so the answer can be
copied from the second segment. The gap between `titled` and `linked` separates "finds the title in B"
from "infers it from B's content", which is what the probe asks.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from finetune.crossdoc_items import Doc, Item, build_items, items_sha256, read_corpus, remove_title
from finetune.errors import FinetuneError

CONDITIONS = ("linked", "random", "none")
EFFECT_CONDITIONS = ("linked", "random")   # the effect reading compares each with `none`
TITLED = "titled"   # diagnostic: B's text with its title left in (scored only when asked)
BOOTSTRAP_RESAMPLES = 2000
MIN_SEQ_LEN = 32


def encode(item: Item, condition: str, docs: dict[str, Doc], tokenizer, max_seq_len: int,
           answer_len: int) -> tuple[list[int], list[int], list[int]]:
    """(input_ids, token_type_ids, mask positions) for one item under one condition.

    A gets at most half the sequence, a window centred on the mention (identical in every condition);
    the second segment fills what is left from its start."""
    a, title = docs[item.a], item.candidates[item.gold]
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    left = enc(remove_title(a.text[:item.start], title))
    right = enc(remove_title(a.text[item.end:], title))
    room = max(0, (max_seq_len - 3) // 2 - answer_len)
    take_left = min(len(left), max(room // 2, room - len(right)))
    take_right = min(len(right), room - take_left)
    left = left[len(left) - take_left:]
    right = right[:take_right]
    seg_a = left + [tokenizer.mask_token_id] * answer_len + right
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids = [cls] + seg_a + [sep]
    types = [0] * len(ids)
    if condition != "none":
        other = docs[item.random if condition == "random" else item.b]
        text = other.text if condition == TITLED else remove_title(other.text, title)
        seg_b = enc(text)[:max_seq_len - len(ids) - 1]
        ids += seg_b + [sep]
        types += [1] * (len(seg_b) + 1)
    pos = list(range(1 + len(left), 1 + len(left) + answer_len))
    return ids, types, pos


def score_candidates(log_probs, cand_ids):
    """Scores of C candidates: sum over the T [MASK]s of the log-probability of the candidate's token there.

    log_probs: [T, V] log-softmax at the mask positions; cand_ids: [C, T] token ids -> [C]."""
    import torch
    t = torch.arange(log_probs.shape[0], device=log_probs.device)
    return log_probs[t.unsqueeze(0), cand_ids].sum(-1)


def correct(scores, gold: int) -> bool:
    """Strictly above every other candidate (ties count wrong, so chance is exactly 1/C)."""
    others = [s for i, s in enumerate(scores) if i != gold]
    return bool(scores[gold] > max(others))


def effect_correct(outcome: dict, condition: str) -> bool:
    """The second segment's effect on each candidate is its score under `condition` minus its score with A
    alone; right when the answer's effect is strictly the largest. From the stored (rounded) scores, so a
    reader of the examples file gets the same answer."""
    gain = np.asarray(outcome[condition]["scores"]) - np.asarray(outcome["none"]["scores"])
    return correct(gain.tolist(), outcome["gold"])


class Scorer:
    """A masked LM in eval mode on CUDA when there is one; log-probabilities at mask positions, batched.

    For BERT-family models the vocabulary head runs on the [MASK] positions only (not on every token:
    batch x 256 x 30k logits would be most of the memory and time)."""

    def __init__(self, model_dir: Path, batch_size: int = 32):
        import torch
        from transformers import AutoModelForMaskedLM
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()   # pooler/relation head of a pretraining export are not used here
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(0)   # a checkpoint without a trained MLM head gets the same random head every run
        try:
            self.model = AutoModelForMaskedLM.from_pretrained(model_dir).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise FinetuneError(f"--model {model_dir}: cannot load a masked-LM model ({str(e).splitlines()[0]}); "
                                "give a BERT-family Hugging Face folder with weights") from None
        self.batch_size = batch_size

    def log_probs(self, batch: list[tuple[list[int], list[int], list[int]]]):
        """One [T_i, V] float32 tensor (on CPU) per encoded input."""
        import torch
        width = max(len(ids) for ids, _, _ in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        types = torch.zeros_like(ids)
        att = torch.zeros_like(ids)
        rows, cols, sizes = [], [], []
        for i, (x, tt, pos) in enumerate(batch):
            ids[i, :len(x)] = torch.tensor(x)
            types[i, :len(tt)] = torch.tensor(tt)
            att[i, :len(x)] = 1
            rows += [i] * len(pos)
            cols += pos
            sizes.append(len(pos))
        ids, types, att = ids.to(self.device), types.to(self.device), att.to(self.device)
        rows_t, cols_t = torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)
        with torch.inference_mode():
            if hasattr(self.model, "bert") and hasattr(self.model, "cls"):
                hidden = self.model.bert(input_ids=ids, attention_mask=att, token_type_ids=types)[0]
                logits = self.model.cls(hidden[rows_t, cols_t])
            else:
                logits = self.model(input_ids=ids, attention_mask=att, token_type_ids=types).logits[rows_t, cols_t]
            lp = torch.log_softmax(logits.float(), dim=-1).cpu()
        return list(lp.split(sizes))


def evaluate(items: list[Item], docs: dict[str, Doc], tokenizer, scorer: Scorer, max_seq_len: int,
             titled: bool = False) -> list[dict]:
    """Per-item outcomes: each condition's candidate scores and whether the answer won (and the `titled`
    diagnostic when asked)."""
    import torch
    cand_ids = []
    for it in items:
        enc = tokenizer(list(it.candidates), add_special_tokens=False)["input_ids"]
        cand_ids.append(torch.tensor(enc))
    # Condition-major: `none` inputs (A alone, about half the length) batch together and pad less.
    jobs = [(k, c) for c in CONDITIONS + ((TITLED,) if titled else ()) for k in range(len(items))]
    out = [{**asdict(it), "answer": it.candidates[it.gold]} for it in items]
    for lo in range(0, len(jobs), scorer.batch_size):
        chunk = jobs[lo:lo + scorer.batch_size]
        enc = [encode(items[k], c, docs, tokenizer, max_seq_len, cand_ids[k].shape[1]) for k, c in chunk]
        for (k, c), lp in zip(chunk, scorer.log_probs(enc)):
            scores = score_candidates(lp, cand_ids[k]).tolist()
            out[k][c] = {"scores": [round(s, 5) for s in scores], "correct": correct(scores, items[k].gold)}
    for o in out:
        for c in EFFECT_CONDITIONS:
            o[c]["effect_correct"] = effect_correct(o, c)
    return out


def bootstrap_ci(values, seed: int, resamples: int = BOOTSTRAP_RESAMPLES) -> list[float]:
    """95% percentile bootstrap interval of the mean of `values` (per-item 0/1 or paired differences)."""
    from scipy.stats import bootstrap
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return [float("nan"), float("nan")]
    if np.ptp(x) == 0:
        return [float(x[0]), float(x[0])]
    res = bootstrap((x,), np.mean, confidence_level=0.95, n_resamples=resamples, method="percentile",
                    rng=np.random.default_rng(seed))
    return [round(float(res.confidence_interval.low), 5), round(float(res.confidence_interval.high), 5)]


def summarize(outcomes: list[dict], candidates: int, seed: int) -> dict:
    """The report's statistics from per-item outcomes (accuracies, paired linked-random difference)."""
    got = {c: np.array([o[c]["correct"] for o in outcomes], dtype=float) for c in CONDITIONS}
    eff = {c: np.array([effect_correct(o, c) for o in outcomes], dtype=float) for c in EFFECT_CONDITIONS}
    if outcomes and TITLED in outcomes[0]:
        got[TITLED] = np.array([o[TITLED]["correct"] for o in outcomes], dtype=float)
    return summarize_arrays(got, candidates, seed, eff)


def _mean(x) -> float:
    return round(float(np.mean(x)), 5) if len(x) else float("nan")


def summarize_arrays(got: dict, candidates: int, seed: int, effect: dict) -> dict:
    """Statistics from per-item outcomes per condition (0/1, or means over seeds), the same items in each;
    `effect` holds the effect reading's per-item outcomes for `linked` and `random`; `got` may hold the
    `titled` diagnostic too."""
    got_in, got = got, {c: np.asarray(got[c], dtype=float) for c in CONDITIONS}
    rep = {"n": len(got["linked"]), "chance": round(1.0 / candidates, 5)}
    for c in CONDITIONS:
        rep[c] = {"acc": _mean(got[c]), "ci95": bootstrap_ci(got[c], seed)}
    diff = got["linked"] - got["random"]
    rep["linked_minus_random"] = {"mean": _mean(diff), "ci95": bootstrap_ci(diff, seed)}
    # Items A alone does not decide for this model (`none` wrong): there only the second segment can help.
    hard = got["none"] == 0
    rep["where_none_wrong"] = {"n": int(hard.sum()), "linked_acc": _mean(got["linked"][hard]),
                               "random_acc": _mean(got["random"][hard]),
                               "linked_minus_random": {"mean": _mean(diff[hard]),
                                                       "ci95": bootstrap_ci(diff[hard], seed)}}
    rep["valid_raw"] = bool(rep["linked_minus_random"]["ci95"][0] > 0)
    eff = {c: np.asarray(effect[c], dtype=float) for c in EFFECT_CONDITIONS}
    ediff = eff["linked"] - eff["random"]
    rep["effect"] = {c: {"acc": _mean(eff[c]), "ci95": bootstrap_ci(eff[c], seed)} for c in EFFECT_CONDITIONS}
    rep["effect"]["linked_minus_random"] = {"mean": _mean(ediff), "ci95": bootstrap_ci(ediff, seed)}
    rep["valid"] = bool(rep["effect"]["linked_minus_random"]["ci95"][0] > 0)
    if TITLED in got_in:
        t = np.asarray(got_in[TITLED], dtype=float)
        rep[TITLED] = {"acc": _mean(t), "ci95": bootstrap_ci(t, seed)}
        rep["titled_minus_linked"] = {"mean": _mean(t - got["linked"]), "ci95": bootstrap_ci(t - got["linked"], seed)}
    return rep


def outcomes_path(report: Path) -> Path:
    return report.with_name(report.name.removesuffix(".json") + ".examples.jsonl")


def run_crossdoc(model: str, corpus: str, out: str, n: int = 1000, candidates: int = 5, seed: int = 0,
                 max_seq_len: int = 256, batch_size: int = 32, titled: bool = False) -> dict:
    """Build the items, score the model under the three conditions (and `titled` when asked), write
    REPORT.json and the outcomes."""
    from transformers import AutoTokenizer

    from finetune.runner import check_model_dir, resolve_model
    if n < 1 or candidates < 2 or batch_size < 1:
        raise FinetuneError(f"--n {n} --candidates {candidates} --batch-size {batch_size}: need --n >= 1, "
                            "--candidates >= 2 and --batch-size >= 1")
    if max_seq_len < MIN_SEQ_LEN:
        raise FinetuneError(f"--max-seq-len {max_seq_len}: too short for two segments; give >= {MIN_SEQ_LEN}")
    model_dir = resolve_model(model)
    check_model_dir(model_dir)
    docs = read_corpus(corpus)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.mask_token_id is None or tokenizer.sep_token_id is None or tokenizer.cls_token_id is None:
        raise FinetuneError(f"--model {model}: its tokenizer has no [MASK]/[CLS]/[SEP]; give a BERT-family model")
    items, skipped = build_items(docs, tokenizer, n, candidates, seed)
    if not items:
        raise FinetuneError(f"--corpus {corpus}: 0 items (an item is a document that links to another and "
                            f"mentions its title; left out: {skipped}); give a linked corpus with titles")
    scorer = Scorer(model_dir, batch_size)
    outcomes = evaluate(items, {d.id: d for d in docs}, tokenizer, scorer, max_seq_len, titled)
    report = summarize(outcomes, candidates, seed)
    report.update({"model": str(model), "corpus": str(corpus), "seed": seed, "candidates": candidates,
                   "max_seq_len": max_seq_len, "items_sha256": items_sha256(items), "left_out": skipped,
                   "device": str(scorer.device)})
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ex_path = outcomes_path(out_path)
    report["examples_file"] = ex_path.name
    with open(ex_path, "w", encoding="utf-8") as f:
        for o in outcomes:
            f.write(json.dumps(o, ensure_ascii=False) + "\n")
    out_path.write_text(json.dumps(report, indent=1) + "\n")
    return report


def summary_line(rep: dict) -> str:
    lmr, eff = rep["linked_minus_random"], rep["effect"]
    elmr = eff["linked_minus_random"]
    return (f"crossdoc n={rep['n']} chance={rep['chance']:.3f} linked={rep['linked']['acc']:.3f} "
            f"random={rep['random']['acc']:.3f} none={rep['none']['acc']:.3f} linked-random={lmr['mean']:+.3f} "
            f"[{lmr['ci95'][0]:+.3f}, {lmr['ci95'][1]:+.3f}]; effect linked={eff['linked']['acc']:.3f} "
            f"random={eff['random']['acc']:.3f} linked-random={elmr['mean']:+.3f} "
            f"[{elmr['ci95'][0]:+.3f}, {elmr['ci95'][1]:+.3f}] {'valid' if rep['valid'] else 'NOT valid'} "
            "(the model uses the second segment only if the effect interval is above 0)"
            + (f"; titled={rep[TITLED]['acc']:.3f}" if TITLED in rep else ""))
