"""Fuzz (issue 18): damaged HumanML3D-layout folders through ``data check``, the loader and
``train`` (in process).

For every mutation: ends within a time limit; ``data check`` reads only (the folder is unchanged)
and either says OK or names a bad file; the loader either raises DatasetError naming a file or
returns finite features whose normalised values are finite; ``train`` writes only inside --out
and fails with a one-line message naming a file of the folder."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rvqfast.data import DatasetError, HumanML3D
from rvqfast.data.__main__ import main as data_cli
from rvqfast.train.__main__ import main as train_cli
from reliability_support import (
    assert_clean_failure, changed_outside, fuzz_examples, mutate_bytes, mutate_text, run_cli, snapshot, time_limit,
)

_BASE: dict[str, object] = {}


def _base(factory):
    if "root" not in _BASE:
        from rvqfast.data.synthetic import generate_dataset
        _BASE["root"] = generate_dataset(factory.mktemp("base") / "d", n_motions=8, seed=3)
    return _BASE["root"]


def _arrays():
    floats = st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 3e38, 1e6, 1e-30])
    return st.tuples(
        st.sampled_from([(0,), (263,), (5, 263), (0, 263), (3, 22, 3), (50, 262), (2, 2, 263), (12000, 263)]),
        st.sampled_from(["float32", "float64", "float16", "int64", "bool"]),
        floats)


def _mutate(data, root) -> list[str]:
    """Damage one file of the folder; returns the names a message may cite."""
    names = (root / "all.txt").read_text().split()
    name = data.draw(st.sampled_from(names), label="motion")
    target = data.draw(st.sampled_from([
        "Mean.npy", "Std.npy", f"new_joint_vecs/{name}.npy", f"new_joints/{name}.npy",
        f"texts/{name}.txt", "train.txt", "val.txt"]), label="file")
    p = root / target
    how = data.draw(st.sampled_from(["bytes", "array", "text", "delete"]), label="how")
    if how == "delete":
        p.unlink()
    elif how == "array" and p.suffix == ".npy":
        shape, dtype, fill = data.draw(_arrays(), label="array")
        arr = np.load(p)
        if shape == (5, 263) and arr.ndim == 2:
            arr = arr.copy()
            arr[data.draw(st.integers(0, arr.shape[0] - 1))] = fill
        else:
            with np.errstate(all="ignore"):
                arr = np.full(shape, fill).astype(dtype)
        np.save(p, arr)
    elif how == "text" and p.suffix == ".txt":
        hostile = data.draw(st.sampled_from(["../../etc/passwd", ".hidden", "a/b", "missing_motion", "#", ""]))
        p.write_text(mutate_text(data, p.read_text()) + hostile + "\n")
    else:
        p.write_bytes(mutate_bytes(data, p.read_bytes()))
    return [target.split("/")[-1], p.name, str(root)]


@settings(max_examples=fuzz_examples(50))
@given(data=st.data())
def test_fuzz_dataset_check_and_loader(tmp_path_factory, data):
    root = shutil.copytree(_base(tmp_path_factory), tmp_path_factory.mktemp("ds") / "d")
    cited = _mutate(data, root)
    before = snapshot(root)
    rc, out, err = run_cli(data_cli, ["check", str(root), "--min-length", "1"], limit=30)
    assert snapshot(root) == before  # check never writes
    assert "Traceback" not in out + err and "internal error" not in err
    if rc != 0:
        assert any(c in out + err for c in cited + ["train.txt", "val.txt", "test.txt"]), out + err
    for split in ("train", "val"):
        try:
            with time_limit(30):
                ds = HumanML3D(root, split, min_length=1)
        except DatasetError as e:
            assert str(root) in str(e)
            continue
        for f in ds.features:
            assert np.isfinite(f).all() and np.isfinite(ds.normalize(f)).all()


@settings(max_examples=fuzz_examples(6))
@given(data=st.data())
def test_fuzz_dataset_train(tmp_path_factory, data):
    base = tmp_path_factory.mktemp("tr")
    root = shutil.copytree(_base(tmp_path_factory), base / "d")
    cited = _mutate(data, root)
    cfg = base / "tiny.json"
    cfg.write_text(json.dumps({"width": 16, "code_dim": 16, "codebook_size": 8, "num_quantizers": 2,
                               "warmup_steps": 1, "val_max_windows": 2}))
    before = snapshot(base)
    argv = ["--data", str(root), "--out", str(base / "run"), "--preset", "quick", "--config", str(cfg),
            "--steps", "1", "--batch-size", "2", "--window", "16", "--num-threads", "1", "--no-gif",
            "--no-progress", "--val-every", "0"]
    rc, _, err = run_cli(train_cli, argv, limit=60)
    assert changed_outside(before, snapshot(base), ("run",)) == []
    if rc != 0:
        assert_clean_failure(rc, err, tuple(cited) + ("train.txt", "--window", "--data"))


@pytest.mark.parametrize("name", ["../escape", "/abs", ".hidden"])
def test_split_names_cannot_escape(tmp_path_factory, name):
    root = shutil.copytree(_base(tmp_path_factory), tmp_path_factory.mktemp("esc") / "d")
    (root / "train.txt").write_text(name + "\n")
    with pytest.raises(DatasetError, match="invalid motion name"):
        HumanML3D(root, "train")
