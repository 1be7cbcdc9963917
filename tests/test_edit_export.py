"""Edits in an engine: Python edits decode identically through decoder.onnx, and edit.onnx
(token-level bank completion) matches its PyTorch reference in onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")

from rvqfast.edit import edit, edit_many  # noqa: E402
from rvqfast.editing.bank import bank_from_features, complete_codes, bank_tensors, request_vector  # noqa: E402
from rvqfast.export.allowlist import check_graph  # noqa: E402
from rvqfast.export.exporter import export_tokenizer  # noqa: E402
from rvqfast.motion.features import features_to_joints, joints_to_features  # noqa: E402
from rvqfast.motion.retarget import REFERENCE_BONE_LENGTHS  # noqa: E402
from rvqfast.motion.skeleton import frame_bone_lengths  # noqa: E402
from rvqfast.motion.posecodes import POSECODE_SLOTS, coupled_slots  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _motions(count: int, frames: int = 40) -> list[np.ndarray]:
    from rvqfast.data.synthetic import generate_motion
    out, i = [], 0
    while len(out) < count:
        j = generate_motion(0, i).joints
        i += 1
        if j.shape[0] > frames:
            out.append(joints_to_features(j)[:frames].astype(np.float32))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from rvqfast.models.tokenizer import MotionTokenizer, TokenizerConfig
    torch.manual_seed(0)
    tok = MotionTokenizer(TokenizerConfig(model="posecode_rvq", width=32, code_dim=16, num_quantizers=2,
                                          codebook_size=8, dilations=(1,), kmeans_init=False)).eval()
    motions = _motions(6)
    tok.posecode_bank = bank_from_features(motions)
    # as a model trained on the generated data: decoded onto their (canonical) skeleton
    tok.set_skeleton(torch.as_tensor(REFERENCE_BONE_LENGTHS[1:]))
    out = tmp_path_factory.mktemp("edit_export")
    manifest = export_tokenizer(tok, out)
    return tok, out, manifest, motions


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_python_edit_decodes_identically_in_decoder_onnx(exported):
    tok, out, manifest, motions = exported
    assert "edit" in manifest["graphs"]
    res = edit(tok, motions[0], {"angle:left_elbow": "bent 90-100 deg"}, "8:24", blend=4, solver_iters=40, refine=1)
    dec = _session(out / "decoder.onnx")
    got = dec.run(None, {"categories": res.categories[None].astype(np.int64),
                         "indices": res.indices[None].astype(np.int64)})[0]
    np.testing.assert_allclose(got[0], res.features, atol=2e-4, rtol=1e-4)
    bones = frame_bone_lengths(features_to_joints(res.features.astype(np.float64)))
    np.testing.assert_allclose(bones, np.broadcast_to(REFERENCE_BONE_LENGTHS[1:], bones.shape), atol=1e-5)


def test_edit_onnx_matches_reference_and_meets_requests(exported):
    tok, out, _, motions = exported
    model_ops = check_graph(str(out / "edit.onnx"), max_opset=15)
    assert "ArgMin" in model_ops and not model_ops & {"Loop", "If", "Scan"}
    sess = _session(out / "edit.onnx")
    cats, idx = tok.encode(torch.from_numpy(np.stack(motions[1:3])))
    requested = {"angle:left_knee": "straight", "vertical:right_forearm": "vertical"}
    req = request_vector(requested)
    w = torch.zeros(2, cats.shape[1])
    w[:, 3:7] = 1.0
    got = sess.run(None, {"categories": cats.numpy(), "indices": idx.numpy(), "request": req.numpy(),
                          "weight": w.numpy()})
    ref_cats, ref_met = complete_codes(cats, req, w, bank_tensors(tok.posecode_bank))
    np.testing.assert_array_equal(got[0], ref_cats.numpy())
    np.testing.assert_array_equal(got[2], ref_met.numpy())
    # residual dropped on edited frames only
    assert (got[1][:, 3:7] == -1).all() and np.array_equal(got[1][:, :3], idx[:, :3].numpy())
    # requests hold where met; frames outside the window and unrelated slots are untouched
    req_slots = [POSECODE_SLOTS.index(s) for s in requested]
    met = got[2][:, 3:7] > 0.5
    assert met.any()
    assert (got[0][:, 3:7][met][:, req_slots] == req.numpy()[req_slots]).all()
    np.testing.assert_array_equal(got[0][:, :3], cats[:, :3].numpy())
    touched = set(req_slots) | {POSECODE_SLOTS.index(s) for s in coupled_slots(list(requested))}
    unrelated = [s for s in range(70) if s not in touched]
    np.testing.assert_array_equal(got[0][..., unrelated], cats.numpy()[..., unrelated])
    # the edited limb's slots come from one seen assignment (a bank row)
    bank = tok.posecode_bank
    t_list = sorted(touched)
    for b, n in zip(*np.nonzero(met)):
        rows = got[0][b, 3 + n, t_list]
        assert (bank[:, t_list] == rows).all(axis=1).any()


def test_bank_method_matches_edit_onnx_then_decoder(exported):
    tok, out, _, motions = exported
    res = edit_many(tok, [motions[3]], {"relpos_y:left_hand-left_shoulder": "above"}, ["12:20"],
                    method="bank", residual="drop", blend=0)[0]
    assert res.latent_frames == [3, 4]
    sess = _session(out / "edit.onnx")
    w = np.zeros((1, 10), np.float32)
    w[0, 3:5] = 1
    got = sess.run(None, {"categories": res.original_categories[None], "indices": res.original_indices[None],
                          "request": request_vector(res.requested).numpy(), "weight": w})
    np.testing.assert_array_equal(got[0][0], res.categories)
    np.testing.assert_array_equal(got[1][0], res.indices)
    dec = _session(out / "decoder.onnx").run(None, {"categories": got[0], "indices": got[1]})[0]
    np.testing.assert_allclose(dec[0], res.features, atol=2e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="re-quantize"):
        edit_many(tok, [motions[3]], {"angle:left_knee": "straight"}, method="bank", residual="requantize")


def test_edit_onnx_guards_bad_input(exported):
    """An engine calls edit.onnx directly: out-of-range codes, request entries and NaN weights are
    flagged in ``valid`` and read as safe values, never outside the graph's tables."""
    tok, out, _, motions = exported
    sess = _session(out / "edit.onnx")
    cats, idx = tok.encode(torch.from_numpy(np.stack(motions[1:3])))
    req = request_vector({"angle:left_knee": "straight"})
    w = torch.zeros(2, cats.shape[1])
    w[:, 3:7] = 1.0
    feeds = {"categories": cats.numpy(), "indices": idx.numpy(), "request": req.numpy(), "weight": w.numpy()}
    clean = sess.run(None, feeds)
    assert (clean[3] == 1).all()
    bad_cats, bad_idx, bad_w = cats.numpy().copy(), idx.numpy().copy(), w.numpy().copy()
    bad_cats[0, 1, 5] = 999
    bad_cats[1, 2, 0] = -7
    bad_idx[0, 4, 0] = 10 ** 6
    bad_w[1, 0] = np.nan
    got = sess.run(None, {**feeds, "categories": bad_cats, "indices": bad_idx, "weight": bad_w})
    expected_bad = {(0, 1), (1, 2), (0, 4), (1, 0)}
    for b in range(2):
        for n in range(cats.shape[1]):
            assert got[3][b, n] == (0 if (b, n) in expected_bad else 1)
    assert ((got[0] >= 0) & (got[0] < np.asarray(tok.slot_sizes))).all()
    assert ((got[1] >= -1) & (got[1] < tok.config.codebook_size)).all()
    # a bad request entry flags every token and is read as "free"
    bad_req = req.numpy().copy()
    bad_req[10] = 50
    got = sess.run(None, {**feeds, "request": bad_req})
    assert (got[3] == 0).all()
    np.testing.assert_array_equal(got[0], clean[0])
