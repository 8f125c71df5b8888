"""Train a BERT WordPiece vocabulary on a corpus (as BioLinkBERT used its own PubMed vocabulary).

The result is a Hugging Face tokenizer folder (BertTokenizerFast: tokenizer.json, vocab.txt, config)
that `AutoTokenizer.from_pretrained` and `linkbert-prep build --tokenizer` load offline.

Not reproducible bit for bit: the `tokenizers` trainer (0.23) breaks ties between equally frequent merges
in hash-map order (huggingface/tokenizers#1794), so two runs on one corpus can differ in their rarest
tokens. Train once and keep the folder; its vocabulary sha256 (printed here) is what the manifest,
checkpoints and the start-up checks compare, so a dataset and a model of different vocabularies are
refused rather than mixed.
"""
from __future__ import annotations

import sys
from pathlib import Path

from data_prep.corpus import CorpusIndex, iter_documents
from data_prep.errors import PrepError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def add_arguments(p) -> None:
    p.add_argument("--corpus", nargs="+", required=True, help="corpus JSONL files (.gz/.bz2) or directories")
    p.add_argument("--out", required=True, help="tokenizer directory to write")
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--lowercase", action="store_true", help="lowercase and strip accents (uncased model)")
    p.add_argument("--min-frequency", type=int, default=2)
    p.add_argument("--skip-bad-lines", action="store_true", help="skip (and count) bad lines instead of failing")


def run(args) -> int:
    info = train_tokenizer(args.corpus, args.out, args.vocab_size, args.lowercase, args.min_frequency,
                           args.skip_bad_lines)
    print(f"linkbert-prep train-tokenizer: vocabulary of {info['vocab_size']} from {info['documents']} "
          f"documents -> {args.out} (vocabulary sha256 {info['vocab_sha256'][:12]})")
    return 0


def train_tokenizer(corpus, out, vocab_size: int = 30522, lowercase: bool = False, min_frequency: int = 2,
                    skip_bad_lines: bool = False) -> dict:
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import WordPiece
    from transformers import BertTokenizerFast

    if vocab_size < len(SPECIALS) + 1:
        raise PrepError(f"--vocab-size {vocab_size}: too small")
    tok = Tokenizer(WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=lowercase, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=SPECIALS, continuing_subword_prefix="##",
                                        show_progress=sys.stderr.isatty())
    index = CorpusIndex(skip_bad_lines=skip_bad_lines)
    count = 0

    def texts():
        nonlocal count
        for _, _, text, _ in iter_documents(corpus, skip_bad_lines, index):
            count += 1
            yield text

    tok.train_from_iterator(texts(), trainer=trainer)
    if count == 0:
        raise PrepError(f"{', '.join(map(str, corpus))}: no documents to train on")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = BertTokenizerFast(tokenizer_object=tok, do_lower_case=lowercase, unk_token="[UNK]", sep_token="[SEP]",
                             pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]", model_max_length=512)
    Path(out).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    # vocab.txt too: tools that read a BERT vocabulary directly (and the manifest's vocab hash) expect it.
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    (Path(out) / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
    from data_prep.verify import tokenizer_vocab_sha256
    return {"vocab_size": tok.get_vocab_size(), "documents": count, "vocab_sha256": tokenizer_vocab_sha256(out),
            "skipped": {k: v for k, v in index.skipped.items() if v}}
