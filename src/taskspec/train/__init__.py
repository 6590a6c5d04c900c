"""Training: feature caches, drafter training, checkpoints."""
