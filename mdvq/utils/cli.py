"""The one command-line style of mdvq's non-training commands: positional paths, then `key=value`.

    python -m mdvq.sample RUN n_per_class=50 guidance=1.5 steps=20 out=samples/
    python -m mdvq.decide VQ_RUN KL_RUN out=decision.json
    python -m mdvq.sweep SWEEP_DIR sort=val/psnr out=results/

Training (`python -m mdvq.run`) uses Hydra's override syntax, which this mirrors. Every command
prints its usage for `-h`/`--help`, and exits with status 2 and a one-line `error: ...` naming
the argument on bad input.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Arg:
    """One argument: `name`, its `kind` (str | int | float | bool | list: comma-separated
    strings), its `default` (`REQUIRED` for a mandatory key) and a `help` line. A last
    positional argument of kind list takes every remaining positional (one or more)."""

    name: str
    kind: type = str
    default: Any = None
    help: str = ""


REQUIRED = object()


class UsageError(ValueError):
    """Bad command-line input; the message names the argument."""


class HelpRequested(Exception):
    """`-h` / `--help` was given: print the usage and exit 0."""


def usage(prog: str, positional: Sequence[Arg], options: Sequence[Arg], doc: str = "") -> str:
    """The usage text: the synopsis, then one line per argument with its default."""
    synopsis = " ".join([f"python -m {prog}",
                         *(a.name.upper() + ("..." if a.kind is list else "") for a in positional),
                         *(f"{a.name}=..." if a.default is REQUIRED else f"[{a.name}=...]"
                           for a in options)])
    lines = [f"usage: {synopsis}"] + ([doc.strip()] if doc else [])
    lines += [f"  {a.name.upper():<14} {a.help}" for a in positional]
    for a in options:
        default = "required" if a.default is REQUIRED else f"default {a.default}"
        lines.append(f"  {a.name + '=':<14} {a.help} ({default})")
    return "\n".join(lines)


def _convert(arg: Arg, value: str):
    try:
        if arg.kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if arg.kind is list:
            return [v for v in value.split(",") if v]
        return arg.kind(value)
    except ValueError:
        raise UsageError(f"{arg.name}={value!r}: expected {arg.kind.__name__}") from None


def parse(argv: Sequence[str], prog: str, positional: Sequence[Arg], options: Sequence[Arg],
          passthrough: Sequence[str] = (), doc: str = "") -> tuple[dict, list[str]]:
    """Parse `argv`: returns (values by name, the `key=value` arguments whose key starts with one
    of the `passthrough` prefixes, e.g. "trainer." or "data", kept as given).

    Raises HelpRequested for -h/--help and UsageError naming the argument otherwise.
    """
    text = usage(prog, positional, options, doc)
    if any(a in ("-h", "--help") for a in argv):
        raise HelpRequested(text)
    by_name = {a.name: a for a in options}
    values = {a.name: a.default for a in options}
    rest: list[str] = []
    given_positional = []
    for token in argv:
        key, sep, value = token.partition("=")
        if not sep:
            given_positional.append(token)
        elif key in by_name:
            values[key] = _convert(by_name[key], value)
        elif any(key == p.rstrip(".") or key.startswith(p) for p in passthrough):
            rest.append(token)
        else:
            raise UsageError(f"unknown argument {key!r}; accepted: "
                             f"{', '.join([*by_name, *(p + '*' for p in passthrough)])}\n{text}")
    variadic = bool(positional) and positional[-1].kind is list  # the last takes 1 or more
    if variadic and len(given_positional) >= len(positional):
        fixed = len(positional) - 1
        given_positional = [*given_positional[:fixed], given_positional[fixed:]]
    elif len(given_positional) != len(positional):
        at_least = "at least " if variadic else ""
        raise UsageError(f"expected {at_least}{len(positional)} positional argument(s) "
                         f"({' '.join(a.name.upper() for a in positional) or 'none'}), got "
                         f"{given_positional}\n{text}")
    values.update({a.name: v for a, v in zip(positional, given_positional)})
    missing = [a.name for a in options if values[a.name] is REQUIRED]
    if missing:
        raise UsageError(f"missing {', '.join(m + '=...' for m in missing)}\n{text}")
    return values, rest


def run(main: Callable[[list[str]], Any], argv: list[str] | None = None,
        errors: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)) -> int:
    """Call `main(argv)` as a command: usage on -h (exit 0); `error: ...` on stderr and exit 2
    for a bad argument or input (`errors`); otherwise `main`'s result when it is an int, else 0."""
    try:
        result = main(sys.argv[1:] if argv is None else argv)
    except HelpRequested as help_text:
        print(help_text)
        return 0
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
