"""Evaluation: T2M-protocol metrics, the T2M evaluator, reports.

* :mod:`rvqfast.eval.metrics` — FID, Diversity, R-precision, MM-Dist, MPJPE, PA-MPJPE,
  acceleration error, codebook usage / perplexity.
* :mod:`rvqfast.eval.evaluator` — the T2M text/motion evaluator: architecture, official
  checkpoint loading (safe formats only), contrastive training, save/load.
* :mod:`rvqfast.eval.words` — word tables and part-of-speech one-hots.
* :mod:`rvqfast.eval.report` — ``evaluate_runs``: the report behind ``python -m rvqfast.evaluate``.
"""
from __future__ import annotations

from .evaluator import (EvaluatorConfig, T2MEvaluator, TrainConfig, load_evaluator, load_official,
                        save_evaluator, train_evaluator)
from .metrics import (MeanConf, accel_error, codebook_stats, diversity, fid, frechet_distance,
                      mm_dist, mpjpe, pa_mpjpe, r_precision)

__all__ = [
    "EvaluatorConfig", "T2MEvaluator", "TrainConfig", "load_evaluator", "load_official",
    "save_evaluator", "train_evaluator", "MeanConf", "accel_error", "codebook_stats", "diversity",
    "fid", "frechet_distance", "mm_dist", "mpjpe", "pa_mpjpe", "r_precision", "evaluate_runs",
]


def evaluate_runs(*args, **kwargs):
    """See :func:`rvqfast.eval.report.evaluate_runs` (imported lazily: it pulls in the tokenizer)."""
    from .report import evaluate_runs as _impl
    return _impl(*args, **kwargs)
