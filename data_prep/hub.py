"""A model or tokenizer named as on the Hugging Face Hub (`michiyasunaga/BioLinkBERT-base`) or a local folder.

One resolver for every CLI that takes one (`linkbert-prep build --tokenizer`, `linkbert-pretrain
--init-from` and `--data.tokenizer`, `linkbert-finetune --model`), with transformers' rules:
a local folder wins; otherwise the name is a Hub id, downloaded into the Hub cache when online and read
from that cache when offline (`HF_HUB_OFFLINE=1`, or `TRANSFORMERS_OFFLINE=1`); when it is neither,
one line names the id and the command that fetches it. The result is always a local folder, so what
loads it afterwards (transformers, tokenizers, our own readers) never touches the network.
"""
from __future__ import annotations

import os
from pathlib import Path

from data_prep.shards import TOKENIZER_FILES

# What a run needs from a model repository (tokenizer files, config, one copy of the weights), so that
# an online resolve does not also fetch TF/Flax/ONNX exports or a second copy of the weights.
TOKENIZER_PATTERNS = [*TOKENIZER_FILES, "config.json"]
SAFETENSORS_PATTERNS = ["model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
BIN_PATTERNS = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"]


class HubError(Exception):
    """A name that is neither a local folder nor a Hub model that can be had; one line, with the fix."""


def offline() -> bool:
    """Offline mode as huggingface_hub and transformers read it, looked up now (not at import time)."""
    return any(os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> Path:
    """The Hub cache huggingface_hub would use under the current environment."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def looks_like_hub_id(name: str) -> bool:
    """ORG/NAME or NAME with the Hub's characters: not a path written as one (./x, /x, ~/x, a/b/c)."""
    if not name or name.startswith((".", "/", "~")) or "\\" in name:
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve(name: str | os.PathLike, what: str, weights: bool = True) -> Path:
    """A local folder for `name`: the folder itself when it exists, else the Hub snapshot of that id.

    `what` names the option in error messages (e.g. "--model"); `weights=False` fetches only the
    tokenizer files and config.json (for a tokenizer)."""
    name = str(name)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise HubError(f"{what} {name}: a file, not a folder; give a Hugging Face model folder or a Hub id "
                       "such as michiyasunaga/LinkBERT-base")
    if not looks_like_hub_id(name):
        raise HubError(f"{what} {name}: no such folder (and not a Hub id, which is ORG/NAME); give a "
                       "Hugging Face model folder or a Hub id such as michiyasunaga/LinkBERT-base")
    fetch = f"`hf download {name}` (or `huggingface-cli download {name}`)"
    cache = hub_cache_dir()
    if offline():
        snapshot = _snapshot(name, cache, local_only=True, weights=weights)
        if snapshot is None:
            raise HubError(f"{what} {name}: no such local folder, and Hub model {name} is not in the cache "
                           f"{cache} (offline: HF_HUB_OFFLINE=1); fetch it with {fetch} where there is network, "
                           "or give a local folder")
    else:
        try:
            snapshot = _snapshot(name, cache, local_only=False, weights=weights)
        except Exception as e:  # noqa: BLE001 -- network, auth and Hub errors all mean "cannot get it from the Hub"
            raise HubError(f"{what} {name}: no such local folder, and Hub model {name} could not be fetched "
                           f"({type(e).__name__}: {_first_line(e)}); check the id and the network, fetch it with "
                           f"{fetch}, or give a local folder") from None
    if weights and not _has_weights(snapshot):
        raise HubError(f"{what} {name}: the Hub snapshot {snapshot} has no model.safetensors or pytorch_model.bin "
                       f"weights; fetch them with {fetch}")
    return snapshot


def _snapshot(repo_id: str, cache: Path, local_only: bool, weights: bool) -> Path | None:
    """The snapshot folder of `repo_id` with its tokenizer/config (and weights), or None when not had."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    def get(patterns):
        try:
            return Path(snapshot_download(repo_id, cache_dir=str(cache), allow_patterns=patterns,
                                          local_files_only=local_only))
        except (LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
            if local_only:
                return None
            raise

    folder = get(TOKENIZER_PATTERNS + (SAFETENSORS_PATTERNS if weights else []))
    if folder is None or not weights or local_only or _has_weights(folder):
        return folder
    return get(TOKENIZER_PATTERNS + BIN_PATTERNS)   # an older repository: PyTorch .bin weights only


def _has_weights(folder: Path) -> bool:
    return any((folder / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json",
                                                 "pytorch_model.bin", "pytorch_model.bin.index.json"))


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "no details"
