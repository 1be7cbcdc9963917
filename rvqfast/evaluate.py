"""``python -m rvqfast.evaluate RUN [RUN ...] --evaluator DIR --out REPORT``.

Reconstruction metrics of trained tokenizer runs on a dataset's test split, written as a report
folder (markdown, JSON, plots, GIF). The implementation lives in :mod:`rvqfast.eval`.
"""
from __future__ import annotations

import sys

from .eval.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
