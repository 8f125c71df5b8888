"""Released weights by Hub id for pretraining (`--init-from ORG/NAME`, `--data.tokenizer ORG/NAME`) from a
Hub cache laid out by hand, and the paper presets that enforce their recipe (init model, vocabulary)."""
import pytest
import torch
from engine_helpers import build_jargon, run_ranks

from pretrain.cli import main
from pretrain.config import ConfigError, build
from tests.hub_cache import lay_out_hub_cache

ID = "test-org/bert-cached"


@pytest.fixture(scope="module")
def jargon(tmp_path_factory, minilm_dir):
    return build_jargon(minilm_dir, tmp_path_factory.mktemp("jargon") / "d64", max_seq_len=64)


@pytest.mark.parametrize("preset,init", [("linkbert-base", "bert-base-cased"), ("linkbert-large", "bert-large-cased")])
def test_linkbert_presets_require_init_from(preset, init, capsys):
    assert main(["--preset", preset, "--data", "d", "--output", "o"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0] == (f"linkbert-pretrain: error: preset {preset} continues pretraining from {init} (the released "
                      f"models use its cased, 28,996 tokens vocabulary): pass --init-from {init} (a Hub id or a "
                      "local folder), or use --model instead of the preset to train from scratch")
    assert main(["--preset", "linkbert-tiny", "--data", "d", "--output", "o", "--print-config"]) == 0


def test_presets_warn_when_the_vocabulary_differs(jargon, minilm_dir, capsys):
    # all-MiniLM-L6-v2's vocabulary: lower-cased, 30,522 tokens
    build(preset="biolinkbert-base", flags={"data": {"paths": [str(jargon)]}})
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"linkbert-pretrain: warning: preset biolinkbert-base expects the released model's vocabulary "
                   f"(lower-cased, 28,895 tokens) but {jargon} was built with another (lower-cased, 30,522 tokens; "
                   "linkbert-prep build --tokenizer)"]
    build(preset="linkbert-large", flags={"data": {"paths": [str(jargon)]}, "model": {"init_from": str(minilm_dir)}})
    err = capsys.readouterr().err
    assert f"--init-from {minilm_dir} has 30,522 tokens" in err and "(cased, 28,996 tokens) but" in err
    build(flags={"data": {"paths": [str(jargon)]}})   # no paper preset: nothing to compare with
    assert capsys.readouterr().err == ""


def test_missing_hub_id_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["--init-from", "michiyasunaga/LinkBERT-large", "--data", "d", "--output", "o"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("linkbert-pretrain: error: --init-from michiyasunaga/LinkBERT-large: "
                                               "no such local folder, and Hub model michiyasunaga/LinkBERT-large "
                                               "is not in the cache")
    assert "`hf download michiyasunaga/LinkBERT-large`" in err[0]
    with pytest.raises(ConfigError, match=r"--data\.tokenizer test-org/tok: no such local folder"):
        build(flags={"data": {"tokenizer": "test-org/tok"}})


@pytest.mark.slow
def test_init_from_and_tokenizer_by_hub_id(jargon, minilm_dir, tmp_path):
    """One rank, lr 1e-12 (0 is refused): the exported encoder is the cached snapshot's, so it was the one loaded;
    whole-word masking read its vocabulary through --data.tokenizer ORG/NAME."""
    home = tmp_path / "hf_home"
    lay_out_hub_cache(home, ID, minilm_dir)
    out = tmp_path / "run"
    _, log = run_ranks(["--init-from", ID, "--data.tokenizer", ID, "--data.whole_word=true", "--data", str(jargon),
                        "--output", str(out), "--max-steps", "2", "--micro-batch-size", "4", "--lr", "1e-12",
                        "--save-every", "0", "--metrics.progress=false", "--metrics.tensorboard=false",
                        "--data.held_out=16", "--metrics.eval_batches=1", "--data.prefetch=2"],
                       world=1, timeout=300, extra_env={"HF_HOME": home, "HF_HUB_OFFLINE": "1"})
    from transformers import AutoModel
    got, ref = AutoModel.from_pretrained(out / "hf"), AutoModel.from_pretrained(minilm_dir)
    ref_sd = ref.state_dict()
    for k, v in got.state_dict().items():
        if k in ref_sd and not k.startswith("pooler"):
            torch.testing.assert_close(v, ref_sd[k], atol=1e-9, rtol=0, msg=k)
    assert sum(k in ref_sd for k in got.state_dict()) > 90
