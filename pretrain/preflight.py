"""Start-up checks of a pretraining run: everything that can be wrong with its inputs, found before step 1.

A run costs GPU-hours; a dataset and a model that disagree, or a damaged shard, must end in one line
naming the file and the fix in seconds, not train silently or die hours in. ``preflight(cfg)`` runs
every check below and returns a report (``linkbert-pretrain --dry-run`` prints it); the trainer raises
its first problem before it builds the engine.

- vocabulary identity: the manifest's vocabulary hash against the tokenizer of --init-from, of
  --data.tokenizer and of the checkpoint a rerun resumes from (same size is not enough);
- shards: size and pair count always, sha256 with ``data.verify=full`` (data_prep.verify);
- held-out pairs fewer than the data holds; batch arithmetic; output writable with room for a checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data_prep.errors import PrepError
from data_prep.shards import Manifest
from data_prep.verify import (
    VerifyReport,
    manifest_attrs,
    manifest_problems,
    tokenizer_vocab_sha256,
    verify_shards,
)
from pretrain.config import ConfigError, RunConfig, check_batch
from pretrain.errors import PretrainError
from pretrain.storage import (
    CHECKPOINT_BYTES_PER_PARAM,
    EXPORT_BYTES_PER_PARAM,
    StorageError,
    check_free_space,
    check_writable,
    free_bytes,
    human,
    mount_point,
)


class PreflightError(PretrainError):
    """A start-up check failed; the message names the file or value and the fix."""


@dataclass
class PreflightReport:
    """``lines``: what was checked, one line each (printed by --dry-run); ``problems``: the errors found
    (first one raised by the trainer); ``notes``: what could not be checked and why."""
    lines: list[str] = field(default_factory=list)
    problems: list[PretrainError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    vocab_sha256: str | None = None   # the data's vocabulary (for the checkpoint's run.json)
    model_config: dict | None = None  # the config of the model this run builds (check_model)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, err: PretrainError | str) -> None:
        self.problems.append(err if isinstance(err, PretrainError) else PreflightError(err))

    def raise_first(self) -> None:
        if self.problems:
            raise self.problems[0]

    def text(self) -> str:
        out = list(self.lines) + [f"note: {n}" for n in self.notes]
        out += [f"problem: {p}" for p in self.problems]
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------- datasets

@dataclass
class DatasetInfo:
    path: Path
    manifest: Manifest
    vocab_sha256: str | None      # from the manifest, else from its tokenizer copy (older builds)

    @property
    def pairs(self) -> int:
        return self.manifest.num_pairs


def load_datasets(paths: list[str], report: PreflightReport) -> list[DatasetInfo]:
    out = []
    for p in paths:
        try:
            m = Manifest.read(p)
        except PrepError as e:
            report.problem(str(e))
            continue
        h = m.vocab_sha256
        if not h:
            copy = m.tokenizer_copy()
            h = tokenizer_vocab_sha256(copy) if copy.is_dir() else None
            if h:
                report.notes.append(f"{p}/manifest.json has no vocabulary hash (older linkbert-prep): using "
                                    f"the hash of its tokenizer copy {copy}")
        out.append(DatasetInfo(Path(p), m, h))
        report.lines.append(f"data {p}: {len(m.shards)} shard(s), {m.num_pairs} pairs, max_seq_len "
                            f"{m.max_seq_len}, vocabulary {m.tokenizer_name} ({m.vocab_size or '?'} "
                            f"tokens, sha256 {(h or 'unknown')[:12]})")
    return out


def check_vocab(datasets: list[DatasetInfo], sources: dict[str, str | Path | None]) -> list[str]:
    """Problems (one line each) where a tokenizer's vocabulary is not the one the data was built with.

    ``sources``: what names a tokenizer folder ("--init-from", "--data.tokenizer") -> folder or None.
    A folder without tokenizer files cannot be compared and is skipped (see ``vocab_notes``)."""
    problems = []
    hashes = {d.vocab_sha256 for d in datasets if d.vocab_sha256}
    if len(hashes) > 1:
        desc = ", ".join(f"{d.path} ({(d.vocab_sha256 or 'unknown')[:12]})" for d in datasets)
        problems.append(f"the datasets were built with different vocabularies: {desc}; mix only data built with "
                        "one tokenizer")
        return problems
    want = next(iter(hashes), None)
    for what, folder in sources.items():
        if not folder:
            continue
        if not Path(folder).is_dir():
            problems.append(f"{what} {folder}: no such folder")
            continue
        got = tokenizer_vocab_sha256(folder)
        if got is None:
            continue
        if want is None:
            names = ", ".join(str(d.path) for d in datasets)
            problems.append(f"{names}: the manifest records no vocabulary hash and the dataset has no tokenizer "
                            f"copy (built by an older linkbert-prep), so {what} {folder}'s vocabulary cannot be "
                            "checked against the data; rebuild the data with `linkbert-prep build`")
        elif got != want:
            problems.append(f"{what} {folder}: its vocabulary (sha256 {got[:12]}) is not the one the data was built "
                            f"with (sha256 {want[:12]}, {datasets[0].path}/manifest.json); the token ids would "
                            f"mean other words: rebuild the data with --tokenizer {folder}, or use the matching model")
    return problems


def check_resume(output: str | Path, datasets: list[DatasetInfo], vocab_size: int | None) -> tuple[list[str], str]:
    """(problems, a line) for the checkpoint a rerun with this --output would resume from."""
    from pretrain import checkpoint as ckpt
    last = ckpt.latest_complete(output)
    if last is None:
        return [], f"resume: none (no complete checkpoint in {ckpt.ckpt_root(output)}): a fresh start"
    try:
        meta = ckpt.read_meta(last)
    except PretrainError as e:
        return [str(e)], f"resume: {last} (unreadable)"
    want = next((d.vocab_sha256 for d in datasets if d.vocab_sha256), None)
    got, where = meta.get("vocab_sha256"), f"{last}/run.json"
    if not got:
        got, where = tokenizer_vocab_sha256(last), f"the tokenizer files in {last}"
    line = f"resume: step {meta.get('step')} from {last}"
    refuse = (f"resuming {output} from {last} on data built with another vocabulary is refused: the run trained "
              "on token ids of the other vocabulary; resume with the data the run started with, or start a new "
              "--output (from this run's HF export with --init-from after rebuilding the data)")
    if got and want:
        if got != want:
            return [f"{where}: vocabulary sha256 {got[:12]} differs from the data's {want[:12]}; {refuse}"], line
        return [], line + " (same vocabulary)"
    saved = (meta.get("model_config") or {}).get("vocab_size")
    if saved is not None and vocab_size is not None and int(saved) != int(vocab_size):
        return [f"{last}: the model has a {saved}-token vocabulary, the data {vocab_size}; {refuse}"], line
    return [], line + " (vocabulary not recorded: sizes agree)"


def check_held_out(held_out: int, total_pairs: int, paths) -> str | None:
    if held_out >= total_pairs:
        return (f"data.held_out={held_out} but {', '.join(map(str, paths))} hold(s) only {total_pairs} pairs, which "
                f"leaves none to train on; lower --data.held_out (e.g. {max(0, total_pairs // 10)}) or build more data")
    return None


def check_shards(datasets: list[DatasetInfo], mode: str, part: tuple[int, int] = (0, 1),
                 workers: int | None = None) -> VerifyReport:
    shards = [s for d in datasets for s in d.manifest.shards]
    expect = [manifest_attrs(d.manifest) for d in datasets for _ in d.manifest.shards]
    return verify_shards(shards, mode, workers, part, expect)


# ------------------------------------------------------------------------------------ model and output

def check_model(cfg: RunConfig, vocab_size: int, max_seq_len: int | None,
                report: PreflightReport | None = None) -> tuple[int | None, list[str], str]:
    """(parameters, problems, a line) for the model the run will train, built on the meta device (no
    memory, no weights read): its vocabulary size and positions against the data's. Its config goes to
    ``report.model_config`` (what a resumed checkpoint's is compared with)."""
    import torch

    from pretrain.modeling import LinkBertForPreTraining, model_config
    spec = cfg.model.init_from or cfg.model.name
    what = f"--init-from {spec}" if cfg.model.init_from else f"model {spec}"
    try:
        mc = model_config(spec) if cfg.model.init_from else model_config(spec, vocab_size=vocab_size)
    except PretrainError as e:
        return None, [str(e)], f"model: {what} (unreadable)"
    problems = []
    if report is not None:
        report.model_config = mc.to_dict()
    if mc.vocab_size != vocab_size:
        problems.append(f"{what} has vocab_size {mc.vocab_size} but the data was built with a {vocab_size}-token "
                        "vocabulary; rebuild the data with that model's tokenizer")
    if max_seq_len and mc.max_position_embeddings < max_seq_len:
        problems.append(f"{what} has {mc.max_position_embeddings} positions but the data's max_seq_len is "
                        f"{max_seq_len}; rebuild the data with --max-seq-len {mc.max_position_embeddings}")
    with torch.device("meta"):
        params = sum(p.numel() for p in LinkBertForPreTraining(mc).parameters())
    return params, problems, (f"model: {what}, {params / 1e6:.1f}M parameters, {mc.max_position_embeddings} "
                              f"positions, vocab {mc.vocab_size}")


def checkpoint_bytes(output: str | Path, params: int | None) -> int | None:
    """Bytes the next checkpoint will take: the newest complete one's size, else an estimate from params."""
    from pretrain import checkpoint as ckpt
    last = ckpt.latest_complete(output)
    if last is not None:
        return ckpt.folder_bytes(last)
    return params * CHECKPOINT_BYTES_PER_PARAM if params else None


def check_output(output: str | Path, need: int | None) -> tuple[list[PretrainError], str]:
    try:
        check_writable(output)
        line = f"output {output}: writable, {human(free_bytes(output))} free on {mount_point(output)}"
        if need:
            check_free_space(output, need, "a checkpoint and the final export")
            line += f"; a checkpoint and the export need about {human(need)}"
        return [], line
    except StorageError as e:
        return [e], f"output {output}: not usable"


def devices_line(world: int) -> str:
    try:
        import torch
        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            return f"devices: {n} x {torch.cuda.get_device_name(0)} visible to this process; world {world}"
    except Exception:  # noqa: BLE001 -- a report line only
        pass
    return f"devices: CPU (no CUDA device visible); world {world}"


# --------------------------------------------------------------------------------------------- all

def preflight(cfg: RunConfig, rank: int = 0, world: int = 1, workers: int | None = None,
              hash_share: tuple[int, int] | None = None) -> PreflightReport:
    """Every start-up check. Collective-free: by default rank r hashes shards r, r+world, ...
    (``hash_share=(rank, world)``; ``agree`` combines the ranks' problems); ``(0, 1)`` hashes all."""
    report = PreflightReport()
    d, t = cfg.data, cfg.train
    try:
        gb = check_batch(cfg, world)
        report.lines.append(f"batch: micro {t.micro_batch_size} x accum {t.grad_accum} x world {world} = {gb} "
                            f"pairs/step, {t.max_steps} steps")
    except ConfigError as e:
        report.problem(e)
        gb = None
    report.lines.append(devices_line(world))
    if t.output:   # checkpoints must not land in a dataset (nor a dataset sit in a run folder)
        from pretrain.run_guard import folder_problems
        for p in folder_problems(t.output, d.paths):
            report.problem(p)
    datasets = load_datasets(d.paths, report)
    if not datasets:
        return report
    report.vocab_sha256 = next((x.vocab_sha256 for x in datasets if x.vocab_sha256), None)
    sources = {"--init-from": cfg.model.init_from, "--data.tokenizer": d.tokenizer}
    for p in check_vocab(datasets, sources):
        report.problem(p)
    compared = []
    for what, folder in sources.items():
        if folder and Path(folder).is_dir():
            if tokenizer_vocab_sha256(folder) is None:
                report.notes.append(f"{what} {folder} has no tokenizer files: its vocabulary cannot be compared "
                                    "(only its size is)")
            else:
                compared.append(f"{what} {folder}")
    if not report.problems:
        report.lines.append("vocabulary: " + (f"the data's is the one of {', '.join(compared)}" if compared
                                              else "only the data's (no other tokenizer named)"))
    share = hash_share or (rank, world)
    vr = check_shards(datasets, d.verify, share, workers)
    report.lines.append(f"shards: {vr.summary()}" + (f" (this rank hashed 1/{share[1]} of them)" if share[1] > 1
                                                       and d.verify == "full" else ""))
    report.notes.extend(vr.notes)
    for p in vr.problems:
        report.problem(p)
    dataset_problems(datasets, d.ignore_unlisted, report)
    total = sum(x.pairs for x in datasets)
    p = check_held_out(d.held_out, total, [x.path for x in datasets])
    if p:
        report.problem(p)
    else:
        train_pairs = total - d.held_out
        report.lines.append(f"held-out: {d.held_out} of {total} pairs; {train_pairs} train"
                            + (f", {train_pairs / gb:.1f} steps/epoch" if gb else ""))
    vocab_size, max_seq_len = data_shape(datasets[0])
    params = None
    if vocab_size:
        params, probs, line = check_model(cfg, vocab_size, max_seq_len, report)
        report.lines.append(line)
        for x in probs:
            report.problem(x)
    if t.output:
        guard_output(cfg, rank, report)
        probs, line = check_resume(t.output, datasets, vocab_size)
        report.lines.append(line)
        for x in probs:
            report.problem(x)
        if not probs:   # the vocabulary already differs: one line is enough
            resume_settings(cfg, gb, report)
        ck = checkpoint_bytes(t.output, params)
        need = ck + (params or 0) * EXPORT_BYTES_PER_PARAM if ck else None
        errs, line = check_output(t.output, need)
        report.lines.append(line)
        report.problems.extend(errs)
    return report


def dataset_problems(datasets: list[DatasetInfo], ignore_unlisted: bool, report: PreflightReport) -> None:
    """Manifest totals that do not add up, and shard files the manifest does not name (refused unless
    data.ignore_unlisted)."""
    for ds in datasets:
        for p in manifest_problems(ds.manifest):
            if "not named in" in p and ignore_unlisted:
                report.notes.append(p.split(";")[0] + "; ignored (data.ignore_unlisted)")
            elif "not named in" in p:
                report.problem(p + " (or pass --data.ignore_unlisted=true to train on the named shards only)")
            else:
                report.problem(p)


def guard_output(cfg: RunConfig, rank: int, report: PreflightReport) -> None:
    """Rank 0 (and --dry-run): who holds the lock of --output."""
    from pretrain import run_guard
    if rank == 0:
        probs, line = run_guard.lock_line(cfg.train.output)
        report.lines.append(line)
        for p in probs:
            report.problem(p)


def resume_settings(cfg: RunConfig, gb: int | None, report: PreflightReport) -> None:
    """The model shape and global batch of the checkpoint a rerun resumes from, against this config."""
    from pretrain import checkpoint as ckpt
    from pretrain import run_guard
    last = ckpt.latest_complete(cfg.train.output)
    if last is None:
        return
    try:
        meta = ckpt.read_meta(last)
    except PretrainError:
        return   # reported by check_resume
    what = f"--init-from {cfg.model.init_from}" if cfg.model.init_from else f"model {cfg.model.name}"
    probs, warns = run_guard.settings_problems(last, meta, report.model_config, gb, what)
    for p in probs:
        report.problem(p)
    report.notes.extend(warns)


def data_shape(ds: DatasetInfo) -> tuple[int | None, int | None]:
    """(vocab_size, max_seq_len) of a dataset: its manifest, else its first shard's attributes."""
    m = ds.manifest
    vocab, seq = m.vocab_size, m.max_seq_len
    if vocab is None and m.shards:
        import h5py
        try:
            with h5py.File(m.shards[0].path, "r") as f:
                vocab = int(f.attrs["vocab_size"])
                seq = seq or int(f.attrs["max_seq_len"])
        except (OSError, KeyError):   # a damaged shard: reported by the shard check
            pass
    return (int(vocab) if vocab else None), (int(seq) if seq else None)


def agree(report: PreflightReport, dist) -> PreflightReport:
    """Collective: every rank gets every rank's problems (in rank order), so all ranks raise the same
    first line and none waits in a collective for a rank that stopped."""
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, [(type(p).__name__, str(p)) for p in report.problems])
    seen, merged = set(), []
    for probs in gathered:
        for kind, msg in probs or []:
            if msg not in seen:
                seen.add(msg)
                merged.append(ConfigError(msg) if kind == "ConfigError" else PreflightError(msg))
    report.problems = merged
    return report



def check_or_raise(cfg: RunConfig, rank: int = 0, world: int = 1, dist=None, log=None) -> PreflightReport:
    """What the trainer calls on every rank before it builds the data loader and the engine: run the
    checks (this rank hashes its share of the shards), combine the ranks' problems when ``dist`` is
    given, log the report on rank 0, and raise the first problem on every rank."""
    report = preflight(cfg, rank, world)
    if dist is not None and world > 1:
        agree(report, dist)
    if log is not None and rank == 0:
        for line in report.lines:
            log.info("preflight: %s", line)
        for note in report.notes:
            log.warning("preflight: %s", note)
    report.raise_first()
    return report
