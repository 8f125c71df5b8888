"""The prepared-dataset contract (SPEC section 3): one place that both the preparer and the loader import.

A shard is an HDF5 file; row i of every dataset describes one training pair ``[CLS] A [SEP] B [SEP]``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from data_prep.errors import PrepError

FORMAT = "linkbert-pairs"
VERSION = 1
MANIFEST = "manifest.json"
DOCS = "docs.jsonl"
# A tokenizer's files: what a build copies next to its shards, a checkpoint keeps and an export ships.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "added_tokens.json")

# Relation label ids: the values of `pair_labels` and the rows of the model's relation head
# (pretrain.presets imports these; nothing else defines them).
CONTIGUOUS, RANDOM, LINKED = 0, 1, 2
RELATION_NAMES = ("contiguous", "random", "linked")  # indexed by label id
NUM_RELATIONS = len(RELATION_NAMES)

# dataset name -> dtype (None: chosen from the data, see token_dtype / doc_dtype)
DATASETS = ("input_ids", "seq_lens", "a_lens", "pair_labels", "anchor_doc", "partner_doc", "anchor_seg",
            "partner_seg")
FILE_ATTRS = ("format", "version", "max_seq_len", "vocab_size", "cls_id", "sep_id", "pad_id", "mask_id")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.int32)


def doc_dtype(num_docs: int) -> np.dtype:
    return np.dtype(np.int32) if num_docs < 2**31 else np.dtype(np.int64)


@dataclass(frozen=True)
class SpecialIds:
    vocab_size: int
    cls_id: int
    sep_id: int
    pad_id: int
    mask_id: int


def write_shard(path: str | Path, arrays: dict[str, np.ndarray], max_seq_len: int, special: SpecialIds,
                num_docs: int, compression: str | None = "gzip", compression_level: int = 4) -> str:
    """Write one shard; returns its sha256. ``arrays`` holds every name in DATASETS, equal lengths."""
    missing = [k for k in DATASETS if k not in arrays]
    if missing:
        raise ValueError(f"shard {path}: missing datasets {missing}")
    n = len(arrays["seq_lens"])
    want = {
        "input_ids": token_dtype(special.vocab_size), "seq_lens": np.int32, "a_lens": np.int32,
        "pair_labels": np.int8, "anchor_doc": doc_dtype(num_docs), "partner_doc": doc_dtype(num_docs),
        "anchor_seg": np.int32, "partner_seg": np.int32,
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        for name in DATASETS:
            a = np.asarray(arrays[name])
            if len(a) != n:
                raise ValueError(f"shard {path}: dataset {name} has {len(a)} rows, expected {n}")
            if name == "input_ids" and a.shape[1:] != (max_seq_len,):
                raise ValueError(f"shard {path}: input_ids shape {a.shape}, expected [N, {max_seq_len}]")
            kw = {}
            if compression and n:
                kw = {"compression": compression, "compression_opts": compression_level, "shuffle": True}
                if name == "input_ids":
                    kw["chunks"] = (min(n, max(1, (1 << 18) // (max_seq_len * a.itemsize))), max_seq_len)
            f.create_dataset(name, data=a.astype(want[name], copy=False), **kw)
        f.attrs.update({"format": FORMAT, "version": VERSION, "max_seq_len": max_seq_len,
                        "vocab_size": special.vocab_size, "cls_id": special.cls_id, "sep_id": special.sep_id,
                        "pad_id": special.pad_id, "mask_id": special.mask_id})
    tmp.replace(path)
    return sha256_file(path)


def sha256_file(path: str | Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


class ShardError(PrepError, ValueError):
    """A prepared dataset that does not follow SPEC section 3."""


def check_shard_attrs(path: str | Path, attrs) -> dict:
    got = {k: attrs.get(k) for k in FILE_ATTRS}
    if got["format"] != FORMAT:
        raise ShardError(f"{path}: attribute format={got['format']!r}, expected {FORMAT!r}; "
                         "prepare it with `linkbert-prep build`")
    if int(got["version"]) != VERSION:
        raise ShardError(f"{path}: shard version {got['version']} is not supported (this code reads {VERSION})")
    return {k: (v if k == "format" else int(v)) for k, v in got.items()}


def manifest_tokenizer(manifest: dict) -> dict:
    """The manifest's tokenizer record: name, source, path (its copy in the dataset), vocab_size,
    vocab_sha256; {} for a manifest without one."""
    tok = manifest.get("tokenizer")
    return tok if isinstance(tok, dict) else {}


def has_tokenizer(folder: str | Path | None) -> bool:
    """Whether ``folder`` holds a tokenizer (any of TOKENIZER_FILES)."""
    return bool(folder) and Path(folder).is_dir() and any((Path(folder) / n).is_file() for n in TOKENIZER_FILES)


def tokenizer_copy(dataset_dir: str | Path, manifest: dict) -> Path:
    """Where the dataset keeps its copy of the tokenizer it was built with (may be missing)."""
    return Path(dataset_dir) / manifest_tokenizer(manifest).get("path", "tokenizer")


def tokenizer_dir(dataset_dir: str | Path, manifest: dict) -> Path | None:
    """The dataset's tokenizer folder: its copy, else the folder it was built from; None if neither is there."""
    for cand in (tokenizer_copy(dataset_dir, manifest), manifest_tokenizer(manifest).get("source")):
        if has_tokenizer(cand):
            return Path(cand)
    return None


def load_manifest(dataset_dir: str | Path) -> dict:
    """Read and check ``DIR/manifest.json``; shard paths are returned absolute."""
    d = Path(dataset_dir)
    mpath = d / MANIFEST
    if not mpath.is_file():
        raise ShardError(f"{d}: no {MANIFEST}; is this the --out folder of `linkbert-prep build`?")
    try:
        m = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise ShardError(f"{mpath}: not valid JSON ({e}); re-run `linkbert-prep build`") from e
    if m.get("format") != FORMAT or m.get("version") != VERSION:
        raise ShardError(f"{mpath}: format/version {m.get('format')!r}/{m.get('version')!r}, "
                         f"expected {FORMAT!r}/{VERSION}")
    for s in m.get("shards", []):
        p = Path(s["path"])
        s["path"] = str(p if p.is_absolute() else d / p)
        if not Path(s["path"]).is_file():
            raise ShardError(f"{mpath}: shard {s['path']} is missing")
    return m
