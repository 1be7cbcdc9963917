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


# ---------------------------------------------------------------------------- mutations

HOSTILE_TOKENS = ["-2", "-1", "0", "1.5", "nan", "inf", "-inf", "1e308", "-1e308", "3e38", "99999999999",
                  "{", "}", "ROOT", "JOINT", "End", "CHANNELS", "OFFSET", "MOTION", "Frames:", "Frame",
                  "Time:", "Xrotation", "Yposition", "x", "", "\u00e9", "0x10", "1e-300", "+5"]


def mutate_text(data, text: str) -> str:
    """One or a few hypothesis-drawn edits of ``text``: tokens replaced/deleted/duplicated by
    hostile ones, lines deleted/duplicated/truncated, the file cut short."""
    from hypothesis import strategies as st

    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        kind = data.draw(st.sampled_from(["token", "delete_token", "insert_token", "delete_line",
                                          "dup_line", "cut", "cut_line"]), label="kind")
        if not lines:
            break
        i = data.draw(st.integers(0, len(lines) - 1), label="line")
        words = lines[i].split()
        if kind == "cut":
            lines = lines[:i]
        elif kind == "delete_line":
            del lines[i]
        elif kind == "dup_line":
            lines.insert(i, lines[i])
        elif kind == "cut_line":
            lines[i] = lines[i][: data.draw(st.integers(0, len(lines[i])), label="col")]
        elif words:
            j = data.draw(st.integers(0, len(words) - 1), label="word")
            tok = data.draw(st.sampled_from(HOSTILE_TOKENS), label="token")
            if kind == "token":
                words[j] = tok
            elif kind == "delete_token":
                del words[j]
            else:
                words.insert(j, tok)
            lines[i] = " ".join(words)
    return "\n".join(lines) + "\n"


def mutate_bytes(data, raw: bytes) -> bytes:
    """Byte-level damage: flips, truncation, garbage appended or overwritten, zeroed ranges."""
    from hypothesis import strategies as st

    b = bytearray(raw)
    kind = data.draw(st.sampled_from(["flip", "flips", "truncate", "append", "zero", "empty"]), label="bytes")
    if kind == "empty" or not b:
        return b""
    if kind in ("flip", "flips"):
        for _ in range(1 if kind == "flip" else data.draw(st.integers(2, 8), label="n")):
            k = data.draw(st.integers(0, len(b) - 1), label="at")
            b[k] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    elif kind == "truncate":
        b = b[: data.draw(st.integers(0, len(b) - 1), label="at")]
    elif kind == "append":
        b += data.draw(st.binary(min_size=1, max_size=64), label="garbage")
    else:
        k = data.draw(st.integers(0, len(b) - 1), label="at")
        n = data.draw(st.integers(1, 64), label="n")
        b[k:k + n] = bytes(len(b[k:k + n]))
    return bytes(b)


HOSTILE_JSON = [None, True, -1, 0, 1, 2.5, 1e9, 10**12, -10**12, float("nan"), float("inf"), "x", "",
                [], {}, [1, 2], {"a": 1}]


def mutate_json(data, obj):
    """Replace one value anywhere in a JSON object tree by a hostile value (or delete its key)."""
    from hypothesis import strategies as st

    import copy
    obj = copy.deepcopy(obj)
    paths = []

    def walk(o, path):
        if isinstance(o, dict):
            for k, v in o.items():
                paths.append(path + (k,))
                walk(v, path + (k,))
        elif isinstance(o, list):
            for k, v in enumerate(o):
                paths.append(path + (k,))
                walk(v, path + (k,))
    walk(obj, ())
    if not paths:
        return obj
    path = data.draw(st.sampled_from(paths), label="path")
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    if isinstance(parent, dict) and data.draw(st.booleans(), label="delete"):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(st.sampled_from(HOSTILE_JSON), label="value")
    return obj


def run_cli(main, argv: list[str], limit: float = 30.0) -> tuple[int, str, str]:
    """Call a CLI ``main(argv)`` in process within ``limit`` seconds; (exit code, stdout, stderr).
    argparse errors (SystemExit) count as exit codes."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with time_limit(limit), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


def fuzz_examples(n: int) -> int:
    """``n`` examples in CI; ``RVQFAST_FUZZ_SCALE=k`` runs k times as many (a longer local hunt)."""
    return max(1, int(float(os.environ.get("RVQFAST_FUZZ_SCALE", "1")) * n))
