"""The residual fit of edits (rvqfast.editing.fit), the kinematic coupling of an edit and the
solver's foot planting."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rvqfast.editing import edit_many
from rvqfast.editing.apply import _fit, fit_arguments
from rvqfast.editing.fit import _maskable, _zero_padded, fit_residual
from rvqfast.editing.metrics import foot_skating_cm_s
from rvqfast.editing.solver import BONES, _plant_feet, apply_rotations, edit_coupled_slots, movable_bones
from rvqfast.motion.features import joints_to_features
from rvqfast.motion.posecodes import POSECODE_SLOTS, slot_values
from rvqfast.motion.skeleton import rest_pose

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_tokenizer(seed=0, codebook_size=16):
    from rvqfast.models.tokenizer import MotionTokenizer, TokenizerConfig
    torch.manual_seed(seed)
    cfg = TokenizerConfig(model="posecode_rvq", width=32, code_dim=16, num_quantizers=2,
                          codebook_size=codebook_size, dilations=(1, 3), kmeans_init=False)
    return MotionTokenizer(cfg).eval()


def _motion(index: int, frames: int) -> np.ndarray:
    from rvqfast.data.synthetic import generate_motion
    return joints_to_features(generate_motion(0, index).joints)[:frames].astype(np.float32)


def test_zero_padded_batch_decodes_each_motion_exactly():
    tok = _tiny_tokenizer()
    assert _maskable(tok.decoder)
    lengths = torch.tensor([6, 11, 1])
    n = int(lengths.max())
    h = torch.randn(3, tok.config.code_dim, n)
    with torch.no_grad():
        with _zero_padded(tok.decoder, lengths, n):
            batched = tok.decoder(h)
        for b, length in enumerate(lengths.tolist()):
            alone = tok.decoder(h[b:b + 1, :, :length])
            assert torch.allclose(batched[b:b + 1, :, :alone.shape[-1]], alone, atol=1e-5)
        # without the mask the padding leaks into the last frames (the test can fail)
        assert not torch.allclose(tok.decoder(h)[0, :, :24], tok.decoder(h[:1, :, :6]), atol=1e-5)
    # outside the context the hooks are gone
    assert all(not m._forward_pre_hooks for m in tok.decoder.modules())


def test_unmaskable_decoder_is_detected():
    tok = _tiny_tokenizer()
    tok.decoder.net.append(nn.GELU())
    assert not _maskable(tok.decoder)
    tok2 = _tiny_tokenizer()
    tok2.decoder.net.append(nn.Upsample(scale_factor=1.0, mode="linear"))
    assert not _maskable(tok2.decoder)


def _fit_inputs(tok, motions, request):
    """Edit results with the residual kept, as :func:`rvqfast.editing.apply._fit` receives them."""
    return edit_many(tok, motions, request, [None, "8:28"][:len(motions)], residual="keep", solver_iters=30,
                     blend=2, measure=False)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("unmaskable", [False, True])
def test_fit_never_scores_worse_than_its_start_and_keeps_untouched_tokens(unmaskable):
    tok = _tiny_tokenizer(codebook_size=32)
    if unmaskable:  # per-motion path
        tok.decoder.net.append(nn.Identity())
        tok.decoder.net[-1].__class__ = type("Opaque", (nn.Identity,), {})
        assert not _maskable(tok.decoder)
    motions = [_motion(3, 40), _motion(6, 64)]
    request = {"angle:left_elbow": "bent 90-100 deg"}
    results = _fit_inputs(tok, motions, request)
    inputs = [torch.from_numpy(m)[None] for m in motions]
    out, start, best = fit_residual(tok, *fit_arguments(tok, results, inputs, request), iters=15, return_scores=True)
    assert bool((best <= start + 1e-6).all())
    _fit(tok, results, inputs, request, None, 15)
    for r, o in zip(results, out):
        assert np.array_equal(r.indices, o[:r.categories.shape[0]].numpy())   # deterministic
    for r in results:
        untouched = [j for j in range(r.categories.shape[0]) if j not in r.latent_frames]
        assert np.array_equal(r.indices[untouched], r.original_indices[untouched])
        assert r.indices.min() >= 0 and r.indices.max() < 32


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_hard_score_ignores_the_pull_towards_the_solved_joints():
    """The score that picks iterates and codes judges slots, bones and feet, not closeness to the
    solved pose (that pull only steers the gradient): the starting score must not change with the
    joints weight, and must change with a judged term's weight."""
    from rvqfast.editing.fit import FitWeights

    tok = _tiny_tokenizer(codebook_size=32)
    motions = [_motion(3, 40)]
    request = {"angle:left_elbow": "bent 90-100 deg"}
    results = _fit_inputs(tok, motions, request)
    args = fit_arguments(tok, results, [torch.from_numpy(motions[0])[None]], request)

    def start_score(**weights):
        return fit_residual(tok, *args, iters=0, return_scores=True, loss_weights=FitWeights(**weights))[1]

    base = start_score()
    assert torch.equal(start_score(joints=1e6), base)
    assert not torch.equal(start_score(bones=1e9), base)


def test_fit_with_fewer_stages_marks_the_rest_skipped():
    tok = _tiny_tokenizer()
    res = edit_many(tok, [_motion(3, 40)], {"vertical:right_forearm": "horizontal"}, residual="fit",
                    n_quantizers=1, fit_iters=3, solver_iters=20, measure=False)[0]
    assert (res.indices[:, 1] == -1).all() and (res.indices[:, 0] >= 0).all()
    y = tok.decode(torch.from_numpy(res.categories)[None], torch.from_numpy(res.indices)[None], 1)
    assert np.allclose(y[0].detach().numpy(), res.features, atol=1e-5)


def test_coupling_follows_the_kinematics():
    knee = edit_coupled_slots(["angle:left_knee"])
    # bending the knee moves the foot: its ground, distance and position slots are coupled
    for s in ("ground:left_foot", "distance:left_foot-right_foot", "vertical:left_calf"):
        assert s in knee, s
    for s in ("angle:right_knee", "angle:left_elbow", "ground:right_foot", "vertical:torso"):
        assert s not in knee, s
    torso = edit_coupled_slots(["vertical:torso"])
    assert "angle:left_elbow" not in torso            # the arm turns rigidly with the trunk
    assert "relpos_x:right_hand-right_shoulder" in torso or any(s.startswith("relpos_x") for s in torso)
    assert "ground:right_knee" in edit_coupled_slots(["ground:left_foot"])  # the body is lifted


@pytest.mark.parametrize("slot", ["angle:left_knee", "angle:right_elbow", "vertical:torso",
                                  "distance:left_hand-right_hand", "relpos_y:left_knee-right_knee",
                                  "ground:right_knee", {"ground:right_knee": "on ground"}])
def test_unrelated_slots_are_invariant_under_the_moves_of_an_edit(slot):
    """Any rotation of the bones the solver may move for ``slot`` leaves every slot outside
    ``edit_coupled_slots`` exactly where it was: the coupling is complete."""
    from rvqfast.data.synthetic import generate_motion
    request = slot if isinstance(slot, dict) else [slot]
    joints = torch.from_numpy(generate_motion(0, 7).joints[:12]).to(torch.float64)
    bones = movable_bones(request)
    g = torch.Generator().manual_seed(1)
    rot = 0.6 * torch.randn(joints.shape[0], len(bones), 3, generator=g, dtype=torch.float64)
    moved = apply_rotations(joints, rot, bones)
    unrelated = [i for i, s in enumerate(POSECODE_SLOTS) if s not in request and s not in edit_coupled_slots(request)]
    assert unrelated
    assert torch.allclose(slot_values(moved)[:, unrelated], slot_values(joints)[:, unrelated], atol=1e-6)
    assert all(0 <= b < len(BONES) for b in bones)


def test_plant_feet_cancels_an_added_slide():
    pose = torch.from_numpy(rest_pose()).to(torch.float32)
    f = 30
    base = pose.expand(f, -1, -1).clone()
    base[..., 1] -= base[..., 1].min()            # feet on the floor
    drift = torch.zeros(f, 1, 3)
    drift[:, 0, 0] = torch.linspace(0, 0.3, f)      # the edit drags the whole body 30 cm
    edited = base + drift
    shift = _plant_feet(base, edited, torch.ones(f - 1), 1e5, 100)
    assert torch.all(shift[:, 1] == 0)               # horizontal only: no pose code changes
    before = foot_skating_cm_s(edited.numpy().astype(np.float64))
    after = foot_skating_cm_s((edited + shift.unsqueeze(1)).numpy().astype(np.float64))
    assert before > 15 and after < 0.5 * before



def test_kneeling_request_bends_the_legs_instead_of_sinking_into_the_floor():
    from rvqfast.editing.solver import lowers_body, solve
    from rvqfast.motion.posecodes import category_index
    pose = torch.from_numpy(rest_pose()).to(torch.float32)
    pose[:, 1] -= pose[:, 1].min()                     # standing on the floor (y = 0)
    slot = "ground:right_knee"
    assert lowers_body({slot: "on ground"}) and lowers_body({slot: 0})
    assert not lowers_body({slot: "off ground"}) and not lowers_body([slot])
    legs = {b for b, (_, c) in enumerate(BONES) if c.endswith(("knee", "ankle", "foot"))}
    assert legs <= set(movable_bones({slot: "on ground"}))
    assert not legs <= set(movable_bones([slot]))
    # both knees bend for a kneel: the left leg's slots are coupled too
    assert "angle:left_knee" in edit_coupled_slots({slot: "on ground"})
    sol = solve(pose[None].expand(4, -1, -1).clone(), {slot: category_index(slot, "on ground")}, iters=150)
    assert bool(sol.met.all())
    assert float(sol.joints[..., 1].min()) > -0.03       # nothing pushed through the floor
    knee_angle = slot_values(sol.joints)[:, POSECODE_SLOTS.index("angle:right_knee")]
    assert bool((knee_angle < 150).all())                # the knee bends to reach the floor


def test_code_search_options_are_checked():
    from rvqfast.editing.fit import CodeSearch
    assert CodeSearch().sweeps >= 1
    for bad in ({"sweeps": -1}, {"candidates": 0}, {"stride": 0}, {"radius": 1.5}, {"candidates": True}):
        with pytest.raises(ValueError, match="CodeSearch"):
            CodeSearch(**bad)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_code_search_never_worse_than_the_gradient_fit_alone():
    from rvqfast.editing.fit import CodeSearch
    tok = _tiny_tokenizer(codebook_size=32)
    motions = [_motion(3, 40), _motion(6, 64)]
    request = {"angle:left_elbow": "bent 90-100 deg"}
    results = _fit_inputs(tok, motions, request)
    inputs = [torch.from_numpy(m)[None] for m in motions]
    args = fit_arguments(tok, results, inputs, request)
    touched = args[2]
    plain, start, best_plain = fit_residual(tok, *args, iters=6, search=CodeSearch(sweeps=0), return_scores=True)
    found, start2, best = fit_residual(tok, *args, iters=6, search=CodeSearch(sweeps=2, candidates=4, stride=2),
                                       return_scores=True)
    assert torch.equal(start, start2)
    assert bool((best <= best_plain + 1e-6).all())
    assert torch.equal(found[~touched], plain[~touched])          # untouched tokens keep their codes
    assert found.min() >= 0 and found.max() < 32


def test_fit_search_option_is_checked_and_reaches_the_fit(monkeypatch):
    import rvqfast.editing.fit as fit_module
    tok = _tiny_tokenizer()
    m = [_motion(3, 40)]
    with pytest.raises(ValueError, match="fit_search"):
        edit_many(tok, m, {"vertical:right_forearm": "horizontal"}, fit_search=-1, measure=False)
    seen = []
    real = fit_module.fit_residual

    def spy(*args, **kwargs):
        seen.append(kwargs["search"].sweeps)
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "fit_residual", spy)
    for sweeps in (0, 2):
        res = edit_many(tok, m, {"vertical:right_forearm": "horizontal"}, residual="fit", fit_iters=2,
                        fit_search=sweeps, solver_iters=10, measure=False)[0]
        assert (res.indices >= 0).all()
    assert seen == [0, 2]
