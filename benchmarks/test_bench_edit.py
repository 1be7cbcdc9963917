"""Pose-code edits: cost of one edit (joint-space solver path, token-level bank path in
onnxruntime) against the plain decode it wraps, and the fixed edit suite.

Set ``RVQFAST_EDIT_RUN`` to a posecode_rvq run folder (and optionally ``RVQFAST_EDIT_MOTIONS``,
default 30, and ``RVQFAST_EDIT_EVALUATOR`` for FID) to run the suite on a trained model and the
default test split; without it a small untrained tokenizer and 2 generated motions keep the
benchmark self-contained (timings only: its edit rates mean nothing).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from rvqfast.editing import edit_many
from rvqfast.editing.bank import bank_from_features, bank_tensors, complete_codes, request_vector
from rvqfast.editing.suite import SUITE, pick_motions, run_suite
from rvqfast.motion.features import joints_to_features

REQUEST = {"angle:left_knee": "bent 90-100 deg"}


def _tokenizer_and_motions(count: int):
    run = os.environ.get("RVQFAST_EDIT_RUN")
    if run:
        from rvqfast.data import HumanML3D, resolve_dataset
        from rvqfast.editing.bank import load_bank
        from rvqfast.models.tokenizer import MotionTokenizer
        tok = MotionTokenizer.load(run)
        tok.posecode_bank = load_bank(run)
        ds = HumanML3D(resolve_dataset("default"), "test")
        ids = pick_motions(ds.features, count)
        return tok, [ds.features[i][: ds.features[i].shape[0] // 4 * 4] for i in ids], ds
    from rvqfast.data.synthetic import generate_motion
    from rvqfast.models.tokenizer import MotionTokenizer, TokenizerConfig
    torch.manual_seed(0)
    tok = MotionTokenizer(TokenizerConfig(model="posecode_rvq", width=64, code_dim=64, num_quantizers=4,
                                          codebook_size=64, kmeans_init=False)).eval()
    motions, i = [], 0
    while len(motions) < count:
        j = generate_motion(0, i).joints
        i += 1
        if j.shape[0] > 81:
            motions.append(joints_to_features(j)[:80].astype(np.float32))
    tok.posecode_bank = bank_from_features(motions)
    return tok, motions, None


@pytest.fixture(scope="module")
def setup():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield _tokenizer_and_motions(int(os.environ.get("RVQFAST_EDIT_MOTIONS", "30")) if os.environ.get("RVQFAST_EDIT_RUN") else 2)
    torch.set_num_threads(threads)


@pytest.mark.benchmark(group="edit-one-motion")
def test_bench_decode_baseline(benchmark, setup):
    tok, motions, _ = setup
    x = torch.from_numpy(motions[0])[None]
    cats, idx = tok.encode(x)
    with torch.no_grad():
        benchmark(tok.decode, cats, idx)


@pytest.mark.benchmark(group="edit-one-motion")
@pytest.mark.parametrize("residual", ["fit", "requantize", "keep"])
def test_bench_edit_solver(benchmark, setup, residual):
    """One edit by residual policy: the solve alone (keep), re-encoding (requantize) and the
    default decoder fit."""
    tok, motions, _ = setup
    res = benchmark.pedantic(edit_many, args=(tok, motions[:1], REQUEST), kwargs={"measure": False, "residual": residual},
                             rounds=3, iterations=1)
    benchmark.extra_info["frames"] = int(motions[0].shape[0])
    assert res[0].features.shape == motions[0].shape


@pytest.mark.benchmark(group="edit-one-motion")
def test_bench_edit_bank_onnx(benchmark, setup, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from rvqfast.export.edit_graph import build_edit_model
    tok, motions, _ = setup
    model = build_edit_model(tok.posecode_bank, tok.num_quantizers, tok.config.codebook_size, opset=15)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    cats, idx = tok.encode(torch.from_numpy(motions[0])[None])
    w = np.ones(cats.shape[:2], np.float32)
    feed = {"categories": cats.numpy(), "indices": idx.numpy(), "request": request_vector(REQUEST).numpy(), "weight": w}
    out = benchmark(sess.run, None, feed)
    ref, _ = complete_codes(cats, request_vector(REQUEST), torch.from_numpy(w), bank_tensors(tok.posecode_bank))
    np.testing.assert_array_equal(out[0], ref.numpy())
    assert (out[3] == 1).all()  # valid input
    benchmark.extra_info["bank_codes"] = int(tok.posecode_bank.shape[0])


@pytest.mark.benchmark(group="edit-suite")
def test_bench_edit_suite(benchmark, setup):
    """The fixed suite (24 requests x whole motion / 2 s window); rates land in extra_info."""
    tok, motions, ds = setup
    requests = SUITE if os.environ.get("RVQFAST_EDIT_RUN") else SUITE[:2]
    ev, ref = None, None
    if os.environ.get("RVQFAST_EDIT_EVALUATOR") and ds is not None:
        from rvqfast.eval.evaluator import load_evaluator
        ev, ref = load_evaluator(os.environ["RVQFAST_EDIT_EVALUATOR"]), list(ds.features)
    res = benchmark.pedantic(run_suite, args=(tok, motions), kwargs={"requests": requests, "progress": False,
                                                                      "evaluator": ev, "fid_reference": ref},
                             rounds=1, iterations=1)
    for mode, s in res["summary"].items():
        for k in ("success", "pre_edit_success", "unrelated_preservation", "coupled_change"):
            benchmark.extra_info[f"{mode}_{k}"] = s[k]
    if "fid" in res:
        benchmark.extra_info.update({f"fid_{k}": v for k, v in res["fid"].items()})
    assert len(res["requests"]) == 2 * len(requests)
