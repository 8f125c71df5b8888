"""The evaluation metrics LinkBERT reports, each defined once.

- SQuAD v1.1 exact match / F1 (MRQA): the official script's normalisation, max over gold answers, x100.
- accuracy (PubMedQA, BioASQ, MedQA, MMLU, any seqcls).
- micro P/R/F1 ignoring the negative class (ChemProt, DDI, GAD: class id 0 of the sorted labels).
- HoC: per-row multi-label predictions OR-ed per document (`id.split('_')[0]`), micro P/R/F1 over cells.
- Pearson r (BIOSSES), via scipy.
- seqeval entity-level micro P/R/F1 (NER), or the mean of per-type P/R/F1 (EBM PICO, "macro").
- GLUE: Matthews correlation (CoLA), F1 of the positive class (MRPC, QQP), Spearman rho (STS-B).
"""
from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def squad_normalize(text: str) -> str:
    """Lower case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace (v1.1 order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_exact(prediction: str, gold: str) -> float:
    return float(squad_normalize(prediction) == squad_normalize(gold))


def squad_token_f1(prediction: str, gold: str) -> float:
    pred_toks = squad_normalize(prediction).split()
    gold_toks = squad_normalize(gold).split()
    same = sum((Counter(pred_toks) & Counter(gold_toks)).values())
    if same == 0:  # v1.1 gives 0 here even when both sides are empty (v2.0 would give 1)
        return 0.0
    precision = same / len(pred_toks)
    recall = same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], golds: dict[str, Sequence[str]]) -> dict[str, float]:
    """Corpus EM and F1 on the 0-100 scale of the official script; every gold id must be predicted."""
    missing = [k for k in golds if k not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} questions have no prediction (e.g. {missing[0]!r})")
    em = f1 = 0.0
    for qid, answers in golds.items():
        pred = predictions[qid]
        em += max(squad_exact(pred, a) for a in answers)
        f1 += max(squad_token_f1(pred, a) for a in answers)
    n = max(len(golds), 1)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}


def accuracy(pred_ids, gold_ids) -> float:
    pred_ids, gold_ids = np.asarray(pred_ids), np.asarray(gold_ids)
    return float((pred_ids == gold_ids).mean()) if len(gold_ids) else 0.0


def prf1_ignore_negative(pred_ids, gold_ids, negative_id: int = 0) -> dict[str, float]:
    """Micro P/R/F1 over the positive classes: a hit is a correct non-negative prediction."""
    pred_ids, gold_ids = np.asarray(pred_ids), np.asarray(gold_ids)
    tp = int(((pred_ids == gold_ids) & (pred_ids != negative_id)).sum())
    n_pred = int((pred_ids != negative_id).sum())
    n_gold = int((gold_ids != negative_id).sum())
    return _prf(tp, n_pred, n_gold)


def binary_f1(pred_ids, gold_ids, positive_id: int) -> float:
    """F1 of one class (GLUE MRPC/QQP: the paraphrase/duplicate class "1")."""
    pred_ids, gold_ids = np.asarray(pred_ids), np.asarray(gold_ids)
    tp = int(((pred_ids == positive_id) & (gold_ids == positive_id)).sum())
    return _prf(tp, int((pred_ids == positive_id).sum()), int((gold_ids == positive_id).sum()))["f1"]


def matthews_corrcoef(pred_ids, gold_ids) -> float:
    """Matthews correlation over any number of classes (Gorodkin's R_K; the phi coefficient for two),
    from the confusion counts; 0 where it is undefined (a constant prediction or gold), as GLUE scores it."""
    pred_ids, gold_ids = np.asarray(pred_ids), np.asarray(gold_ids)
    classes, both = np.unique(np.concatenate([pred_ids, gold_ids]), return_inverse=True)
    p, g = both[:len(pred_ids)], both[len(pred_ids):]
    conf = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(conf, (g, p), 1)
    n, correct = conf.sum(), np.trace(conf)
    pred_tot, gold_tot = conf.sum(axis=0), conf.sum(axis=1)
    cov_pg = correct * n - pred_tot @ gold_tot
    cov_pp = n * n - pred_tot @ pred_tot
    cov_gg = n * n - gold_tot @ gold_tot
    if cov_pp == 0 or cov_gg == 0:
        return 0.0
    return float(cov_pg / np.sqrt(cov_pp * cov_gg))


def _prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


def hoc_document_groups(ids: Sequence[str]) -> list[str]:
    """HoC rows are sentences `PMID_sN`; LinkBERT scores per document = the part before the first '_'."""
    return [str(i).split("_")[0] for i in ids]


def multilabel_doc_prf1(pred, gold, ids: Sequence[str]) -> dict[str, float]:
    """HoC as LinkBERT/BLURB score it: OR the 0/1 rows of each document, then micro P/R/F1 over cells."""
    pred, gold = np.asarray(pred, dtype=bool), np.asarray(gold, dtype=bool)
    docs = hoc_document_groups(ids)
    order = {d: k for k, d in enumerate(dict.fromkeys(docs))}
    rows = np.array([order[d] for d in docs], dtype=np.int64)
    doc_pred = np.zeros((len(order), pred.shape[1]), dtype=bool)
    doc_gold = np.zeros_like(doc_pred)
    np.logical_or.at(doc_pred, rows, pred)
    np.logical_or.at(doc_gold, rows, gold)
    tp = int((doc_pred & doc_gold).sum())
    out = _prf(tp, int(doc_pred.sum()), int(doc_gold.sum()))
    out["documents"] = len(order)
    return out


def pearson(pred, gold) -> float:
    from scipy.stats import pearsonr

    pred, gold = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if len(gold) < 2 or pred.std() == 0 or gold.std() == 0:
        return 0.0  # undefined (constant input); scipy would warn and return nan
    return float(pearsonr(pred, gold)[0])


def spearman(pred, gold) -> float:
    """Spearman rho = Pearson r of the ranks (ties get their mean rank), via scipy's rankdata."""
    from scipy.stats import rankdata

    return pearson(rankdata(np.asarray(pred, dtype=np.float64)), rankdata(np.asarray(gold, dtype=np.float64)))


def seqeval_scores(gold_tags: list[list[str]], pred_tags: list[list[str]], macro: bool = False) -> dict:
    """Entity-level scores (seqeval, default IOB2 conlleval matching). `macro` = mean over entity types."""
    from seqeval.metrics import accuracy_score, classification_report

    with warnings.catch_warnings():  # an all-"O" split makes seqeval average an empty slice
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(gold_tags, pred_tags, output_dict=True, zero_division=0)
    types = {k: v for k, v in report.items() if k not in ("micro avg", "macro avg", "weighted avg")}
    if macro:
        if not types:
            return {"macro_precision": 0.0, "macro_recall": 0.0, "macro_f1": 0.0}
        return {f"macro_{m}": float(np.mean([v[key] for v in types.values()]))
                for m, key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"))}
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    return {"precision": float(micro["precision"]), "recall": float(micro["recall"]),
            "f1": float(micro["f1-score"]), "accuracy": float(accuracy_score(gold_tags, pred_tags))}
