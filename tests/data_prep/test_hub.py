"""Hub ids for models and tokenizers (data_prep.hub): local folder first, the Hub cache offline, one
clear line otherwise; `linkbert-prep build --tokenizer ORG/NAME` from a cache laid out by hand."""
import json
import sys

import pytest

from data_prep.cli import main as prep_main
from data_prep.hub import HubError, resolve
from tests import procs
from tests.hub_cache import COMMIT, lay_out_hub_cache

ID = "test-org/MiniLM-hub"
CORPUS = procs.ROOT / "data_prep" / "corpora" / "jargon.jsonl.gz"


@pytest.fixture
def hub_home(tmp_path, monkeypatch, minilm_dir):
    home = tmp_path / "hf_home"
    lay_out_hub_cache(home, ID, minilm_dir)
    lay_out_hub_cache(home, "test-org/tokenizer-only", minilm_dir,
                      files=["tokenizer.json", "tokenizer_config.json", "vocab.txt", "config.json"])
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_offline_id_resolves_to_the_cached_snapshot(hub_home, minilm_dir):
    repo = hub_home / "hub" / "models--test-org--MiniLM-hub"
    # an older snapshot beside it: the one refs/main names is the answer, not any snapshot folder
    old = repo / "snapshots" / ("f" * 40)
    old.mkdir()
    (old / "model.safetensors").symlink_to((minilm_dir / "model.safetensors").resolve())
    snap = resolve(ID, "--model")
    assert snap == repo / "snapshots" / COMMIT and (repo / "refs" / "main").read_text() == COMMIT
    assert (snap / "model.safetensors").is_file()
    tok_only = hub_home / "hub" / "models--test-org--tokenizer-only" / "snapshots" / COMMIT
    assert resolve("test-org/tokenizer-only", "--tokenizer", weights=False) == tok_only
    with pytest.raises(HubError, match=r"--init-from test-org/tokenizer-only: the Hub snapshot .* has no "
                                       r"model\.safetensors or pytorch_model\.bin weights; fetch them with "
                                       r"`hf download test-org/tokenizer-only`"):
        resolve("test-org/tokenizer-only", "--init-from")


def test_local_folder_wins_over_the_cache(hub_home, tmp_path, monkeypatch):
    local = tmp_path / "work" / "test-org" / "MiniLM-hub"
    local.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    assert resolve(ID, "--model") == local.relative_to(tmp_path / "work")


def test_missing_id_and_bad_names_are_one_line(hub_home, tmp_path):
    with pytest.raises(HubError) as e:
        resolve("michiyasunaga/BioLinkBERT-base", "--model")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("--model michiyasunaga/BioLinkBERT-base: no such local folder, and Hub model "
                          "michiyasunaga/BioLinkBERT-base is not in the cache ")
    assert "(offline: HF_HUB_OFFLINE=1); fetch it with `hf download michiyasunaga/BioLinkBERT-base`" in msg
    with pytest.raises(HubError, match=r"--model \./runs/nothere: no such folder \(and not a Hub id"):
        resolve("./runs/nothere", "--model")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(HubError, match="a file, not a folder"):
        resolve(str(f), "--model")


def test_online_without_network_uses_the_cache_or_says_how_to_fetch(hub_home):
    """Online mode with the Hub unreachable (a closed local port): cached ids still resolve, others fail
    with one line; huggingface_hub reads its settings at import, hence a child process."""
    code = ("import sys; from data_prep.hub import resolve, HubError\n"
            "print(resolve(sys.argv[1], '--model'))\n"
            "try:\n    resolve('test-org/not-cached', '--model')\n"
            "except HubError as e:\n    print('ERR', e)\n")
    env = procs.child_env(HF_HOME=hub_home, HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0",
                          HF_ENDPOINT=f"http://127.0.0.1:{procs.free_port()}", HF_HUB_ETAG_TIMEOUT="5",
                          HF_HUB_DOWNLOAD_TIMEOUT="5")
    cp = procs.run([sys.executable, "-c", code, ID], timeout=120, env=env)
    lines = cp.stdout.strip().splitlines()
    assert lines[-2].endswith("/snapshots/0123456789abcdef0123456789abcdef01234567"), cp.stdout
    assert lines[-1].startswith("ERR --model test-org/not-cached: no such local folder, and Hub model "
                                "test-org/not-cached could not be fetched (")
    assert "fetch it with `hf download test-org/not-cached`" in lines[-1]


def test_build_tokenizer_by_hub_id_matches_the_local_folder(hub_home, tmp_path, minilm_dir, capsys):
    outs = {}
    for name, tok in (("hub", ID), ("local", str(minilm_dir))):
        outs[name] = tmp_path / name
        assert prep_main(["build", "--corpus", str(CORPUS), "--tokenizer", tok, "--out", str(outs[name]),
                          "--max-seq-len", "64", "--seed", "0", "--workers", "1", "--quiet"]) == 0
    hub, local = (json.loads((outs[k] / "manifest.json").read_text()) for k in ("hub", "local"))
    assert hub["tokenizer"]["vocab_sha256"] == local["tokenizer"]["vocab_sha256"]
    assert [s["sha256"] for s in hub["shards"]] == [s["sha256"] for s in local["shards"]]
    assert prep_main(["build", "--corpus", str(CORPUS), "--tokenizer", "test-org/absent", "--out",
                      str(tmp_path / "x"), "--workers", "1", "--quiet"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert "--tokenizer test-org/absent: no such local folder" in err[-1]
    assert "`hf download test-org/absent`" in err[-1]
