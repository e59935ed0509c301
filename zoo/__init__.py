"""Model zoos: a population of BERTs trained over a hyper-parameter grid, with a manifest, a loader and
weight-space analyses. Command line: zoo.py (plan, run, slurm, status, manifest, analyze).

  spec.py      the zoo spec (configs/zoo/*.json): parsing, validation, path resolution
  plan.py      the grid expanded into runs and model states; shards; disk and compute estimates
  runner.py    executes runs through train_pretrain.py / train_finetune.py (resumable, workers)
  slurm.py     an sbatch job array, one shard per array task
  manifest.py  one row per model state, rebuilt from the run folders (JSONL + CSV)
  loader.py    iterate states, flatten / unflatten weights, a torch Dataset with a model-level split
  evaluate.py  re-evaluate a stored state with the engines' own evaluation code
  analyses.py  prediction agreement, per-layer weight statistics, ridge prediction of accuracy
  sparsify.py  magnitude sparsification (global / per layer) and the sparse twins' evaluation
"""
