"""A Hugging Face Hub cache laid out by hand, so Hub ids resolve offline and nothing is downloaded.

The layout huggingface_hub and transformers read: `HF_HOME/hub/models--ORG--NAME/snapshots/<40-hex commit>/`
holding the files (links here, as the real cache links into blobs/), and `refs/main` holding the commit.
"""
from __future__ import annotations

from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def lay_out_hub_cache(hf_home: Path, repo_id: str, src: Path, files: list[str] | None = None,
                      commit: str = COMMIT) -> Path:
    """Put `src`'s files (or only `files`) into the cache under `hf_home` as `repo_id`; the snapshot path."""
    repo = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in sorted(Path(src).iterdir()):
        if f.is_file() and (files is None or f.name in files):
            (snap / f.name).symlink_to(f.resolve())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snap
