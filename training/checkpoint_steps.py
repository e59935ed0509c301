"""Which checkpoints a run keeps forever (--checkpoint_steps): the EarlyBERTs and MultiBERTs schedules,
a log schedule, lists and ranges."""

from utils.errors import UserError

PRESETS = {
    "earlyberts": [10, *range(100, 1001, 100), *range(2000, 20001, 1000), 40000],
    "multiberts": [0, *range(20_000, 200_001, 20_000), *range(300_000, 2_000_001, 100_000)],
}


def parse_checkpoint_steps(spec: str, max_steps: int) -> list[int]:
    """Steps whose checkpoints are kept, from a comma-separated list of items, each one of
    `earlyberts` | `multiberts` | `log` (0, 1, 2, 4, ... below 1000, then every 1000) | `log:N`
    (powers of two below N, then every N) | `N` | `START:STOP:STEP` (STOP included) | `none`.
    Steps above max_steps are dropped; 0 means the initialisation."""
    steps: set[int] = set()
    for item in (s.strip() for s in spec.split(",")):
        try:
            if item in ("", "none"):
                continue
            if item in PRESETS:
                steps.update(PRESETS[item])
            elif item == "log" or item.startswith("log:"):
                every = int(item[4:]) if item.startswith("log:") else 1000
                if every <= 0:
                    raise ValueError
                steps.add(0)
                steps.update(2**i for i in range(64) if 2**i < every)
                steps.update(range(every, max_steps + 1, every))
            elif ":" in item:
                start, stop, step = (int(x) for x in item.split(":"))
                if step <= 0:
                    raise ValueError
                steps.update(range(start, stop + 1, step))
            else:
                steps.add(int(item))
        except ValueError:
            raise UserError(
                f"--checkpoint_steps: cannot read {item!r} (use earlyberts, multiberts, log, log:N, "
                "N or START:STOP:STEP, separated by commas)"
            ) from None
    if any(s < 0 for s in steps):
        raise UserError("--checkpoint_steps: steps must be >= 0")
    return sorted(s for s in steps if s <= max_steps)
