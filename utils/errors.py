"""One-line errors for bad input: no traceback, a non-zero exit, the file or flag named."""

import argparse
import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input from the user (a flag, a file, a config). The message names what is wrong."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are UserErrors: one line (no usage dump), exit code 2 through run_cli."""

    def error(self, message):
        raise UserError(message)


def run_cli(main: Callable[[], object]) -> None:
    """Run a command's main(); turn UserError into `error: ...` on stderr and exit code 2."""
    try:
        main()
    except UserError as err:  # the first line only: a library's explanation below it is not ours to repeat
        lines = str(err).strip().splitlines()
        print(f"error: {lines[0] if lines else type(err).__name__}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as err:  # a full disk, a read-only folder, a quota: one line naming the file
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        sys.exit(1)
