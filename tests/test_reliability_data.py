"""Issue 18 regressions: datasets — never delete user files, no silent overflow, clear messages."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from rvqfast.data import DatasetError, HumanML3D, default_dataset
from rvqfast.data.__main__ import main as data_cli
from rvqfast.data.synthetic import generate_dataset
from reliability_support import snapshot


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("ds") / "d", n_motions=8, seed=2)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_default_dataset_never_deletes_user_files(small, tmp_path):
    # defect 4: a generator manifest + a wrong file count made default_dataset rmtree the folder
    root = _copy(small, tmp_path / "root")
    (root / "new_joints" / "000000.npy").unlink()
    (root / "my_notes.txt").write_text("precious")
    before = snapshot(root)
    with pytest.raises(FileExistsError, match=r"my_notes\.txt.*nothing was changed"):
        default_dataset(root, n_motions=8, seed=2, progress=False)
    assert snapshot(root) == before


def test_default_dataset_regenerates_own_incomplete_folder_by_swap(small, tmp_path):
    root = _copy(small, tmp_path / "root")
    (root / "new_joints" / "000000.npy").unlink()
    assert default_dataset(root, n_motions=8, seed=2, progress=False) == root
    assert snapshot(root) == snapshot(small)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]  # no temp/stale folder left


def test_huge_finite_values_are_refused_by_name(small, tmp_path, capsys):
    # defect 5: 3e38 passed `data check` and overflowed the normalisation in training
    root = _copy(small, tmp_path / "root")
    name = (root / "train.txt").read_text().split()[0]
    f = root / "new_joint_vecs" / f"{name}.npy"
    x = np.load(f)
    x[3, 7] = 3e38
    np.save(f, x)
    with pytest.raises(DatasetError, match=rf"{name}\.npy: implausibly large"):
        HumanML3D(root, "train")
    assert data_cli(["check", str(root)]) == 1
    assert f"{name}.npy: implausibly large" in capsys.readouterr().out


def test_tiny_std_is_refused(small, tmp_path):
    root = _copy(small, tmp_path / "root")
    std = np.load(root / "Std.npy")
    std[5] = 1e-30
    np.save(root / "Std.npy", std)
    with pytest.raises(DatasetError, match=r"Std\.npy: expected std values >= 1e-6"):
        HumanML3D(root, "train")


def test_normalised_overflow_is_named(small, tmp_path):
    root = _copy(small, tmp_path / "root")
    std = np.load(root / "Std.npy")
    std[:] = 1e-5
    np.save(root / "Std.npy", std)
    np.save(root / "Mean.npy", np.full(263, 5e4, dtype=np.float32))
    with pytest.raises(DatasetError, match=r"new_joint_vecs/\d+\.npy: normalised values reach"):
        HumanML3D(root, "train")


def test_pickle_hint_is_not_passed_on(small, tmp_path):
    # defect 10: the garbage-.npy message repeated numpy's advice to load with allow_pickle
    root = _copy(small, tmp_path / "root")
    name = (root / "train.txt").read_text().split()[0]
    np.save(root / "new_joint_vecs" / f"{name}.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError) as e:
        HumanML3D(root, "train")
    assert "allow_pickle" not in str(e.value) and "never loaded" in str(e.value)


def test_check_fails_on_empty_train_split(small, tmp_path, capsys):
    # defect 10: `data check` said OK for an empty train.txt
    root = _copy(small, tmp_path / "root")
    (root / "train.txt").write_text("")
    assert data_cli(["check", str(root)]) == 1
    assert "train.txt lists no usable motion" in capsys.readouterr().out


@pytest.mark.parametrize("n", ["-5", "0", "2"])
def test_prepare_rejects_bad_n_motions(tmp_path, n, capsys):
    # defects 9/10: --n-motions -5 gave a traceback, 0 silently meant 2400
    with pytest.raises(SystemExit) as e:
        data_cli(["prepare", "--out", str(tmp_path / "o"), "--n-motions", n])
    assert e.value.code == 2
    assert "--n-motions" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_non_utf8_split_file(small, tmp_path):
    root = _copy(small, tmp_path / "root")
    (root / "train.txt").write_bytes(b"\xff\xfe\x00abc\n")
    with pytest.raises(DatasetError, match=r"train\.txt: unreadable split file"):
        HumanML3D(root, "train")


@pytest.mark.parametrize("target", ["Std.npy", "new_joint_vecs/{n}.npy", "texts/{n}.txt"])
def test_fifo_in_dataset_does_not_block(small, tmp_path, target):
    import os

    from reliability_support import time_limit

    root = _copy(small, tmp_path / "root")
    name = (root / "train.txt").read_text().split()[0]
    p = root / target.format(n=name)
    p.unlink()
    os.mkfifo(p)
    with time_limit(10), pytest.raises(DatasetError, match="not a regular file"):
        HumanML3D(root, "train")
