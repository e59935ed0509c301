"""Learning-dynamics evaluation: BLiMP zero-shot (PLL), probing across checkpoints, multi-seed statistics.

Commands: `python -m evaluation.blimp`, `python -m evaluation.probing`, `python -m evaluation.multibootstrap`.
"""
