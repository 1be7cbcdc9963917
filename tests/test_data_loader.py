import numpy as np
import pytest
import torch

from rvqfast.data import DatasetError, HumanML3D, WindowDataset, eval_batches
from rvqfast.data.__main__ import main as cli
from rvqfast.data.synthetic import generate_dataset


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("ds") / "d", n_motions=12, seed=1)


def _copy(root, tmp_path):
    import shutil
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


def test_load_and_normalise(root):
    ds = HumanML3D(root, "train", min_length=1)
    assert len(ds) == len((root / "train.txt").read_text().split())
    assert all(f.shape[1] == 263 and f.dtype == np.float32 for f in ds.features)
    assert all(len(c) == 3 for c in ds.captions)
    x = ds.features[0]
    assert np.allclose(ds.denormalize(ds.normalize(x)), x, atol=1e-5)
    xt = torch.from_numpy(x)
    assert torch.allclose(ds.normalize(xt), torch.from_numpy(ds.normalize(x)), atol=1e-6)
    s = ds.summary()
    assert s.loaded == len(ds) and s.listed == len(ds) and not s.bad
    with pytest.raises(ValueError, match="split"):
        HumanML3D(root, "training")


@pytest.mark.parametrize("kind,match", [
    ("width", r"expected \(T, 263\) features, got shape \(50, 262\)"),
    ("nan", "NaN"),
    ("empty", "empty"),
    ("garbage", "unreadable"),
    ("missing_text", "missing caption"),
])
def test_malformed_files_name_the_file(root, tmp_path, kind, match):
    d = _copy(root, tmp_path)
    name = (d / "train.txt").read_text().split()[0]
    vec = d / "new_joint_vecs" / f"{name}.npy"
    if kind == "width":
        np.save(vec, np.zeros((50, 262), np.float32))
    elif kind == "nan":
        a = np.load(vec)
        a[3, 7] = np.nan
        np.save(vec, a)
    elif kind == "empty":
        np.save(vec, np.zeros((0, 263), np.float32))
    elif kind == "garbage":
        vec.write_bytes(b"not a numpy file")
    else:
        (d / "texts" / f"{name}.txt").unlink()
    with pytest.raises(DatasetError, match=match) as e:
        HumanML3D(d, "train", min_length=1)
    assert name in str(e.value)
    ds = HumanML3D(d, "train", skip_bad=True, min_length=1)
    assert list(ds.summary().bad) == [name] and name not in ds.names
    assert ds.summary().loaded == ds.summary().listed - 1
    assert cli(["check", str(d)]) == 1


def test_pickled_npy_is_refused(root, tmp_path):
    d = _copy(root, tmp_path)
    name = (d / "train.txt").read_text().split()[0]
    np.save(d / "new_joint_vecs" / f"{name}.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="unreadable"):
        HumanML3D(d, "train", min_length=1)


def test_short_motions_counted(root):
    ds = HumanML3D(root, "train", min_length=10_000)
    assert len(ds) == 0 and ds.summary().too_short == ds.summary().listed


def test_windows_are_deterministic(root):
    ds = HumanML3D(root, "train", min_length=1)
    w = WindowDataset(ds, 32, seed=3)
    a = [w[i] for i in range(len(w))]
    assert all(x.shape == (32, 263) and x.dtype == torch.float32 for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, [WindowDataset(ds, 32, seed=3)[i] for i in range(len(w))]))
    w.set_epoch(1)
    assert not all(torch.equal(x, w[i]) for i, x in enumerate(a))
    with pytest.raises(ValueError, match="multiple of 4"):
        WindowDataset(ds, 30)


def test_eval_batches(root):
    ds = HumanML3D(root, "train", min_length=1)
    seen = []
    for b in eval_batches(ds, batch_size=4):
        assert b["features"].shape[0] == len(b["lengths"]) == len(b["captions"])
        assert (b["lengths"] % 4 == 0).all()
        assert b["features"].shape[1] == int(b["lengths"].max())
        for r, n in enumerate(b["lengths"].tolist()):
            assert (b["features"][r, n:] == 0).all()
        seen += b["names"]
    assert seen == ds.names


def test_check_cli_ok(root, capsys):
    assert cli(["check", str(root), "--min-length", "1"]) == 0
    assert "OK" in capsys.readouterr().out
