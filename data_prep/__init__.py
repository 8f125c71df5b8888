"""Corpus conversion and LinkBERT pair preparation (docs/formats.md sections 1-4)."""
