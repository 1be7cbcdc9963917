"""``python -m rvqfast.edit`` and the editing API under its historical name.

The implementation lives in :mod:`rvqfast.editing` (solver, residual policies, blending,
metrics, edit suite, command line); this module re-exports it.
"""
from __future__ import annotations

import sys

from .editing import (  # noqa: F401  (re-exported API)
    EditResult, RESIDUAL_POLICIES, UnreachableEditError, UnreachableEditWarning, edit, edit_many, parse_frames,
    parse_set,
)
from .editing.cli import main

__all__ = ["EditResult", "RESIDUAL_POLICIES", "UnreachableEditError", "UnreachableEditWarning", "edit",
           "edit_many", "main", "parse_frames", "parse_set"]

if __name__ == "__main__":
    sys.exit(main())
