"""A rank whose master never comes gives up after LINKBERT_RENDEZVOUS_TIMEOUT with one line naming it."""
import time

from tests.procs import VENV_BIN, child_env, free_port, run


def test_pretrain_rank_without_master_fails_naming_address(tmp_path, minilm_dir):
    port = free_port()  # nothing listens here
    env = child_env(RANK=1, WORLD_SIZE=2, LOCAL_RANK=0, MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                    LINKBERT_RENDEZVOUS_TIMEOUT=3)
    t0 = time.time()
    cp = run([str(VENV_BIN / "linkbert-pretrain"), "--data", str(tmp_path / "unused"), "--output",
              str(tmp_path / "run"), "--model", "tiny", "--max-steps", "1"], timeout=120, env=env, check=False)
    assert cp.returncode != 0
    assert f"127.0.0.1:{port}" in cp.stdout, cp.stdout[-3000:]
    assert "Traceback" not in cp.stdout, cp.stdout[-3000:]
    assert time.time() - t0 < 90
