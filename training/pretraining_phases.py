"""The phases of a pretraining run (ELC-BERT's --long_after) and the data each phase trains on."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Phase:
    """A stretch of training with one sequence length and global batch (ELC-BERT's --long_after)."""

    start: int  # first step of the phase
    end: int  # steps done when it ends
    seq_length: int
    batch_size: int


def phases(max_steps: int, seq_length: int, batch_size: int, long_after: float) -> list[Phase]:
    """[short] or [short, long]: after long_after x max_steps, 4x the length and a quarter of the batch."""
    switch = int(max_steps * long_after)
    if long_after >= 1.0 or switch >= max_steps:
        return [Phase(0, max_steps, seq_length, batch_size)]
    return [
        Phase(0, switch, seq_length, batch_size),
        Phase(switch, max_steps, seq_length * 4, batch_size // 4),
    ]


def phase_at(all_phases: list[Phase], step: int) -> Phase:
    return next((p for p in all_phases if step < p.end), all_phases[-1])


def build_pretraining_data(config, seq_length: int, split: str):
    """The data.pretraining.PretrainingData that train_pretrain.py trains (split "train") or validates
    ("validation") on, from its run configuration (training.pretrain_args.PretrainConfig, e.g. rebuilt
    from a run's run_args.json); config.nsp must be resolved (True/False, not None)."""
    from data.masking import build_masking
    from data.pretraining import PretrainingData

    if config.nsp is None:
        raise ValueError(
            "config.nsp is None: resolve it from the model config first (as train_pretrain does)"
        )
    return PretrainingData(
        config.input_path,
        seq_length,
        config.nsp,
        build_masking(config.masking, mask_p=config.mask_p),
        config.static_masking,
        config.data_seed,
        short_p=config.short_p,
        max_predictions=config.max_predictions,
        split=split,
        vocab_path=config.vocab_path,
        layout=config.instance_layout,
        dupe_factor=1 if split == "validation" else config.dupe_factor,
    )
