"""LinkBERT fine-tuning on Hugging Face checkpoints (SPEC section 6)."""
