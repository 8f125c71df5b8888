"""The repository stands alone: no tracked file outside tests/ names a document that is not in it, every
local Markdown link resolves, and docs/formats.md describes the contracts users need."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Documents of the environment this project was written in, which a clone does not have.
OUTSIDE = re.compile(r"\bSPEC\b|LINKBERT\.md|ENVIRONMENT\.md|/work/shared|/work/main")
MD_LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    return [ROOT / p for p in out.decode().split("\0") if p and not p.startswith("tests/")]


def test_no_file_outside_tests_names_a_document_outside_the_repository():
    hits = []
    for path in _tracked():
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:4096]:   # binary (compressed corpora, images)
            continue
        for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert not hits, "references to documents outside the repository (use docs/formats.md, docs/recipes.md):\n" \
        + "\n".join(hits)


def test_local_markdown_links_resolve():
    broken = []
    for path in _tracked():
        if path.suffix != ".md" or not path.is_file():
            continue
        for target in MD_LINK.findall(path.read_text(encoding="utf-8")):
            if "://" not in target and not (path.parent / target).is_file():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_formats_doc_covers_the_contracts():
    text = (ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
    for term in ("manifest.json", "pair_labels", "COMPLETE", "run.json", '"links"', '"answers"', "rng_rank",
                 "fp32_master_weights.pt", "predictions_<split>.json", "0 contiguous, 1 random, 2 linked"):
        assert term in text, term
    # every dataset and file attribute the shard writer produces is documented
    from data_prep.shards import DATASETS, FILE_ATTRS
    for name in DATASETS + FILE_ATTRS:
        assert f"`{name}`" in text, name
    recipes = (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    from pretrain.config import RUN_PRESETS
    for preset in RUN_PRESETS:
        assert f"`{preset}`" in recipes, preset
