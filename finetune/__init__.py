"""LinkBERT fine-tuning on Hugging Face checkpoints (task files and outputs: docs/formats.md sections 7-8)."""
