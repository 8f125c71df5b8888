"""LinkBERT pretraining: HF-compatible model, kernels, data loader, DeepSpeed engine, export."""
