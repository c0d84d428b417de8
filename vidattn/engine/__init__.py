"""Training, evaluation, checkpoints, distributed set-up, metrics and logging."""
