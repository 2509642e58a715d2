"""Training helpers: selectors (optimizers, losses, samplers), metrics, logging, checkpoints, plots."""
