import json
import os

import numpy as np
import pytest

from rvqfast.data import DatasetError, default_dataset, resolve_dataset
from rvqfast.data.synthetic import MANIFEST, generate_dataset, generate_motion, tokenize


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_generator_is_deterministic(tmp_path):
    a = generate_dataset(tmp_path / "a", n_motions=6, seed=5)
    b = generate_dataset(tmp_path / "b", n_motions=6, seed=5)
    fa, fb = _files(a), _files(b)
    assert fa == fb and len(fa) == 6 * 3 + 4 + 3
    c = generate_dataset(tmp_path / "c", n_motions=6, seed=6)
    assert _files(c)["new_joint_vecs/000000.npy"] != fa["new_joint_vecs/000000.npy"]
    splits = [(a / f"{s}.txt").read_text().split() for s in ("train", "val", "test")]
    assert sorted(sum(splits, [])) == [f"{i:06d}" for i in range(6)]
    std = np.load(a / "Std.npy")
    assert std.shape == (263,) and (std > 0).all()
    line = (a / "texts/000000.txt").read_text().splitlines()[0]
    cap, toks, start, end = line.split("#")
    assert len(cap.split()) == len(toks.split()) and start == end == "0.0"


def test_motion_plausibility():
    for i in range(10):
        m = generate_motion(0, i)
        j = m.joints
        assert abs(j[..., 1].min()) < 1e-9  # lowest joint touches the floor
        # fixed bone lengths: left forearm and left shin constant over time
        for a, b in ((18, 20), (4, 7)):
            length = np.linalg.norm(j[:, a] - j[:, b], axis=-1)
            assert length.std() < 1e-9
        step = np.linalg.norm(np.diff(j, axis=0), axis=-1).max()
        assert step < 0.5  # metres per frame: smooth trajectories
        assert len(m.captions) == 3 and all(c.split()[0] in ("a", "someone", "the") for c in m.captions)


def test_tokens_have_pos_tags():
    toks = tokenize("a person walks forward quickly then turns left").split()
    assert toks[:3] == ["a/DET", "person/NOUN", "walk/VERB"]
    assert "turn/VERB" in toks and "quickly/ADV" in toks


def test_default_dataset_generates_once_and_regenerates_if_incomplete(tmp_path):
    root = tmp_path / "cache" / "ds"
    out = default_dataset(root, progress=False, n_motions=5)
    assert out == root and (root / MANIFEST).is_file()
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temp left
    stamp = (root / "Mean.npy").stat().st_mtime_ns
    assert default_dataset(root, progress=False, n_motions=5) == root
    assert (root / "Mean.npy").stat().st_mtime_ns == stamp  # reused, not rewritten
    os.remove(root / "new_joint_vecs" / "000002.npy")
    default_dataset(root, progress=False, n_motions=5)
    assert (root / "new_joint_vecs" / "000002.npy").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not written by rvqfast"):
        default_dataset(foreign, progress=False, n_motions=5)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_resolve_dataset(tmp_path, monkeypatch):
    root = generate_dataset(tmp_path / "d", n_motions=4)
    assert resolve_dataset(str(root)) == root
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_dataset(str(tmp_path / "nope"))
    os.remove(root / "Std.npy")
    with pytest.raises(DatasetError, match=r"Std.npy.*python -m rvqfast.data check"):
        resolve_dataset(str(root))
    # "default" goes to $RVQFAST_DATA; a complete small folder there is reused as is
    import rvqfast.data as data
    monkeypatch.setenv("RVQFAST_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(data, "DEFAULT_N_MOTIONS", 4)
    default_dataset(tmp_path / "env", progress=False, n_motions=4)
    assert data.default_root() == tmp_path / "env"
    assert json.loads((tmp_path / "env" / MANIFEST).read_text())["n_motions"] == 4


def test_new_actions_cover_kneeling_bends_twists_and_crossed_arms():
    from rvqfast.data.synthetic import ACTIONS, GENERATOR_VERSION
    from rvqfast.motion.posecodes import POSECODE_SLOTS, posecode_indices
    assert GENERATOR_VERSION >= 2  # v1 caches lack these actions and must be regenerated
    assert {"kneel", "side_bend", "twist", "cross_arms", "clap", "throw"} <= set(ACTIONS)
    seen: dict[str, set] = {}
    knees_down = False
    for i in range(60):
        m = generate_motion(0, i)
        j = m.joints
        for a, b in ((16, 18), (1, 4), (9, 12)):  # upper arm, thigh, spine3-neck keep length
            assert np.linalg.norm(j[:, a] - j[:, b], axis=-1).std() < 1e-9
        assert abs(j[..., 1].min()) < 1e-9
        if m.actions == ["kneel"]:
            knees_down |= bool((j[:, [4, 5], 1].min(0) < 0.10).all())
        idx = posecode_indices(j)
        for s, slot in enumerate(POSECODE_SLOTS):
            seen.setdefault(slot, set()).update(np.unique(idx[:, s]).tolist())
    assert knees_down
    for slot in ("relpos_x:left_hand-right_hand", "relpos_x:neck-pelvis",
                 "relpos_y:left_shoulder-right_shoulder", "ground:left_knee", "ground:right_knee"):
        assert len(seen[slot]) >= 2, slot
