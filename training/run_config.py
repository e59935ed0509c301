"""Typed run configurations: one dataclass per command, whose fields are its flags.

A field made with `flag(...)` is at once a command-line flag (name, type, default, choices, help, group),
an attribute that library code reads, and an entry of the run's record (run_args.json). Adding a flag is
adding one field. The one resume rule (`resume_differences`) follows from the fields: every field defines
the run, so a resumed run must match its record in it, unless the field says `may_differ=True`; a new
flag is therefore compared by default and cannot be forgotten. Fields made with `derived(...)` are set
by the command after parsing (resolved paths, seeds, the model config) and are recorded too.
"""

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import MISSING, asdict, fields


def flag(
    default,
    help: str,
    *,
    group: str = "options",
    choices=None,
    may_differ: bool = False,
    parse=None,
    required: bool = False,
    no_help: str | None = None,
    legacy=MISSING,
    check=None,
):
    """A flag field. bool fields become switches (default True: also --no_NAME, described by no_help);
    `bool | None` fields a --NAME / --no_NAME pair; parse(str) converts a value (e.g. comma lists).
    legacy: the value that runs saved before this flag existed used, when it is not the default.
    check: the values allowed, e.g. `at_least(0)`, `between(0, 1, high_open=True)` (see validate)."""
    meta = dict(
        legacy=legacy,
        check=check,
        cli=True,
        help=help,
        group=group,
        choices=choices,
        may_differ=may_differ,
        parse=parse,
        required=required,
        no_help=no_help,
    )
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def derived(default=None, *, may_differ: bool = False, normalize=None):
    """A recorded field that no flag sets: the command fills it in after parsing. normalize: makes a
    saved value comparable with today's (a model config saved before a knob existed gains its default)."""
    return dataclasses.field(
        default=default, metadata=dict(cli=False, may_differ=may_differ, normalize=normalize)
    )


class Range:
    """Allowed numbers of a flag: [low, high] with either end open or absent; never NaN or infinite."""

    def __init__(self, low=None, high=None, low_open: bool = False, high_open: bool = False):
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def allows(self, value) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"must be {'>' if self.low_open else '>='} {self.low}"
        if self.low is None:
            return f"must be {'<' if self.high_open else '<='} {self.high}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"must lie in {left}{self.low}, {self.high}{right}"


def at_least(low) -> Range:
    return Range(low)


def above(low) -> Range:
    return Range(low, low_open=True)


def between(low, high, low_open: bool = False, high_open: bool = False) -> Range:
    return Range(low, high, low_open, high_open)


def validate(config) -> None:
    """Refuse (UserError naming the flag) a value outside its field's `check`, and NaN in any number
    field; None (a value decided later, or off) passes. Each command calls it on its parsed config, so a
    new flag's check lives in its field."""
    from utils.errors import UserError

    for f in fields(config):
        value, check = getattr(config, f.name), f.metadata.get("check")
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if (check is not None and not check.allows(v)) or (isinstance(v, float) and math.isnan(v)):
                rule = check or "must be a number"
                raise UserError(f"--{f.name} {rule}, got {value}")


def default_of(f: dataclasses.Field):
    return f.default_factory() if f.default is MISSING else f.default


def _base_type(annotation):
    """int for `int`, `int | None`; list for `list[int]`."""
    if isinstance(annotation, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return typing.get_origin(annotation) or annotation


def _is_tristate(annotation) -> bool:
    return isinstance(annotation, types.UnionType) and set(typing.get_args(annotation)) == {bool, type(None)}


def add_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One argparse flag per flag field of `cls`, in argument groups named by the fields (in the order of
    cls.GROUPS, then of first use)."""
    groups = {name: parser.add_argument_group(name) for name in getattr(cls, "GROUPS", ())}
    for f in fields(cls):
        m = f.metadata
        if not m.get("cli"):
            continue
        if m["group"] not in groups:
            groups[m["group"]] = parser.add_argument_group(m["group"])
        group, name, default = groups[m["group"]], f"--{f.name}", default_of(f)
        if _is_tristate(f.type):  # None: decided later (e.g. from the model config)
            pair = group.add_mutually_exclusive_group()
            pair.add_argument(name, action="store_const", const=True, default=None, help=m["help"])
            pair.add_argument(
                f"--no_{f.name}", dest=f.name, action="store_const", const=False, help=m["no_help"]
            )
        elif f.type is bool:
            group.add_argument(name, action="store_true", default=default, help=m["help"])
            if default:  # SUPPRESS: the positive flag alone sets the default, so help shows it once
                group.add_argument(
                    f"--no_{f.name}",
                    f"--no-{f.name}",
                    dest=f.name,
                    action="store_false",
                    default=argparse.SUPPRESS,
                    help=m["no_help"],
                )
        else:
            kind = m["parse"] or _base_type(f.type)
            group.add_argument(
                name, type=kind, default=default, choices=m["choices"], help=m["help"], required=m["required"]
            )


def flag_names(cls) -> set[str]:
    return {f.name for f in fields(cls) if f.metadata.get("cli")}


def from_namespace(cls, ns: argparse.Namespace):
    return cls(**{f.name: getattr(ns, f.name) for f in fields(cls) if f.metadata.get("cli")})


def record(config) -> dict:
    """The JSON-ready record of a run configuration (run_args.json, a checkpoint's args.json)."""
    return asdict(config)


def from_record(cls, saved: dict):
    """The configuration of a saved run: a key it lacks (a flag added since) takes the value such runs used
    (the field's legacy value, else its default), a key the class no longer has (a flag removed since, or
    the record's extras such as world_size) is dropped."""
    return cls(**{f.name: recorded_value(f, saved) for f in fields(cls)})


def recorded_value(f: dataclasses.Field, saved: dict):
    """A field's value in a saved record; a record that lacks it (saved before the flag existed) ran with
    the field's legacy value, or else its default."""
    if f.name in saved:
        normalize = f.metadata.get("normalize")
        value = saved[f.name]
        return value if normalize is None or value is None else normalize(value)
    legacy = f.metadata.get("legacy", MISSING)
    return default_of(f) if legacy is MISSING else legacy


def with_legacy_values(config, saved: dict):
    """`config` with each field that is still at its default and that `saved` lacks set to the value the
    saved run used (its legacy value): resuming an old run keeps computing what it computed."""
    changes = {
        f.name: f.metadata["legacy"]
        for f in fields(config)
        if f.name not in saved
        and f.metadata.get("legacy", MISSING) is not MISSING
        and getattr(config, f.name) == default_of(f)
    }
    return dataclasses.replace(config, **changes) if changes else config


def resume_differences(saved: dict, current) -> list[str]:
    """The fields that define the run (all but may_differ ones) in which `current` differs from a saved
    record; a field the record lacks counts as its legacy value, or else its default."""
    now = asdict(current)
    return [
        f.name
        for f in fields(current)
        if not f.metadata.get("may_differ") and recorded_value(f, saved) != now[f.name]
    ]


class HelpFormatter(argparse.HelpFormatter):
    def _get_help_string(self, action):  # show real defaults only, never "(default: None)"
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text
