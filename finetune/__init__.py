"""Fine-tuning on GLUE and SQuAD v1.1: tasks, metrics, splits, batching and per-epoch records."""
