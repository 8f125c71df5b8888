"""The prepared-dataset contract (docs/formats.md sections 3-4): one place that both the preparer and the loader import.

A shard is an HDF5 file; row i of every dataset describes one training pair ``[CLS] A [SEP] B [SEP]``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np

from data_prep.errors import PrepError

FORMAT = "linkbert-pairs"
VERSION = 1
MANIFEST = "manifest.json"
DOCS = "docs.jsonl"
GRAPH = "graph.npz"
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
    """A prepared dataset that does not follow docs/formats.md section 3."""


def check_shard_attrs(path: str | Path, attrs) -> dict:
    got = {k: attrs.get(k) for k in FILE_ATTRS}
    if got["format"] != FORMAT:
        raise ShardError(f"{path}: attribute format={got['format']!r}, expected {FORMAT!r}; "
                         "prepare it with `linkbert-prep build`")
    if int(got["version"]) != VERSION:
        raise ShardError(f"{path}: shard version {got['version']} is not supported (this code reads {VERSION})")
    return {k: (v if k == "format" else int(v)) for k, v in got.items()}


@dataclass(frozen=True)
class TokenizerRecord:
    """The tokenizer a dataset was built with: ``path`` is its copy inside the dataset folder, ``source``
    the folder (or Hub id) it was copied from; ``vocab_sha256`` is None in builds older than the hash."""
    name: str | None = None
    source: str | None = None
    path: str = "tokenizer"
    vocab_size: int | None = None
    vocab_sha256: str | None = None


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest lists it: ``path`` relative to the dataset folder as written, absolute
    once read through ``Manifest.read``; ``size`` is None in builds that did not record it."""
    path: str
    num_pairs: int
    sha256: str | None = None
    size: int | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Manifest:
    """``manifest.json`` of a prepared dataset (docs/formats.md section 4), typed.

    ``build`` makes one and writes it; every reader goes through ``Manifest.read``, which checks the
    file and names the field that is wrong. Fields that older builds (or hand-made test datasets) lack
    are None / empty rather than errors: readers say what they could not check."""
    shards: list[ShardEntry]
    max_seq_len: int | None = None
    seed: int | None = None
    tokenizer: TokenizerRecord | None = None
    special_ids: SpecialIds | None = None
    options: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    docs: str = DOCS
    graph: str = GRAPH
    # Where the links came from, per corpus file that `linkbert-prep links` made: {"corpus", "method", "k",
    # "model", "merge", "edges", "exact"}. Empty: the corpora's own links (and manifests older than the field).
    link_sources: list = field(default_factory=list)
    folder: Path | None = None           # where it was read from (not written)
    timings_s: dict | None = None        # phase times of the build that made it (returned, not written)

    # ------------------------------------------------------------------------------------- reading
    @classmethod
    def read(cls, dataset_dir: str | Path, shards_must_exist: bool = True) -> Manifest:
        """Read and check ``DIR/manifest.json``; shard paths come back absolute and, unless told otherwise
        (a reader that needs only the tokenizer record), must exist."""
        d = Path(dataset_dir)
        mpath = d / MANIFEST
        if not mpath.is_file():
            raise ShardError(f"{d}: no {MANIFEST}; is this the --out folder of `linkbert-prep build`?")
        try:
            raw = json.loads(mpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ShardError(f"{mpath}: not valid JSON ({e}); re-run `linkbert-prep build`") from e
        m = cls.from_dict(raw, where=mpath).located(d)
        for s in m.shards if shards_must_exist else ():
            if not Path(s.path).is_file():
                raise ShardError(f"{mpath}: shard {s.path} is missing")
        return m

    def located(self, folder: str | Path) -> Manifest:
        """This manifest as the one of ``folder``: ``folder`` set, shard paths absolute under it."""
        d = Path(folder)
        self.folder = d
        self.shards = [replace(s, path=str(Path(s.path) if Path(s.path).is_absolute() else d / s.path))
                       for s in self.shards]
        return self

    @classmethod
    def from_dict(cls, raw, where: str | Path = MANIFEST) -> Manifest:
        if not isinstance(raw, dict):
            raise ShardError(f"{where}: not a JSON object; re-run `linkbert-prep build`")
        if raw.get("format") != FORMAT or raw.get("version") != VERSION:
            raise ShardError(f"{where}: format/version {raw.get('format')!r}/{raw.get('version')!r}, "
                             f"expected {FORMAT!r}/{VERSION}")

        def bad(field_name: str, want: str):
            return ShardError(f"{where}: field {field_name} must be {want}; re-run `linkbert-prep build`")

        def opt_int(name, value):
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(name, "a non-negative integer")
            return value

        shards_raw = raw.get("shards")
        if not isinstance(shards_raw, list):
            raise bad("shards", "a list")
        shards = []
        for i, s in enumerate(shards_raw):
            if not isinstance(s, dict) or not isinstance(s.get("path"), str) or not s["path"]:
                raise bad(f"shards[{i}].path", "a file name")
            n = opt_int(f"shards[{i}].num_pairs", s.get("num_pairs"))
            if n is None:
                raise bad(f"shards[{i}].num_pairs", "a non-negative integer")
            sha = s.get("sha256")
            if sha is not None and not isinstance(sha, str):
                raise bad(f"shards[{i}].sha256", "a hex string")
            shards.append(ShardEntry(s["path"], n, sha or None, opt_int(f"shards[{i}].size", s.get("size"))))
        tok = raw.get("tokenizer")
        tokenizer = None
        if isinstance(tok, dict):   # very early builds wrote a bare name here: treated as unknown
            fields_ = {k: tok[k] for k in ("name", "source", "path", "vocab_size", "vocab_sha256")
                       if tok.get(k) is not None}
            opt_int("tokenizer.vocab_size", fields_.get("vocab_size"))
            tokenizer = TokenizerRecord(**fields_)
        sp = raw.get("special_ids")
        special = None
        if sp is not None:
            try:
                special = SpecialIds(**{k: int(sp[k]) for k in ("vocab_size", "cls_id", "sep_id", "pad_id", "mask_id")})
            except (TypeError, KeyError, ValueError) as e:
                raise bad("special_ids", "an object with vocab_size, cls_id, sep_id, pad_id, mask_id") from e
        for key in ("options", "stats"):
            if not isinstance(raw.get(key, {}), dict):
                raise bad(key, "an object")
        sources = raw.get("link_sources", [])
        if not isinstance(sources, list) or not all(isinstance(x, dict) for x in sources):
            raise bad("link_sources", "a list of objects")
        return cls(shards=shards, max_seq_len=opt_int("max_seq_len", raw.get("max_seq_len")),
                   seed=opt_int("seed", raw.get("seed")), tokenizer=tokenizer, special_ids=special,
                   options=raw.get("options", {}), stats=raw.get("stats", {}),
                   docs=str(raw.get("docs", DOCS)), graph=str(raw.get("graph", GRAPH)), link_sources=sources)

    # ------------------------------------------------------------------------------------- writing
    def to_dict(self) -> dict:
        """The JSON object of manifest.json (key order fixed: the file is byte-reproducible)."""
        out = {"format": FORMAT, "version": VERSION}
        if self.tokenizer is not None:
            out["tokenizer"] = asdict(self.tokenizer)
        if self.special_ids is not None:
            out["special_ids"] = asdict(self.special_ids)
        for key in ("max_seq_len", "seed"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update({"options": self.options, "docs": self.docs, "graph": self.graph,
                    "shards": [s.to_dict() for s in self.shards], "stats": self.stats})
        if self.link_sources:   # written only when there is one: builds of linked corpora stay byte-identical
            out["link_sources"] = self.link_sources
        return out

    def write(self, dataset_dir: str | Path) -> Path:
        path = Path(dataset_dir) / MANIFEST
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return path

    # ------------------------------------------------------------------------------------- queries
    @property
    def num_pairs(self) -> int:
        return sum(s.num_pairs for s in self.shards)

    @property
    def shard_paths(self) -> list[str]:
        return [s.path for s in self.shards]

    @property
    def tokenizer_name(self) -> str:
        return (self.tokenizer.name if self.tokenizer else None) or "?"

    @property
    def vocab_size(self) -> int | None:
        return self.tokenizer.vocab_size if self.tokenizer else None

    @property
    def vocab_sha256(self) -> str | None:
        return self.tokenizer.vocab_sha256 if self.tokenizer else None

    def _folder(self) -> Path:
        if self.folder is None:
            raise ValueError("this Manifest was not read from a folder (use Manifest.read)")
        return self.folder

    def tokenizer_copy(self) -> Path:
        """Where the dataset keeps its copy of the tokenizer it was built with (may be missing)."""
        return self._folder() / (self.tokenizer.path if self.tokenizer else "tokenizer")

    def tokenizer_dir(self) -> Path | None:
        """The dataset's tokenizer folder: its copy, else the folder it was built from; None if neither is there."""
        for cand in (self.tokenizer_copy(), self.tokenizer.source if self.tokenizer else None):
            if has_tokenizer(cand):
                return Path(cand)
        return None


def has_tokenizer(folder: str | Path | None) -> bool:
    """Whether ``folder`` holds a tokenizer (any of TOKENIZER_FILES)."""
    return bool(folder) and Path(folder).is_dir() and any((Path(folder) / n).is_file() for n in TOKENIZER_FILES)
