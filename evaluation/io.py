"""Atomic output files (kept as an import path; the helpers live in utils.files)."""

from utils.files import atomic_write, save_npy_atomic, write_json_atomic, write_text_atomic

__all__ = ["atomic_write", "save_npy_atomic", "write_json_atomic", "write_text_atomic"]
