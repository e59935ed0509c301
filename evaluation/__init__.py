"""Learning-dynamics evaluation: BLiMP zero-shot (PLL), held-out MLM, probing across checkpoints, multi-seed
statistics, and the sweep that runs them over every checkpoint of runs and suites.

Commands: `python -m evaluation.blimp`, `evaluation.mlm`, `evaluation.probing`, `evaluation.multibootstrap`,
`evaluation.sweep`, `evaluation.compare_suites`.
"""
