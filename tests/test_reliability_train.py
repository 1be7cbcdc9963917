"""Issue 18 regressions: run folders and checkpoints — validate everything before touching a file."""
from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rvqfast.models import MotionTokenizer
from rvqfast.models.persist import CheckpointError, tensors_digest
from rvqfast.train import build_config, train
from rvqfast.train.__main__ import main as train_cli
from rvqfast.train.checkpoint import list_checkpoints
from reliability_support import assert_clean_failure, snapshot

TINY = {"width": 16, "code_dim": 16, "codebook_size": 8, "num_quantizers": 2, "batch_size": 2,
        "window": 16, "warmup_steps": 1, "log_every": 1, "val_every": 0, "ckpt_every": 0,
        "val_max_windows": 2, "num_threads": 1, "gif": False}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from rvqfast.data import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("data") / "d", n_motions=8, seed=0)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "r"
    train(build_config("quick", None, {**TINY, "data": str(data), "out": str(out), "steps": 2}), progress=False)
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "r"))


def _ckpt(run: Path) -> Path:
    return list_checkpoints(run / "checkpoints")[-1][1]


def _craft(path: Path, tensors_fn=None, meta_fn=None, redigest: bool = True) -> None:
    """Rewrite a checkpoint with changed tensors/metadata (a crafted file whose checksum matches)."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["rvqfast"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if tensors_fn:
        tensors_fn(tensors)
    if meta_fn:
        meta_fn(meta)
    if redigest:
        meta["tensors_sha256"] = tensors_digest(tensors)
    save_file(tensors, str(path), metadata={"rvqfast": json.dumps(meta)})


def _resume(r: Path, capsys, *extra: str) -> tuple[int, str]:
    rc = train_cli(["--out", str(r), "--resume", "--steps", "3", "--no-progress", *extra])
    return rc, capsys.readouterr().err


def _set(key, value):
    def f(d):
        d[key] = value
    return f


CRAFTED = {
    "rng_wrong_size": (lambda t: t.update({"rng.torch": t["rng.torch"][:100]}), None, "RNG state"),
    "optim_step_shape": (lambda t: t.update({"optim.0.step": torch.zeros(3)}), None, "optimizer step"),
    "optim_step_fraction": (lambda t: t.update({"optim.0.step": torch.tensor(1.5)}), None, "optimizer step"),
    "nan_weights": (lambda t: t[next(k for k in t if k.startswith("model.") and t[k].is_floating_point())]
                    .view(-1).__setitem__(0, float("nan")), None, "NaN or Inf"),
    "unknown_optim_key": (lambda t: t.update({"optim.0.foo": torch.zeros(1)}), None, "unknown optimizer tensor"),
    "unknown_tensor": (lambda t: t.update({"evil": torch.zeros(1)}), None, "unexpected tensors"),
    "step_fraction": (None, _set("step", 2.5), "step must be an integer"),
    "step_negative": (None, _set("step", -5), "step must be an integer"),
    "step_huge": (None, _set("step", 10**12), "step must be an integer"),
    "step_other": (None, _set("step", 7), "name says step 2"),
    "lr_string": (None, lambda m: m["optimizer"]["param_groups"][0].__setitem__("lr", "x"), "finite number"),
}


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_crafted_checkpoint_is_refused_before_any_file_changes(run, tmp_path, capsys, kind):
    # defect 7: raw tracebacks, wrong advice, emptied log.jsonl, rewritten config.json
    r = _copy(run, tmp_path)
    path = _ckpt(r)
    tfn, mfn, msg = CRAFTED[kind]
    _craft(path, tfn, mfn)
    before = snapshot(r)
    rc, err = _resume(r, capsys)
    assert_clean_failure(rc, err, (path.name,))
    assert msg in err, err
    assert snapshot(r) == before  # log.jsonl, config.json, checkpoints untouched


def test_byte_flip_in_checkpoint_data_is_caught_by_checksum(run, tmp_path, capsys):
    r = _copy(run, tmp_path)
    path = _ckpt(r)
    data = bytearray(path.read_bytes())
    data[-9] ^= 0x10  # inside the last tensor's bytes: still a valid safetensors file
    path.write_bytes(bytes(data))
    rc, err = _resume(r, capsys)
    assert_clean_failure(rc, err, (path.name,))
    assert "checksum" in err


def test_byte_flip_in_weights_is_caught_on_load(run, tmp_path):
    # defect 7: model.safetensors carried no checksum; config.json now records its sha256
    r = _copy(run, tmp_path)
    meta = json.loads((r / "config.json").read_text())
    assert len(meta["weights"]["sha256"]) == 64
    w = r / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256 .*config\.json"):
        MotionTokenizer.load(r)


def test_huge_width_config_fails_fast_naming_config_json(run, tmp_path):
    # defect 9: width 10**7 allocated ~31 GB before the config was sanity-checked
    r = _copy(run, tmp_path)
    meta = json.loads((r / "config.json").read_text())
    meta["tokenizer"]["width"] = 10**7
    (r / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"config\.json: invalid tokenizer settings \(width: expected at most"):
        MotionTokenizer.load(r)


def test_out_naming_a_file_is_refused_before_loading_data(tmp_path, capsys):
    # defect 9: `train --out FILE` failed only after loading the data
    f = tmp_path / "file.txt"
    f.write_text("mine")
    rc = train_cli(["--out", str(f), "--data", str(tmp_path / "no_such_data"), "--no-progress"])
    err = capsys.readouterr().err
    assert_clean_failure(rc, err, (str(f),))
    assert "not a folder" in err and f.read_text() == "mine"


def test_foreign_non_empty_out_folder_is_not_overwritten(data, tmp_path, capsys):
    # defect 6: train --out DIR overwrote a user's config.json
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"my": "settings"}')
    before = snapshot(out)
    rc = train_cli(["--out", str(out), "--data", str(data), "--preset", "quick", "--steps", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert_clean_failure(rc, err, (str(out),))
    assert snapshot(out) == before


def test_run_that_died_before_a_checkpoint_does_not_block_its_out(data, tmp_path):
    # defect 5: a half-made run folder (config.json + log.jsonl) blocked the same --out
    out = tmp_path / "r"
    cfg = build_config("quick", None, {**TINY, "data": str(data), "out": str(out), "steps": 1})
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"format": "rvqfast.tokenizer/1", "tokenizer": {}}))
    (out / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    res = train(cfg, progress=False)
    assert res.step == 1 and (out / "model.safetensors").is_file()


def test_signal_during_final_save_is_reported_and_the_run_completes(data, tmp_path, monkeypatch, capsys):
    # defect 10: SIGTERM during the final validation/save exited 143 with no message
    out = tmp_path / "r"
    real_save = MotionTokenizer.save

    def save_with_signal(self, *a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_save(self, *a, **k)

    monkeypatch.setattr(MotionTokenizer, "save", save_with_signal)
    res = train(build_config("quick", None, {**TINY, "data": str(data), "out": str(out), "steps": 1}),
                progress=False)
    assert not res.interrupted and (out / "model.safetensors").is_file()
    assert "arrived during the final validation/save" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_debug_flag_reraises(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(Exception, match="not a folder"):
        train_cli(["--out", str(f), "--no-progress", "--debug"])


def test_non_finite_batch_names_step_and_data(data, tmp_path, monkeypatch):
    # defect 5: training died with "x contains NaN or Inf values" naming no file or step
    from rvqfast.train import TrainingError
    from rvqfast.train.loop import WindowSampler

    real = WindowSampler.batch

    def poisoned(self, step, *a):
        x = real(self, step, *a)
        return x * float("nan") if step == 1 else x

    monkeypatch.setattr(WindowSampler, "batch", poisoned)
    with pytest.raises(TrainingError, match=rf"step 1: .*--data {data}.*rvqfast.data check"):
        train(build_config("quick", None, {**TINY, "data": str(data), "out": str(tmp_path / "r"), "steps": 3}),
              progress=False)


def test_fifo_checkpoint_does_not_block(run, tmp_path, capsys):
    from reliability_support import time_limit

    r = _copy(run, tmp_path)
    path = _ckpt(r)
    path.unlink()
    os.mkfifo(path)
    with time_limit(20):
        rc, err = _resume(r, capsys)
    assert_clean_failure(rc, err, (path.name,))
    assert "not a regular file" in err
