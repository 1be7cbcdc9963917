"""Skeleton, HumanML3D features and pose codes for 22-joint human motion."""
from .features import (
    FOOT_CONTACT, LOCAL_VEL, RIC, ROOT_LIN_VEL, ROOT_ROT_VEL, ROOT_Y, ROT6D, canonicalize,
    features_to_joints, features_with_bone_lengths, joints_to_features, local_positions_slice,
)
from .posecodes import (
    POSECODE_CATEGORIES, POSECODE_SLOTS, SLOT_OFFSETS, SLOT_SIZES, category_index, describe,
    extract_posecodes, indices_to_multihot, posecode_indices,
)
from .retarget import bone_lengths, retarget, shared_skeleton
from .skeleton import (
    FEATURE_DIM, FPS, JOINT_NAMES, KINEMATIC_CHAIN, NUM_JOINTS, PARENTS, frame_bone_lengths,
    set_bone_lengths,
)

__all__ = [
    "FEATURE_DIM", "FPS", "JOINT_NAMES", "KINEMATIC_CHAIN", "NUM_JOINTS", "PARENTS",
    "ROOT_ROT_VEL", "ROOT_LIN_VEL", "ROOT_Y", "RIC", "ROT6D", "LOCAL_VEL", "FOOT_CONTACT",
    "local_positions_slice", "canonicalize", "retarget", "bone_lengths", "shared_skeleton", "frame_bone_lengths", "set_bone_lengths", "joints_to_features",
    "features_to_joints", "features_with_bone_lengths",
    "POSECODE_SLOTS", "POSECODE_CATEGORIES", "SLOT_SIZES", "SLOT_OFFSETS", "category_index",
    "describe", "extract_posecodes", "indices_to_multihot", "posecode_indices",
]
