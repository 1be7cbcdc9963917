"""Pose-code editing: consistent edits through a joint-space solver, a residual fitted through
the decoder (and the other residual policies),
windowed blending, metrics, the fixed edit suite and the command line.

The tokenizer does not import this package (editing depends on models, not the reverse).
"""
from .apply import EditResult, RESIDUAL_POLICIES, blend_weights, edit, edit_many
from .requests import UnreachableEditError, UnreachableEditWarning, check_reachable, parse_frames, parse_set
from .fit import FitWeights, fit_residual
from .solver import Solution, edit_coupled_slots, solve

__all__ = ["EditResult", "FitWeights", "RESIDUAL_POLICIES", "Solution", "UnreachableEditError",
           "UnreachableEditWarning", "blend_weights", "check_reachable", "edit", "edit_many", "edit_coupled_slots",
           "fit_residual", "parse_frames", "parse_set", "solve"]
