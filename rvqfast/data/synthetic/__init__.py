"""The embedded default dataset: a deterministic, code-generated motion set in the HumanML3D
layout (see :mod:`.generate`)."""
from .captions import SUBJECTS, caption_lines, mirror_caption, tokenize
from .generate import (
    ACTION_NAMES, ACTIONS, DEFAULT_N_MOTIONS, FAMILIES, FAMILY_OF, GENERATOR_VERSION, MANIFEST,
    MIRROR_PREFIX, STD_EPS, Motion, generate_dataset, generate_motion, mirror_motion,
    motion_names, split_names, write_stats,
)
from .kinematics import forward_kinematics, mirror_joints

__all__ = [
    "ACTION_NAMES", "ACTIONS", "DEFAULT_N_MOTIONS", "FAMILIES", "FAMILY_OF", "GENERATOR_VERSION",
    "MANIFEST", "MIRROR_PREFIX", "STD_EPS", "Motion", "SUBJECTS", "caption_lines",
    "forward_kinematics", "generate_dataset", "generate_motion", "mirror_caption",
    "mirror_joints", "mirror_motion", "motion_names", "split_names", "tokenize", "write_stats",
]
