"""LinkBERT pretraining system: data preparation, DeepSpeed pretraining, launching, fine-tuning."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _reqs(name):
    out = []
    for line in (HERE / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-r"):
            out.append(line)
    return out


setup(
    name="linkbert-system",
    version="0.1.0",
    description="Pretrain LinkBERT-style models on linked corpora and fine-tune them",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["data_prep*", "pretrain*", "finetune*", "launch*"]),
    package_data={"data_prep": ["corpora/*"], "": ["*.json"]},
    data_files=[("share/linkbert/ds_configs", [str(p) for p in sorted((HERE / "ds_configs").glob("*.json"))])],
    install_requires=_reqs("requirements.txt"),
    extras_require={
        # MPI-parallel data preparation (MPICH from PyPI; any system MPI works with mpi4py alone).
        "mpi": ["mpi4py==4.1.2", "mpich==5.0.2"],
        # Triton kernels (run on CUDA; on CPU only under TRITON_INTERPRET=1 for tests).
        "triton": ["triton==3.9.0"],
        # GPU-only accelerations, picked up automatically when importable. Triton comes with the CUDA torch
        # wheel (torch 2.13.0 requires triton 3.7.1): pinning another here would make the install unsolvable.
        "gpu": ["flash-attn==2.8.3"],
        "dev": ["pytest==9.2.0", "pytest-timeout==2.4.0", "ruff==0.17.6", "mpi4py==4.1.2", "mpich==5.0.2",
                "triton==3.9.0"],
    },
    entry_points={
        "console_scripts": [
            "linkbert-prep=data_prep.cli:entry",
            "linkbert-pretrain=pretrain.cli:entry",
            "linkbert-export=pretrain.export:main",
            "linkbert-finetune=finetune.cli:entry",
            "linkbert-launch=launch.cli:main",
            "linkbert-eval=finetune.eval_cli:main",
        ]
    },
)
