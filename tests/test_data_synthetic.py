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
    assert sorted(sum(splits, [])) == sorted([f"{i:06d}" for i in range(3)]
                                             + [f"M{i:06d}" for i in range(3)])
    for lst in splits:  # a motion and its mirrored copy always share a split
        assert all(("M" + n if not n.startswith("M") else n[1:]) in lst for n in lst)
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
        assert step < 0.8  # metres per frame (16 m/s: a kick's foot or a flip's feet at most)
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


def test_v3_actions_are_on_the_canonical_skeleton_and_cover_floor_and_whole_body_poses():
    from rvqfast.data.synthetic import ACTIONS, FAMILIES, FAMILY_OF, GENERATOR_VERSION
    from rvqfast.motion.posecodes import category_index, posecode_indices, POSECODE_SLOTS
    from rvqfast.motion.retarget import REFERENCE_BONE_LENGTHS, bone_lengths
    assert GENERATOR_VERSION >= 3  # v2 caches lack these actions and must be regenerated
    assert {"cartwheel", "handstand", "roll", "get_up", "backflip", "spin_kick", "lunge",
            "reach_floor", "crawl", "sweep"} <= set(ACTIONS) == set(FAMILY_OF)
    assert sum(len(v) for v in FAMILIES.values()) == len(ACTIONS)

    def slot_hits(j, slot, label):
        s = POSECODE_SLOTS.index(slot)
        return (posecode_indices(j)[:, s] == category_index(slot, label)).any()

    for i, act in enumerate(["handstand", "cartwheel", "get_up", "roll", "backflip"]):
        m = generate_motion(0, i, [act])
        j = m.joints
        assert np.allclose(bone_lengths(j)[1:], REFERENCE_BONE_LENGTHS[1:])
        assert abs(j[..., 1].min()) < 1e-9
        assert np.linalg.norm(np.diff(j, axis=0), axis=-1).max() < 1.0  # m per frame
        if act in ("handstand", "cartwheel", "roll", "backflip"):  # upside down at some point
            assert (j[:, 15, 1] < j[:, 0, 1] - 0.3).any(), act
            assert (j[:, [7, 8], 1].min(1) > j[:, 12, 1]).any(), act
        if act == "get_up":  # lying: trunk horizontal and low, standing at the end
            assert slot_hits(j, "vertical:torso", "horizontal")
            assert j[:8, 12, 1].max() < 0.45 and j[-1, 12, 1] > 1.2


def test_mirrored_copy_and_sweeps_reach_full_flexion(tmp_path):
    from rvqfast.data.synthetic import mirror_motion
    from rvqfast.motion.posecodes import posecode_indices, POSECODE_SLOTS
    m = generate_motion(0, 1, ["wave"])
    mm = mirror_motion(m)
    assert np.allclose(mm.joints[:, 20, 0], -m.joints[:, 21, 0])
    assert all(("left" in a) == ("right" in b) for a, b in zip(m.captions, mm.captions))
    # Range-of-motion sweeps take knees and elbows to full flexion ("completely bent", < 10
    # deg) somewhere in a few dozen motions: categories v2 never produced.
    want = {"angle:left_knee", "angle:right_knee", "angle:left_elbow", "angle:right_elbow"}
    seen = set()
    for i in range(40):
        idx = posecode_indices(generate_motion(3, i, ["sweep"]).joints)
        for s, slot in enumerate(POSECODE_SLOTS):
            if slot in want and (idx[:, s] == 0).any():
                seen.add(slot)
    assert seen, "no sweep reached full knee or elbow flexion"
    with pytest.raises(ValueError, match="actions"):
        generate_motion(0, 0, ["moonwalk"])


def test_unreachable_categories_and_coverage_count(tmp_path):
    from rvqfast.data.synthetic.coverage import category_counts, unreachable_categories
    # Only a hand 0.6+ m from its own shoulder is impossible on the canonical skeleton
    # (upper arm 0.27 + forearm 0.25 + hand 0.08 = 0.60 m).
    got = unreachable_categories()
    assert sorted({s for s, _ in got}) == ["distance:left_hand-left_shoulder",
                                           "distance:right_hand-right_shoulder"]
    assert len(got) == 6 and all(lab != "0.5-0.6 m apart" for _, lab in got)
    root = generate_dataset(tmp_path / "d", n_motions=6, seed=0)
    counts = category_counts(root, "train")
    frames = sum(np.load(root / "new_joints" / f"{n}.npy").shape[0]
                 for n in (root / "train.txt").read_text().split())
    assert counts.shape == (392,) and counts.sum() == 70 * frames


def test_v4_floor_sweeps_lie_outside_the_floor_family():
    """Lying poses must not come only from the floor family, or a model trained without that
    family never sees the body horizontal (issue 13's leave-one-family-out check)."""
    from rvqfast.data.synthetic import FAMILIES, FAMILY_OF, GENERATOR_VERSION
    from rvqfast.motion.posecodes import category_index, posecode_indices, POSECODE_SLOTS
    from rvqfast.motion.retarget import REFERENCE_BONE_LENGTHS, bone_lengths
    assert GENERATOR_VERSION >= 4  # v3 caches lack floor sweeps and must be regenerated
    assert FAMILY_OF["floor_sweep"] == "sweeps" and "floor_sweep" not in FAMILIES["floor"]
    torso = POSECODE_SLOTS.index("vertical:torso")
    horizontal = category_index("vertical:torso", "horizontal")
    lying, moved = [], []
    for i in range(6):
        j = generate_motion(0, i, ["floor_sweep"]).joints
        assert np.allclose(bone_lengths(j)[1:], REFERENCE_BONE_LENGTHS[1:])
        assert abs(j[..., 1].min()) < 1e-9
        lying.append((posecode_indices(j)[:, torso] == horizontal).mean())
        rel = j[:, [20, 21]] - j[:, :1]  # wrists relative to the pelvis
        moved.append(np.linalg.norm(np.diff(rel, axis=0), axis=-1).sum(0).min())
    # every motion lies with the trunk horizontal for a while (leg and trunk sweeps lift it
    # into bent-over and kneeling shapes in between), and both arms sweep over a metre
    assert min(lying) > 0.1 and np.mean(lying) > 0.4, lying
    assert min(moved) > 1.0, moved
