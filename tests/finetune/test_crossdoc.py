"""linkbert-eval crossdoc: scoring arithmetic, deterministic items, titles removed, report shape, bad input."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from finetune.crossdoc import CONDITIONS, Scorer, correct, effect_correct, encode, score_candidates, summarize
from finetune.crossdoc_items import build_items, read_corpus, remove_title
from finetune.eval_cli import main as eval_main

WORDS = ["river", "mountain", "castle", "garden", "forest", "ocean", "bridge", "island", "valley", "desert",
         "village", "harbor"]


def synthetic_corpus(path):
    """12 documents titled by one-token words; each mentions (and links to) the next two, and repeats its
    own title in several spellings so removal can be checked."""
    rows = []
    for i, w in enumerate(WORDS):
        nxt = [WORDS[(i + 1) % len(WORDS)], WORDS[(i + 2) % len(WORDS)]]
        text = (f"The {w.capitalize()} is a place. {w.upper()}S are common and a {w}'s edge is far. "
                f"Near it lies the {nxt[0]} and further the {nxt[1]}. People walk there every day.")
        rows.append({"id": f"d{i}", "title": w, "text": text, "links": [f"d{(i + 1) % 12}", f"d{(i + 2) % 12}"]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tokenizer):
    """A 1-layer random BERT masked LM with the real MiniLM vocabulary (fast; the arithmetic is what counts)."""
    from transformers import BertConfig, BertForMaskedLM
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    d = tmp_path_factory.mktemp("tiny_mlm")
    BertForMaskedLM(cfg).eval().save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def test_scores_by_hand():
    lp = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.25, 0.125, 0.125]]))
    cands = torch.tensor([[3, 0], [2, 1], [0, 3], [3, 0]])
    got = score_candidates(lp, cands)
    want = [torch.log(torch.tensor(x)).item() for x in (0.4 * 0.5, 0.3 * 0.25, 0.1 * 0.125, 0.4 * 0.5)]
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    assert correct(got.tolist(), 0) is False                 # tied with candidate 3: a tie is wrong
    assert correct(got.tolist()[:3], 0) is True
    assert correct(got.tolist()[:3], 1) is False


def test_effect_reading_by_hand():
    """The effect reading ranks candidates by what the second segment added to A alone's score."""
    o = {"gold": 1,
         "none": {"scores": [-2.0, -6.0, -3.0]},
         "linked": {"scores": [-2.5, -4.0, -3.0]},     # the answer loses on raw scores but gained +2.0
         "random": {"scores": [-1.0, -5.5, -3.0]}}     # candidate 0 gained +1.0, the answer +0.5
    assert effect_correct(o, "linked") is True and correct(o["linked"]["scores"], 1) is False
    assert effect_correct(o, "random") is False
    o["random"]["scores"] = [-1.0, -5.0, -3.0]         # answer +1.0 ties candidate 0: a tie is wrong
    assert effect_correct(o, "random") is False
    # Summaries: 4 items; the effect reading is right on linked in 3 and on random in 1; raw never right.
    items = []
    for k in range(4):
        linked = [-2.5, -4.0, -3.0] if k < 3 else [-2.0, -6.0, -2.0]
        items.append({"gold": 1, "none": {"scores": [-2.0, -6.0, -3.0], "correct": False},
                      "linked": {"scores": linked, "correct": False},
                      "random": {"scores": [-2.0, -5.0, -3.0] if k == 0 else [-1.0, -6.0, -3.0], "correct": False}})
    rep = summarize(items, 3, 0)
    assert rep["linked_minus_random"]["mean"] == 0 and rep["valid_raw"] is False
    assert rep["effect"]["linked"]["acc"] == 0.75 and rep["effect"]["random"]["acc"] == 0.25
    assert rep["effect"]["linked_minus_random"]["mean"] == 0.5


def test_scorer_head_at_masks_equals_full_logits(tiny_model, tokenizer):
    from transformers import AutoModelForMaskedLM
    scorer = Scorer(tiny_model, batch_size=4)
    a = tokenizer("the river runs to the sea", add_special_tokens=True)["input_ids"]
    b = tokenizer("a castle", "on a hill by the water", add_special_tokens=True)
    batch = [(a, [0] * len(a), [2, 3]), (b["input_ids"], b["token_type_ids"], [1, 5, 6])]
    got = scorer.log_probs(batch)
    full = AutoModelForMaskedLM.from_pretrained(tiny_model).eval()
    for (ids, types, pos), lp in zip(batch, got):
        with torch.no_grad():
            ref = full(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types])).logits[0, pos]
        torch.testing.assert_close(lp, torch.log_softmax(ref, -1), atol=1e-4, rtol=1e-4)


def test_items_deterministic_and_length_matched(tmp_path, tokenizer):
    docs = read_corpus(synthetic_corpus(tmp_path / "c.jsonl"))
    first, left = build_items(docs, tokenizer, 10, 4, seed=0)
    again, _ = build_items(docs, tokenizer, 10, 4, seed=0)
    other, _ = build_items(docs, tokenizer, 10, 4, seed=1)
    assert first == again and first != other
    assert len(first) == 10 and left["pool"] == 24
    by_id = {d.id: d for d in docs}
    for it in first:
        answer = it.candidates[it.gold]
        assert answer == by_id[it.b].title and it.b in by_id[it.a].links
        assert by_id[it.a].text[it.start:it.end].lower() == answer
        lens = {len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in it.candidates}
        assert lens == {1} and len(set(it.candidates)) == 4
        for c in it.candidates:
            if c != answer:   # distractors never occur in A (no copying) and are not A's title
                assert c != by_id[it.a].title and not re.search(rf"\b{c}\b", by_id[it.a].text, re.I)
        assert it.random not in (it.a, it.b) and it.random not in by_id[it.a].links


def test_titles_removed_everywhere(tmp_path, tokenizer):
    assert remove_title("Hacker, hackers and a HACKER's hack", "hacker") == ", and a hack"
    assert remove_title("An untitled note", "") == "An untitled note"   # not every word (the notitle arms)
    docs = read_corpus(synthetic_corpus(tmp_path / "c.jsonl"))
    items, _ = build_items(docs, tokenizer, 24, 4, seed=0)
    by_id = {d.id: d for d in docs}
    for it in items:
        answer = it.candidates[it.gold]
        for cond in CONDITIONS:
            ids, types, pos = encode(it, cond, by_id, tokenizer, 128, 1)
            assert [ids[p] for p in pos] == [tokenizer.mask_token_id]
            text = tokenizer.decode(ids).lower()
            assert answer not in text, (cond, text)
            assert ("[SEP]" in tokenizer.decode(ids[:ids.index(tokenizer.sep_token_id) + 1]))
            if cond == "none":
                assert set(types) == {0}
            else:
                assert types.count(1) > 3 and len(ids) <= 128
        # the second segment of `linked` is B's text (minus its title); `random` another document's
        linked, _, _ = encode(it, "linked", by_id, tokenizer, 128, 1)
        b_words = tokenizer.decode(tokenizer(remove_title(by_id[it.b].text, answer))["input_ids"][1:8])
        assert b_words in tokenizer.decode(linked)
        # the `titled` diagnostic: the same A, then B's text as it is (its title left in)
        titled, types, _ = encode(it, "titled", by_id, tokenizer, 128, 1)
        a_end = linked.index(tokenizer.sep_token_id) + 1
        assert titled[:a_end] == linked[:a_end] and types.count(1) == len(titled) - a_end
        raw_b = tokenizer(by_id[it.b].text, add_special_tokens=False)["input_ids"]
        assert titled[a_end:-1] == raw_b[:len(titled) - a_end - 1]


def test_report_shape_and_cli(tmp_path, tiny_model, capsys):
    corpus = synthetic_corpus(tmp_path / "c.jsonl")
    out = tmp_path / "r" / "REPORT.json"
    rc = eval_main(["crossdoc", "--model", str(tiny_model), "--corpus", str(corpus), "--out", str(out),
                    "--n", "20", "--candidates", "4", "--max-seq-len", "64"])
    assert rc == 0
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1 and line[0].startswith("crossdoc n=20 chance=0.250")
    rep = json.loads(out.read_text())
    assert rep["n"] == 20 and rep["chance"] == 0.25
    for c in CONDITIONS:
        assert 0 <= rep[c]["acc"] <= 1 and rep[c]["ci95"][0] <= rep[c]["acc"] <= rep[c]["ci95"][1]
    lmr = rep["linked_minus_random"]
    assert lmr["ci95"][0] <= lmr["mean"] <= lmr["ci95"][1]
    outcomes = [json.loads(x) for x in (out.parent / rep["examples_file"]).read_text().splitlines()]
    assert len(outcomes) == 20 and rep["examples_file"] == "REPORT.examples.jsonl"
    again = summarize(outcomes, 4, 0)
    assert {c: again[c] for c in CONDITIONS} == {c: rep[c] for c in CONDITIONS}
    assert lmr["mean"] == pytest.approx(rep["linked"]["acc"] - rep["random"]["acc"], abs=1e-4)
    for o in outcomes:
        for c in CONDITIONS:
            s = o[c]["scores"]
            assert o[c]["correct"] == (s[o["gold"]] > max(x for i, x in enumerate(s) if i != o["gold"]))
        for c in ("linked", "random"):
            gain = [x - y for x, y in zip(o[c]["scores"], o["none"]["scores"])]
            assert o[c]["effect_correct"] == (gain[o["gold"]] > max(x for i, x in enumerate(gain) if i != o["gold"]))
    assert rep["effect"] == again["effect"] and rep["valid"] == (rep["effect"]["linked_minus_random"]["ci95"][0] > 0)
    assert "effect linked=" in line[0] and "titled" not in rep
    # --titled adds the diagnostic condition: its outcomes, accuracy and paired difference with `linked`
    assert eval_main(["crossdoc", "--model", str(tiny_model), "--corpus", str(corpus), "--out", str(out),
                      "--n", "20", "--candidates", "4", "--max-seq-len", "64", "--titled"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"titled={json.loads(out.read_text())['titled']['acc']:.3f}")
    rep = json.loads(out.read_text())
    outcomes = [json.loads(x) for x in (out.parent / rep["examples_file"]).read_text().splitlines()]
    t = np.array([o["titled"]["correct"] for o in outcomes], dtype=float)
    lk = np.array([o["linked"]["correct"] for o in outcomes], dtype=float)
    assert rep["titled"]["acc"] == pytest.approx(t.mean(), abs=1e-5)
    assert rep["titled_minus_linked"]["mean"] == pytest.approx((t - lk).mean(), abs=1e-5)
    assert summarize(outcomes, 4, 0)["titled"] == rep["titled"]


@pytest.mark.parametrize("case", ["no_corpus", "bad_json", "candidates", "no_model", "no_items"])
def test_bad_input_is_one_line(case, tmp_path, tiny_model, capsys):
    corpus = synthetic_corpus(tmp_path / "c.jsonl")
    args = {"--model": str(tiny_model), "--corpus": str(corpus), "--out": str(tmp_path / "o.json")}
    extra, want = [], ""
    if case == "no_corpus":
        args["--corpus"], want = str(tmp_path / "missing.jsonl"), "no such file"
    elif case == "bad_json":
        corpus.write_text(corpus.read_text() + '{"id": "x", "text": 5}\n')
        want = f"{corpus}:13: field 'text' is a int"
    elif case == "candidates":
        extra, want = ["--candidates", "1"], "--candidates >= 2"
    elif case == "no_model":
        args["--model"], want = str(tmp_path), "no config.json"
    else:
        (tmp_path / "flat.jsonl").write_text('{"id": "a", "title": "alpha", "text": "no links here"}\n')
        args["--corpus"], want = str(tmp_path / "flat.jsonl"), "0 items"
    rc = eval_main(["crossdoc", *[x for kv in args.items() for x in kv], *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("linkbert-eval crossdoc: error:")
    assert want in err, err
