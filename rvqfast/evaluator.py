"""``python -m rvqfast.evaluator``: train or inspect a T2M-architecture evaluator.

    python -m rvqfast.evaluator train --data default --out DIR [--epochs N] [--preset t2m]
    python -m rvqfast.evaluator info DIR

The implementation lives in :mod:`rvqfast.eval.evaluator`.
"""
from __future__ import annotations

import sys

from .eval.cli import evaluator_main

if __name__ == "__main__":
    sys.exit(evaluator_main())
