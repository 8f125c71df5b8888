"""`linkbert-finetune prepare mrqa`: MRQA release files -> squad_hf/{train,dev,test}.json, the in-house
dev/test split (keyed halving or the authors' id lists), bad input as one line, then fine-tuning on it."""
import gzip
import json
import shutil

import pytest

from finetune import metrics as M
from finetune.prepare.common import PrepareError
from finetune.prepare.mrqa import halve, load_split_ids
from tests.finetune.prepare_helpers import RAW, finetune_preset, prepare, split_files

SRC = RAW / "mrqa"


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _paragraphs(path):
    return [json.loads(line) for line in path.read_text().splitlines()[1:] if line.strip()]


def test_halve_is_an_exact_deterministic_partition_keyed_by_content():
    lines = [json.dumps({"context": f"paragraph {i}", "qas": []}) for i in range(41)]
    dev, test = halve(lines, seed=0)
    assert len(dev) == 20 and len(test) == 21           # dev = n // 2, as the authors' halves
    assert sorted(dev + test) == list(range(41)) and dev == sorted(dev) and test == sorted(test)
    assert halve(lines, seed=0) == (dev, test)
    # membership follows the content, not the file order
    rev = list(reversed(lines))
    rdev, _ = halve(rev, seed=0)
    assert {rev[i] for i in rdev} == {lines[i] for i in dev}
    assert halve(lines, seed=1)[0] != dev                  # the seed is the key
    assert dev != list(range(20))                          # not simply the first half


def test_split_ids_must_cover_the_file_exactly_once(tmp_path):
    src = SRC / "dev" / "SQuAD.jsonl"
    good = tmp_path / "ids.json"
    good.write_text(json.dumps({"dev": [2, 0], "test": [1, 3]}))
    assert load_split_ids(good, 4, src) == ([2, 0], [1, 3])
    for data, words in [({"dev": [0, 1], "test": [2]}, "hold 3 paragraph ids but"),
                        ({"dev": [0, 1], "test": [2, 7]}, "test[1] = 7 is outside"),
                        ({"dev": [0, 1], "test": [1, 2]}, "paragraph 1 is in both dev and test"),
                        ({"dev": [0, 1]}, "expected {\"dev\""),
                        ({"dev": [0, "1"], "test": [2, 3]}, "dev[1] = '1' is not")]:
        good.write_text(json.dumps(data))
        with pytest.raises(PrepareError, match="ids.json") as e:
            load_split_ids(good, 4, src)
        assert words in str(e.value) and "\n" not in str(e.value)


def test_default_split_rows_and_counts(tmp_path, capsys):
    code, out, err = prepare(capsys, "mrqa", SRC, tmp_path)
    assert code == 0 and not err
    d = tmp_path / "squad_hf"
    train, dev, test = (_jsonl(d / f"{s}.json") for s in ("train", "dev", "test"))
    raw_train, raw_dev = _paragraphs(SRC / "train" / "SQuAD.jsonl"), _paragraphs(SRC / "dev" / "SQuAD.jsonl")
    assert len(train) == sum(len(p["qas"]) for p in raw_train)
    # every dev question lands in exactly one of the in-house halves, 3 and 4 of the 7 paragraphs
    assert sorted(r["id"] for r in dev + test) == sorted(q["qid"] for p in raw_dev for q in p["qas"])
    assert len({r["context"] for r in dev}) == 3 and len({r["context"] for r in test}) == 4
    for r in train + dev + test:
        for text, start in zip(r["answers"]["text"], r["answers"]["answer_start"]):
            assert r["context"][start:start + len(text)] == text
    warfarin = next(r for r in dev + test if "INR" in r["context"])
    assert warfarin["answers"]["text"] == ["with the INR", "INR"]   # every detected answer, in order
    assert any("3/4 paragraphs" in line for line in out)
    report = json.loads((tmp_path / "prepare_report_mrqa.json").read_text())
    assert report["files"][str(d / "train.json")] == len(train)


def test_authors_split_ids_give_their_order(tmp_path, capsys):
    ids = json.loads((SRC / "inhouse_split_squad.json").read_text())
    code, _, _ = prepare(capsys, "mrqa", SRC, tmp_path, "--split-ids", SRC / "inhouse_split_squad.json")
    assert code == 0
    raw_dev = _paragraphs(SRC / "dev" / "SQuAD.jsonl")
    for split in ("dev", "test"):
        want = [q["qid"] for i in ids[split] for q in raw_dev[i]["qas"]]
        assert [r["id"] for r in _jsonl(tmp_path / "squad_hf" / f"{split}.json")] == want


def test_gzipped_release_names_and_one_split_file_for_several_datasets(tmp_path, capsys):
    raw = tmp_path / "raw"
    for split in ("train", "dev"):
        (raw / split).mkdir(parents=True)
        shutil.copy(SRC / split / "SQuAD.jsonl", raw / split / "SQuAD.jsonl")
        with gzip.open(raw / split / "TriviaQA-web.jsonl.gz", "wt") as f:   # the release's own name
            f.write((SRC / split / "SQuAD.jsonl").read_text())
    code, out, _ = prepare(capsys, "mrqa", raw, tmp_path / "out")
    assert code == 0 and (tmp_path / "out" / "triviaqa_hf" / "test.json").is_file()
    code, _, err = prepare(capsys, "mrqa", raw, tmp_path / "o2", "--split-ids", SRC / "inhouse_split_squad.json")
    assert code == 2 and len(err) == 1 and "pick one with --datasets" in err[0]
    code, _, err = prepare(capsys, "mrqa", raw, tmp_path / "o3", "--split-ids", SRC, "--datasets", "triviaqa")
    assert code == 2 and len(err) == 1 and "inhouse_split_triviaqa.json: no such file" in err[0]


@pytest.mark.parametrize("mutate, words", [
    (lambda lines: lines[:2] + ["{not json"] + lines[3:], ":3: not valid JSON"),
    (lambda lines: lines[:3] + [lines[3].replace('"detected_answers"', '"detected"')] + lines[4:],
     ":4: question dev2q0: field 'detected_answers' missing"),
    (lambda lines: lines[:4] + [json.dumps({"qas": []})] + lines[5:], ":5: field 'context' missing"),
])
def test_bad_release_line_is_one_error_naming_file_and_line(tmp_path, capsys, mutate, words):
    raw = tmp_path / "raw"
    shutil.copytree(SRC, raw)
    dev = raw / "dev" / "SQuAD.jsonl"
    dev.write_text("\n".join(mutate(dev.read_text().splitlines())) + "\n")
    code, _, err = prepare(capsys, "mrqa", raw, tmp_path / "out")
    assert code == 2 and len(err) == 1, err
    assert str(dev) + words in err[0] and "Traceback" not in err[0]


def test_answer_text_off_its_span_is_kept_and_counted(tmp_path, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(SRC, raw)
    train = raw / "train" / "SQuAD.jsonl"
    train.write_text(train.read_text().replace('"text": "scurvy"', '"text": "Scurvy"'))
    code, out, _ = prepare(capsys, "mrqa", raw, tmp_path / "out")
    assert code == 0 and any(line.startswith("note: 1 squad: answers whose text differs") for line in out)


@pytest.mark.slow
def test_prepare_then_finetune_squad(tmp_path, capsys, minilm_dir):
    assert prepare(capsys, "mrqa", SRC, tmp_path / "data")[0] == 0
    data = tmp_path / "data" / "squad_hf"
    res = finetune_preset("squad", minilm_dir, tmp_path / "run", **split_files(data), max_seq_length=64,
                          doc_stride=16)
    for split, name in (("validation", "dev"), ("test", "test")):
        gold = {r["id"]: r["answers"]["text"] for r in _jsonl(data / f"{name}.json")}
        assert set(res[split]) == set(gold)
        assert res["metrics"][split] == pytest.approx(M.squad_scores(res[split], gold))
