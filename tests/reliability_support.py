"""Helpers for the reliability regression and fuzz tests (issue 18)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from pathlib import Path


class TimeLimit(Exception):
    """Raised in the main thread when a :func:`time_limit` block runs too long (a hang)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail instead of hanging: SIGALRM interrupts the block after ``seconds``."""
    def _alarm(signum, frame):  # noqa: ARG001
        raise TimeLimit(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def snapshot(root: str | Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` (folders as '<dir>')."""
    root = Path(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "<dir>"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def changed_outside(before: dict[str, str], after: dict[str, str], allowed: tuple[str, ...]) -> list[str]:
    """Paths created, deleted or modified that are not under one of the ``allowed`` prefixes."""
    keys = set(before) | set(after)
    bad = [k for k in keys if before.get(k) != after.get(k)]
    return sorted(k for k in bad if not any(k == a or k.startswith(a.rstrip("/") + "/") for a in allowed))


def assert_clean_failure(rc: int, err: str, names: tuple[str, ...]) -> None:
    """A refused input: non-zero exit, one-line message, no traceback, naming one of ``names``."""
    assert rc != 0, err
    assert "Traceback" not in err, err
    assert "internal error" not in err, err
    assert any(n in err for n in names), f"message names none of {names}: {err!r}"
