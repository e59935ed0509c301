"""`--shard I/N`: the one parser of the flag that splits work over SLURM array tasks or machines."""

from utils.errors import UserError


def parse_shard(text: str | None) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N (None: all the work, (0, 1)); anything else a one-line error."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text!r}: need N >= 1 and 0 <= I < N")
    return i, n
