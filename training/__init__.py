"""Training: the shared loop (loop.py), optimizers, schedules, precision, DDP, checkpoints, monitoring."""
