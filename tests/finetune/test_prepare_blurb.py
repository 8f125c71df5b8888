"""`linkbert-finetune prepare blurb`: BLURB's data_generation task folders -> <Task>_hf/{train,dev,test}.json
as the authors' preprocess_blurb.py wrote them; tasks it cannot read are one error line each; then one
task of each BLURB family fine-tuned two steps and scored with its BLURB metric. PubTator releases of
BC5CDR/NCBI-disease are converted with --from-pubtator."""
import json
import shutil

import numpy as np
import pytest

from finetune.blurb import METRIC, blurb_score, collect_scores
from tests.finetune.prepare_helpers import RAW, finetune_preset, prepare, split_files

SRC = RAW / "blurb"
DATA = SRC / "data_generation" / "data"
PUBTATOR = RAW / "pubtator"


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from finetune.prepare import blurb
    out = tmp_path_factory.mktemp("blurb")
    report = blurb.prepare(SRC, out)   # RAW_DIR may be the folder above data_generation/data
    assert not report.errors
    return out, report


def test_every_task_folder_found_is_written(prepared):
    out, report = prepared
    written = {p.split("/")[-2] for p in report.files}
    assert written == {"BC5CDR-chem_hf", "NCBI-disease_hf", "ebmnlp_hf", "chemprot_hf", "DDI_hf", "GAD_hf",
                       "BIOSSES_hf", "HoC_hf", "pubmedqa_hf", "bioasq_hf"}
    assert report.notes == [f"no folder in {DATA} for: bc5cdr-disease, bc2gm, jnlpba"]
    assert all(n > 0 for n in report.files.values()) and len(report.files) == 30


def test_relation_labels_false_becomes_0_and_gad_header_is_dropped(prepared):
    out, _ = prepared
    for task, folder in (("chemprot", "chemprot"), ("DDI", "DDI"), ("GAD", "GAD")):
        raw = [line.split("\t") for line in (DATA / folder / "train.tsv").read_text().splitlines()]
        raw = raw[1:] if folder == "GAD" else raw
        rows = _jsonl(out / f"{task}_hf" / "train.json")
        assert [r["id"] for r in rows] == [x[0] for x in raw] and [r["sentence"] for r in rows] == [x[1] for x in raw]
        assert [r["label"] for r in rows] == ["0" if "false" in x[2] else x[2] for x in raw]
    assert sorted({r["label"] for r in _jsonl(out / "DDI_hf" / "train.json")})[0] == "0"


def test_hoc_abstracts_pubmedqa_contexts_biosses_scores(prepared):
    out, _ = prepared
    hoc = _jsonl(out / "HoC_hf" / "train.json")
    assert [r["id"] for r in hoc] == ["1001", "1002", "1003", "1004"]
    assert hoc[0]["sentence"] == ("Background text on tumour biology. Cells escaped apoptosis after treatment. "
                                  "The tumour induced new blood vessels.")
    assert hoc[0]["label"] == [0, 0, 1, 0, 0, 1, 0, 0, 0, 0] and hoc[2]["label"][2] == hoc[2]["label"][7] == 1
    pq = _jsonl(out / "pubmedqa_hf" / "test.json")
    assert pq[0] == {"id": "33445566", "sentence1": "Is fasting safe in diabetes?",
                     "sentence2": "Diabetics fasted under supervision. Outcomes varied.", "label": "maybe"}
    assert _jsonl(out / "pubmedqa_hf" / "train.json")[0]["sentence2"].endswith("changed during the process.")
    bio = _jsonl(out / "BIOSSES_hf" / "dev.json")
    assert [r["label"] for r in bio] == [4.0, 0.0, 1.8] and bio[0]["id"] == "6"
    bq = _jsonl(out / "bioasq_hf" / "dev.json")
    assert bq[1]["sentence2"].startswith("Women are affected")   # a quoted TSV field, read as pandas does


def test_ner_sentences_devel_file_and_pico_tags(prepared):
    out, _ = prepared
    chem = _jsonl(out / "BC5CDR-chem_hf" / "train.json")
    assert [r["id"] for r in chem] == ["0", "1", "2", "3", "4"]   # -DOCSTART- line skipped
    assert chem[1]["tokens"][:2] == ["Lithium", "carbonate"] and chem[1]["ner_tags"][:2] == ["B-Chemical", "I-Chemical"]
    ncbi_dev = _jsonl(out / "NCBI-disease_hf" / "dev.json")   # MTL-Bioinformatics-2016 NCBI-disease-IOB/devel.tsv
    assert ncbi_dev[0]["ner_tags"][:2] == ["B-Disease", "I-Disease"]
    pico = _jsonl(out / "ebmnlp_hf" / "train.json")
    assert pico[0]["ner_tags"][:3] == ["B-PAR", "B-PAR", "B-PAR"]    # I-x -> B-x as the authors
    assert not any(t.startswith("I-") for r in pico for t in r["ner_tags"])


def test_original_distribution_folder_is_one_error_line_and_others_still_written(tmp_path, capsys):
    raw = tmp_path / "data"
    shutil.copytree(DATA / "GAD", raw / "GAD")
    (raw / "BC5CDR-disease").mkdir()
    (raw / "BC5CDR-disease" / "CDR_TrainingSet.PubTator.txt").write_text(
        "227508|t|Naloxone reverses the antihypertensive effect of clonidine.\n")
    code, out, err = prepare(capsys, "blurb", raw, tmp_path / "out")
    assert code == 2 and len(err) == 1
    assert "bc5cdr-disease:" in err[0] and "PubTator" in err[0] and "data_generation" in err[0]
    assert (tmp_path / "out" / "GAD_hf" / "test.json").is_file()
    code, _, err = prepare(capsys, "blurb", raw, tmp_path / "o2", "--tasks", "gad,medmentions")
    assert code == 2 and len(err) == 1 and "'medmentions' is not a BLURB task" in err[0]
    code, _, err = prepare(capsys, "blurb", tmp_path / "out", tmp_path / "o3")
    assert code == 2 and len(err) == 1 and "no BLURB task folder" in err[0]


def _mentions(path, types):
    """Mention strings of the given PubTator types, in file order, spaces removed."""
    return [p[3].replace(" ", "") for p in (line.split("\t") for line in path.read_text().splitlines())
            if len(p) >= 5 and p[4] in types]


def _entities(rows, kind):
    out = []
    for r in rows:
        for tok, tag in zip(r["tokens"], r["ner_tags"]):
            if tag == f"B-{kind}":
                out.append(tok)
            elif tag == f"I-{kind}":
                out[-1] += tok
    return out


def test_pubtator_releases_converted_with_from_pubtator(tmp_path, capsys):
    code, out, err = prepare(capsys, "blurb", PUBTATOR, tmp_path / "no")
    assert code == 2 and len(err) == 1 and "pass --from-pubtator" in err[0]
    code, out, err = prepare(capsys, "blurb", PUBTATOR, tmp_path, "--from-pubtator")
    assert code == 0 and not err and sum("scores are not the paper's" in line for line in out) == 3
    cdr = PUBTATOR / "CDR_Data" / "CDR.Corpus.v010516"
    for task, kind, release, types in [
            ("BC5CDR-chem", "Chemical", {"train": cdr / "CDR_TrainingSet.PubTator.txt",
                                         "test": cdr / "CDR_TestSet.PubTator.txt"}, {"Chemical"}),
            ("BC5CDR-disease", "Disease", {"dev": cdr / "CDR_DevelopmentSet.PubTator.txt"}, {"Disease"}),
            ("NCBI-disease", "Disease", {"train": PUBTATOR / "NCBI" / "NCBItrainset_corpus.txt",
                                         "test": PUBTATOR / "NCBI" / "NCBItestset_corpus.txt"},
             {"SpecificDisease", "DiseaseClass", "Modifier", "CompositeMention"})]:
        for split, path in release.items():
            rows = _jsonl(tmp_path / f"{task}_hf" / f"{split}.json")
            assert _entities(rows, kind) == _mentions(path, types), (task, split)
            assert {t for r in rows for t in r["ner_tags"]} <= {"O", f"B-{kind}", f"I-{kind}"}
    dev = _jsonl(tmp_path / "BC5CDR-chem_hf" / "dev.json")
    assert [" ".join(r["tokens"]) for r in dev] == [   # the title, then sentences cut at ". <Capital>"
        "Famotidine - associated delirium .", "A series of six cases .",
        "Famotidine is a histamine H2 - receptor antagonist used in inpatient settings for prevention of "
        "stress ulcers ."]
    assert [r["id"] for r in dev] == ["0", "1", "2"]


def test_pubtator_mention_off_its_offsets_is_one_error_line(tmp_path, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(PUBTATOR / "NCBI", raw / "NCBI")
    f = raw / "NCBI" / "NCBIdevelopset_corpus.txt"
    f.write_text(f.read_text().replace("\t0\t18\tMyotonic dystrophy", "\t1\t19\tMyotonic dystrophy"))
    code, _, err = prepare(capsys, "blurb", raw, tmp_path / "out", "--from-pubtator", "--tasks", "ncbi-disease")
    assert code == 2 and len(err) == 1
    assert f"{f}:3: mention 'Myotonic dystrophy' is not at 1-19 of document 8528200" in err[0]


@pytest.mark.parametrize("folder, split, edit, words", [
    ("BC5CDR-chem", "dev", lambda t: t.replace("Gentamicin\tB-Chemical", "Gentamicin\tB-Chemical\tNN"),
     ":1: 3 tab-separated columns, expected 2"),
    ("BC5CDR-chem", "test", lambda t: t.replace("Cocaine\tB-Chemical", "B-Chemical\tCocaine"),
     ":1: tag 'Cocaine' is not O, B-<type> or I-<type>"),
    ("HoC", "dev", lambda t: t.replace("5_1", "5_x"), ":2: labels"),
    ("BIOSSES", "test", lambda t: t.replace("\t3.9", "\tsimilar"), ":2: score 'similar' is not a number"),
    ("chemprot", "train", lambda t: t.replace("\tCPR:9", " CPR:9"), ":7: 2 tab-separated columns, expected 3"),
])
def test_bad_line_is_one_error_naming_file_and_line(tmp_path, capsys, folder, split, edit, words):
    raw = tmp_path / "data"
    shutil.copytree(DATA / folder, raw / folder)
    f = raw / folder / f"{split}.tsv"
    f.write_text(edit(f.read_text()))
    code, _, err = prepare(capsys, "blurb", raw, tmp_path / "out", "--tasks", folder)
    assert code == 2 and len(err) == 1 and f"{f}{words}" in err[0], err


@pytest.mark.slow
def test_prepare_then_finetune_one_task_per_blurb_family(prepared, tmp_path, capsys, minilm_dir):
    out, _ = prepared
    assert prepare(capsys, "blurb", PUBTATOR, tmp_path / "pt", "--from-pubtator", "--tasks", "bc5cdr-disease")[0] == 0
    shutil.copytree(tmp_path / "pt" / "BC5CDR-disease_hf", out / "BC5CDR-disease_hf")
    # one task per BLURB family (NER from the PubTator release)
    tasks = {"bc5cdr-disease": "BC5CDR-disease_hf", "ebmpico": "ebmnlp_hf", "chemprot": "chemprot_hf",
             "biosses": "BIOSSES_hf", "hoc": "HoC_hf", "pubmedqa": "pubmedqa_hf"}
    for task, folder in tasks.items():
        res = finetune_preset(task, minilm_dir, tmp_path / task, **split_files(out / folder))
        for split, file in (("validation", "dev.json"), ("test", "test.json")):
            got = res["metrics"][split][METRIC[task]]
            want = _metric_from_predictions(task, res, _jsonl(out / folder / file), res[split], minilm_dir)
            assert got == pytest.approx(want, abs=1e-9), (task, split, res["metrics"])
        if task == "chemprot":   # F1 leaves out the negative class, which the prepared "0" makes id 0
            assert res["info"]["task_info"]["labels"][0] == "0"
    score = blurb_score(collect_scores([f"{t}={tmp_path / t}" for t in tasks]), allow_partial=True)
    assert set(score["families"]) == {"ner", "pico", "relation_extraction", "sentence_similarity",
                                      "document_classification", "question_answering"}


def _metric_from_predictions(task: str, res: dict, rows: list[dict], preds: dict, tokenizer_dir) -> float:
    """The task's BLURB metric recomputed from predictions_<split>.json with scikit-learn/scipy/seqeval."""
    from scipy.stats import pearsonr
    from sklearn.metrics import accuracy_score, f1_score

    if task in ("bc5cdr-disease", "ebmpico"):   # entity F1 over the words that fit in --max_seq_length 32
        from seqeval.metrics import f1_score as entity_f1
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        gold, pred = [], []
        for r in rows:
            words = tok(r["tokens"], is_split_into_words=True, truncation=True, max_length=32).word_ids()
            seen = sorted({w for w in words if w is not None})
            assert all(preds[r["id"]][w] == "O" for w in range(len(r["tokens"])) if w not in seen)
            gold.append([r["ner_tags"][w] for w in seen])
            pred.append([preds[r["id"]][w] for w in seen])
        return float(entity_f1(gold, pred, average="macro" if task == "ebmpico" else "micro", zero_division=0))
    if task == "chemprot":   # micro F1 over the relation classes, the negative "0" left out
        labels = res["info"]["task_info"]["labels"]
        return float(f1_score([r["label"] for r in rows], [preds[r["id"]] for r in rows],
                              labels=[x for x in labels if x != "0"], average="micro", zero_division=0))
    if task == "biosses":
        p, g = [preds[r["id"]] for r in rows], [r["label"] for r in rows]
        return 0.0 if np.std(p) == 0 else float(pearsonr(p, g)[0])
    if task == "hoc":   # one row per abstract here, so the per-document OR is the row itself
        assert len({r["id"] for r in rows}) == len(rows) and not any("_" in r["id"] for r in rows)
        return float(f1_score(np.array([r["label"] for r in rows]), np.array([preds[r["id"]] for r in rows]),
                              average="micro", zero_division=0))
    assert task == "pubmedqa"
    return float(accuracy_score([r["label"] for r in rows], [preds[r["id"]] for r in rows]))
