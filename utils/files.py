"""Reading user-supplied files with one-line errors that name them."""

import json
from pathlib import Path

from utils.errors import UserError


def read_json(path, what: str = "file"):
    """Parsed JSON of `path`; a missing file or bad JSON is a UserError naming `what` and the path."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
