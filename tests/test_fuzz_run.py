"""Fuzz (issue 18): damaged run folders (config.json, model.safetensors, checkpoints) through
``MotionTokenizer.load``, ``python -m rvqfast.export`` and ``python -m rvqfast.train --resume``.

For every mutation: ends within a time limit; either works, or fails with a one-line message
naming the damaged file (no traceback) and — for a refused resume — leaves every file of the run
as it was; nothing is written outside the run / --out folders."""
from __future__ import annotations

import json
import math
import shutil

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from rvqfast.export.__main__ import main as export_cli
from rvqfast.models import MotionTokenizer
from rvqfast.models.persist import tensors_digest
from rvqfast.train import build_config, train
from rvqfast.train.__main__ import main as train_cli
from rvqfast.train.checkpoint import list_checkpoints
from test_reliability_train import TINY
from reliability_support import (
    assert_clean_failure, changed_outside, fuzz_examples, mutate_bytes, mutate_json, run_cli, snapshot, time_limit,
)

_BASE: dict[str, object] = {}


def _base(factory):
    if "run" not in _BASE:
        from rvqfast.data.synthetic import generate_dataset
        root = factory.mktemp("fuzzrun")
        data = generate_dataset(root / "data", n_motions=8, seed=0)
        train(build_config("quick", None, {**TINY, "data": str(data), "out": str(root / "run"), "steps": 2}),
              progress=False)
        _BASE["run"] = root / "run"
    return _BASE["run"]


def _fresh(factory):
    base = factory.mktemp("case")
    return base, shutil.copytree(_base(factory), base / "run")


def _mutate_config(data, path):
    if data.draw(st.booleans(), label="as_json"):
        obj = json.loads(path.read_text())
        path.write_text(json.dumps(mutate_json(data, obj)))  # NaN/Infinity literals included
    else:
        path.write_bytes(mutate_bytes(data, path.read_bytes()))


@settings(max_examples=fuzz_examples(40))
@given(data=st.data())
def test_fuzz_run_folder_load_and_export(tmp_path_factory, data):
    base, run = _fresh(tmp_path_factory)
    target = data.draw(st.sampled_from(["config.json", "model.safetensors"]), label="file")
    p = run / target
    old = p.read_bytes()
    if target == "config.json":
        _mutate_config(data, p)
    else:
        p.write_bytes(mutate_bytes(data, old))
    try:
        with time_limit(30):
            tok = MotionTokenizer.load(run)
    except (OSError, ValueError, RuntimeError) as e:
        assert target in str(e), str(e)
    else:
        assert target == "config.json" or p.read_bytes() == old  # weights are checksummed
        assert all(torch.isfinite(v).all() for v in tok.state_dict().values() if v.is_floating_point())
    before = snapshot(base)
    rc, _, err = run_cli(export_cli, [str(run), "--out", str(base / "export"), "--graphs", "rvq"], limit=60)
    assert changed_outside(before, snapshot(base), ("export",)) == []
    if rc != 0:
        assert_clean_failure(rc, err, (target,))


def _craft_checkpoint(data, path):
    """Change the checkpoint's JSON metadata and/or tensors; sometimes fix up the checksum as a
    deliberate forger would, sometimes leave it (plain damage)."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["rvqfast"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    what = data.draw(st.sampled_from(["meta", "tensor", "drop"]), label="what")
    if what == "meta":
        meta = mutate_json(data, meta)
    else:
        key = data.draw(st.sampled_from(sorted(tensors)), label="tensor")
        if what == "drop":
            del tensors[key]
        else:
            t = tensors[key]
            shape = data.draw(st.sampled_from([(), (1,), (3,), tuple(t.shape)]), label="shape")
            value = data.draw(st.sampled_from([0.0, -1.0, 1.5, math.nan, math.inf, 1e30]), label="value")
            tensors[key] = torch.full(shape, value).to(t.dtype) if t.is_floating_point() else \
                torch.zeros(shape, dtype=t.dtype)
    if data.draw(st.booleans(), label="forge") and isinstance(meta, dict):
        meta["tensors_sha256"] = tensors_digest(tensors)
    save_file(tensors, str(path), metadata={"rvqfast": json.dumps(meta)})


@settings(max_examples=fuzz_examples(25))
@given(data=st.data())
def test_fuzz_checkpoint_resume(tmp_path_factory, data):
    base, run = _fresh(tmp_path_factory)
    ckpt = list_checkpoints(run / "checkpoints")[-1][1]
    if data.draw(st.booleans(), label="bytes"):
        ckpt.write_bytes(mutate_bytes(data, ckpt.read_bytes()))
    else:
        _craft_checkpoint(data, ckpt)
    before = snapshot(base)
    rc, _, err = run_cli(train_cli, ["--out", str(run), "--resume", "--steps", "3", "--no-progress"], limit=60)
    after = snapshot(base)
    assert changed_outside(before, after, ("run",)) == []
    if rc != 0:
        assert_clean_failure(rc, err, (ckpt.name,))
        assert after == before  # a refused resume touches nothing
