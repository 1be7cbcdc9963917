"""``python -m rvqfast.analyze RUN --out DIR``: direction-similarity analysis of a trained run.

The implementation lives in :mod:`rvqfast.eval.analysis`; this module keeps the command name.
"""
from __future__ import annotations

import sys

from .eval.analysis import (  # noqa: F401  (re-exported API)
    analyze, cosine_matrix, edit_directions, embedding_similarity, main, within_across,
)

__all__ = ["analyze", "cosine_matrix", "edit_directions", "embedding_similarity", "main", "within_across"]

if __name__ == "__main__":
    sys.exit(main())
