"""Small helpers shared by every command: user-facing errors, the data root, reproducibility."""
