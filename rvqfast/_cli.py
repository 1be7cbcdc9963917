"""Shared error handling for the ``python -m rvqfast.*`` command lines.

Every CLI ends with a one-line ``error: ...`` message and a non-zero exit status instead of a
traceback; ``--debug`` re-raises so the traceback is shown. Expected problems (bad files, bad
flags) are ``ValueError``/``OSError``/``RuntimeError`` subclasses whose messages name the file
or flag; anything else is reported as an internal error with its type.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

EXPECTED = (ValueError, OSError, RuntimeError)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error instead of a one-line message")


def run_guarded(body: Callable[[], int], *, debug: bool, prog: str) -> int:
    """``body()``, with errors turned into a message on stderr (exit 2 expected, 1 internal)."""
    try:
        return body()
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except EXPECTED as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - last resort: a message instead of a traceback
        if debug:
            raise
        print(f"error: {prog}: internal error {type(e).__name__}: {e} "
              "(rerun with --debug for the traceback and please report it)", file=sys.stderr)
        return 1


def json_format(path) -> str | None:
    """The ``"format"`` string of a small JSON file, or None when absent/unreadable/not ours."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size > 10_000_000:
            return None
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    fmt = obj.get("format") if isinstance(obj, dict) else None
    return fmt if isinstance(fmt, str) else None


def out_folder_problem(out, marker: str, formats: tuple[str, ...], what: str) -> str | None:
    """Why ``out`` cannot be used as an output folder, or ``None`` when it can.

    Usable: absent, an empty folder, or a folder whose ``marker`` JSON file has one of
    ``formats`` (i.e. rvqfast wrote it). A file, or a non-empty folder of somebody else's, is
    refused so that none of its files is overwritten.
    """
    from pathlib import Path

    out = Path(out)
    if out.exists() and not out.is_dir():
        return f"--out {out} exists and is not a folder"
    if out.is_dir() and any(out.iterdir()) and json_format(out / marker) not in formats:
        return (f"--out {out} is a non-empty folder that is not {what} (no rvqfast {marker}); "
                "choose a new or empty folder so none of its files is overwritten")
    return None


def cli_entry(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorator for a ``main(argv=None) -> int``: accepts ``--debug`` anywhere in ``argv`` and
    runs the body under :func:`run_guarded` (a message instead of a traceback)."""
    import functools

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def guarded(argv: list[str] | None = None) -> int:
            args = list(sys.argv[1:] if argv is None else argv)
            debug = "--debug" in args
            args = [a for a in args if a != "--debug"]
            return run_guarded(lambda: main(args), debug=debug, prog=prog)
        return guarded
    return wrap
