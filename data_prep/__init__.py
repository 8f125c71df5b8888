"""Corpus conversion and LinkBERT pair preparation (SPEC sections 2-3)."""
