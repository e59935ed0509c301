"""Reproducibility: seeding and the code version saved beside every checkpoint."""

import random
import subprocess

import numpy as np
import torch

from utils.paths import REPO_ROOT


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def code_version() -> dict:
    """Git commit of the code that ran, and whether the tree had uncommitted changes."""

    def git(*args):
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        commit, status = None, None
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}
