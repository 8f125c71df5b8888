"""`linkbert-finetune --model ORG/NAME`: a released model named as on the Hub, read offline from a Hub
cache the test lays out by hand (the real all-MiniLM-L6-v2 folder as a cached snapshot)."""

import pytest

from finetune.cli import main
from tests.finetune.helpers import FIX, outputs
from tests.hub_cache import COMMIT, lay_out_hub_cache


@pytest.fixture
def hub_home(tmp_path, monkeypatch, minilm_dir):
    home = tmp_path / "hf_home"
    lay_out_hub_cache(home, "michiyasunaga/BioLinkBERT-base", minilm_dir)   # any BERT folder will do
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_model_by_hub_id_from_the_cache(hub_home, tmp_path, minilm_dir):
    argv = ["--task", "seqcls", "--train", str(FIX / "seqcls_train.jsonl"), "--validation",
            str(FIX / "seqcls_validation.jsonl"), "--max_steps", "2", "--max_seq_length", "32",
            "--max_eval_samples", "16", "--max_train_samples", "32", "--disable_tqdm", "--no_save_model"]
    assert main(["--model", "michiyasunaga/BioLinkBERT-base", "--output", str(tmp_path / "hub"), *argv]) == 0
    assert main(["--model", str(minilm_dir), "--output", str(tmp_path / "local"), *argv]) == 0
    hub, local = outputs(tmp_path / "hub"), outputs(tmp_path / "local")
    assert hub["info"]["options"]["model"] == "michiyasunaga/BioLinkBERT-base"
    assert hub["info"]["model_path"].endswith(f"models--michiyasunaga--BioLinkBERT-base/snapshots/{COMMIT}")
    # the same weights, seed and data: the same predictions as from the folder itself
    assert hub["validation"] == local["validation"] and hub["metrics"] == local["metrics"]


def test_missing_hub_id_is_one_line(hub_home, tmp_path, capsys):
    rc = main(["--task", "seqcls", "--model", "michiyasunaga/LinkBERT-large", "--validation",
               str(FIX / "seqcls_validation.jsonl"), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0] == ("linkbert-finetune: error: --model michiyasunaga/LinkBERT-large: no such local folder, and "
                      f"Hub model michiyasunaga/LinkBERT-large is not in the cache {hub_home / 'hub'} (offline: "
                      "HF_HUB_OFFLINE=1); fetch it with `hf download michiyasunaga/LinkBERT-large` (or "
                      "`huggingface-cli download michiyasunaga/LinkBERT-large`) where there is network, or give "
                      "a local folder")
    assert not (tmp_path / "o" / "metrics.json").exists()
