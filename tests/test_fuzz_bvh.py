"""Fuzz (issue 18): mutated BVH files through ``python -m rvqfast.data import-bvh`` (in process).

For every mutation: ends within a time limit, exits 0 with a finite dataset or with a one-line
message naming the BVH file (no traceback), writes only inside --out, leaves no temp folder."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rvqfast.data import HumanML3D
from rvqfast.data.__main__ import main as data_cli
from rvqfast.motion.skeleton import JOINT_NAMES
from reliability_support import (
    assert_clean_failure, changed_outside, fuzz_examples, mutate_bytes, mutate_text, run_cli, snapshot,
)
from test_data_bvh import MIXAMO, _frames, write_bvh

_TEMPLATE: dict[str, str] = {}


def _valid_text(tmp) -> str:
    if "t" not in _TEMPLATE:
        _TEMPLATE["t"] = write_bvh(tmp / "template.bvh", [MIXAMO[n] for n in JOINT_NAMES], _frames(10)).read_text()
    return _TEMPLATE["t"]


def _check_import(root, src, extra=()):
    out = root / "out"
    before = snapshot(root)
    rc, _, err = run_cli(data_cli, ["import-bvh", str(src), "--out", str(out), *extra], limit=20)
    assert changed_outside(before, snapshot(root), ("out",)) == []
    if rc == 0:
        ds = HumanML3D(out, "train", min_length=1)
        assert all(np.isfinite(f).all() for f in ds.features)
        assert np.isfinite(ds.mean).all() and np.isfinite(ds.std).all() and (ds.std > 0).all()
    else:
        assert not out.exists()
        assert_clean_failure(rc, err, (src.name, "scale", "caption"))


@settings(max_examples=fuzz_examples(60))
@given(data=st.data())
def test_fuzz_bvh_text_mutations(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("bvh")
    src = root / "motion.bvh"
    src.write_text(mutate_text(data, _valid_text(root)))
    _check_import(root, src)


@settings(max_examples=fuzz_examples(15))
@given(data=st.data())
def test_fuzz_bvh_byte_damage(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("bvhb")
    src = root / "motion.bvh"
    src.write_bytes(mutate_bytes(data, _valid_text(root).encode()))
    _check_import(root, src)


@settings(max_examples=fuzz_examples(15))
@given(scale=st.sampled_from(["auto", "0", "-1", "nan", "inf", "abc", "1e-30", "1e30", "0.01", "1"]),
       caption=st.text(max_size=40))
def test_fuzz_bvh_flags(tmp_path_factory, scale, caption):
    root = tmp_path_factory.mktemp("bvhf")
    src = root / "motion.bvh"
    src.write_text(_valid_text(root))
    _check_import(root, src, ("--scale", scale, "--caption", caption))
