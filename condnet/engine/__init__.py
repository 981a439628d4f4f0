"""Training and evaluation: config files, the training loop, checkpoints, metrics."""
