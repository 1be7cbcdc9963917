"""Out-of-distribution checks of a tokenizer (rvqfast.eval.ood), recorded with their timing.

* ``test_bench_bvh_roundtrip``: the ten hand-written BVH clips (T-pose Mixamo-style skeleton
  with other proportions, two spine joints, cm, 30 fps) -> ``load_bvh`` -> ``retarget`` ->
  features -> encode -> decode. Records per-clip root-relative MPJPE, PA-MPJPE and pose-code
  agreement in ``extra_info``.
* ``test_bench_leave_one_family_out``: trains without the ``floor`` family and records the
  round-trip error on that family's test motions (held out) and on the others (in
  distribution); the ratio is the leave-one-family-out score.

By default both use a small generated dataset and a few quick-preset steps so the suite stays
short: the numbers then only show the path works. For the measurement in the README set
``RVQFAST_OOD_RUN=runs/default`` (a trained run for the BVH clips),
``RVQFAST_OOD_DATA=default`` and ``RVQFAST_OOD_STEPS=4000`` (the leave-one-family-out
training at the default preset's length; ~10 minutes); ``benchmarks/ood_experiments.py`` runs the same functions from
the command line.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rvqfast.eval import ood

STEPS = int(os.environ.get("RVQFAST_OOD_STEPS", "40"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    if os.environ.get("RVQFAST_OOD_DATA") == "default":
        from rvqfast.data import default_dataset
        return default_dataset(progress=False)
    from rvqfast.data import generate_dataset
    return generate_dataset(tmp_path_factory.mktemp("ood") / "data", n_motions=120, seed=0)


@pytest.fixture(scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tokenizer(data_root: Path, tmp: Path):
    from rvqfast.models.tokenizer import MotionTokenizer
    run = os.environ.get("RVQFAST_OOD_RUN")
    if run:
        return MotionTokenizer.load(run).eval(), Path(run).name
    from rvqfast.train import build_config, train
    cfg = build_config("quick", None, {"data": str(data_root), "out": str(tmp / "run"),
                                       "steps": STEPS, "num_threads": 1, "gif": False,
                                       "model": "posecode_rvq"})
    train(cfg, progress=False)
    return MotionTokenizer.load(tmp / "run").eval(), f"quick preset, {STEPS} steps"


def test_bench_bvh_roundtrip(benchmark, data_root, tmp_path, one_thread):
    tok, name = _tokenizer(data_root, tmp_path)
    res = benchmark.pedantic(ood.bvh_roundtrip, args=(tok, tmp_path / "bvh"), rounds=1, iterations=1)
    assert res["clips"] == len(ood.BVH_CLIPS)
    assert np.isfinite(res["mpjpe_root_rel_mm"]) and 0 <= res["posecode_agreement"] <= 1
    benchmark.extra_info.update({
        "model": name, "mpjpe_root_rel_mm": res["mpjpe_root_rel_mm"],
        "pa_mpjpe_mm": res["pa_mpjpe_mm"], "posecode_agreement": res["posecode_agreement"],
        "per_clip": {c: {k: round(v, 4) for k, v in m.items()} for c, m in res["per_clip"].items()}})


def test_bench_leave_one_family_out(benchmark, data_root, tmp_path, one_thread):
    def run():
        return ood.lofo_experiment(data_root, "floor", tmp_path / "lofo", steps=STEPS,
                                   preset="quick" if STEPS < 200 else "default")
    res = benchmark.pedantic(run, rounds=1, iterations=1)
    assert res["splits"]["heldout"] + res["splits"]["indist"] == res["splits"]["test"]
    assert res["splits"]["train"] > 0
    extra = {"steps": STEPS, "splits": res["splits"]}
    for part in ("heldout", "indist", "bvh"):
        extra[part] = {k: res[part][k] for k in ("mpjpe_root_rel_mm", "pa_mpjpe_mm",
                                                 "posecode_agreement", "clips")}
    if res["splits"]["heldout"]:
        extra["heldout_over_indist_mpjpe"] = (res["heldout"]["mpjpe_root_rel_mm"]
                                              / res["indist"]["mpjpe_root_rel_mm"])
    benchmark.extra_info.update(extra)
