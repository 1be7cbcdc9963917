"""python -m rvqfast.train: config precedence, checks before training, exact resume,
atomic/validated checkpoints, signals, and a 2-process data-parallel run."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rvqfast.train import CheckpointError, TrainingError, build_config, train
from rvqfast.train.__main__ import main
from rvqfast.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from rvqfast.train.loop import resume_config

REPO = Path(__file__).resolve().parents[1]
TINY = {"width": 32, "code_dim": 32, "codebook_size": 16, "num_quantizers": 3, "batch_size": 4,
        "window": 32, "warmup_steps": 2, "log_every": 1, "val_every": 3, "ckpt_every": 0,
        "val_max_windows": 4, "num_threads": 1, "gif": False}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from rvqfast.data import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("data") / "tiny", n_motions=12, seed=0)


def _cfg(data: Path, out: Path, **kw):
    return build_config("quick", None, {**TINY, "data": str(data), "out": str(out), **kw})


def _losses(out: Path) -> list[tuple[int, float]]:
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in recs if "loss" in r]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


# ---------------------------------------------------------------------------- config


def test_config_precedence(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"steps": 7, "width": 48, "lr": 0.01}))
    cfg = build_config("paper", str(f), {"steps": 9, "out": "x"})
    assert cfg.steps == 9                       # flag beats file
    assert cfg.tokenizer.width == 48 and cfg.lr == 0.01   # file beats preset
    assert cfg.batch_size == 256 and cfg.lr_milestones == (200_000,)  # preset
    assert cfg.lr_at(0) == pytest.approx(0.01 / 1000)
    assert cfg.lr_at(1500) == pytest.approx(0.01)
    assert cfg.lr_at(250_000) == pytest.approx(0.01 * 0.05)
    paper = build_config("paper", None, {"out": "x"})
    assert (paper.lr, paper.betas, paper.batch_size, paper.window, paper.steps, paper.warmup_steps) == \
        (1e-4, (0.9, 0.99), 256, 64, 300_000, 1000)
    assert (paper.tokenizer.width, paper.tokenizer.num_quantizers, paper.tokenizer.codebook_size,
            paper.tokenizer.quantize_dropout, paper.tokenizer.residual_dropout) == (512, 6, 512, 0.2, 0.1)


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps"),
    (["--window", "30"], "--window"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--device", "tpu"], "--device"),
    (["--preset", "nope"], "--preset"),
    (["--data", "/nonexistent/folder"], "does not exist"),
])
def test_bad_flags_fail_before_training(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    rc = main(["--out", str(out), "--no-progress", *argv])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (out / "checkpoints").exists()


def test_unknown_config_key(tmp_path, capsys):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"stepz": 3}))
    assert main(["--out", str(tmp_path / "r"), "--config", str(f)]) == 2
    assert "unknown keys ['stepz']" in capsys.readouterr().err


def test_wrong_width_dataset(tiny_data, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_data, bad)
    name = (bad / "train.txt").read_text().split()[0]
    np.save(bad / "new_joint_vecs" / f"{name}.npy", np.zeros((80, 251), np.float32))
    with pytest.raises(TrainingError, match="251"):
        train(_cfg(bad, tmp_path / "run", steps=1), progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


# ---------------------------------------------------------------------------- runs


def test_train_writes_run_folder_only(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = Path("runs/t")
    res = train(_cfg(tiny_data, out, steps=3, gif=True), progress=False)
    assert res.step == 3 and not res.interrupted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["checkpoints", "config.json", "log.jsonl", "model.safetensors", "posecode_bank.npy", "recon.gif"]
    assert not [p for p in (out / "checkpoints").iterdir() if p.suffix != ".safetensors"]  # no temp files left
    assert "val_loss" in res.val and np.isfinite(res.val["val_loss"])
    recs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert {"loss", "recon", "commit", "usage", "perplexity", "it_s", "lr"} <= set(recs[0])
    from rvqfast.models import MotionTokenizer

    tok = MotionTokenizer.load(out)
    assert tok.config.width == 32
    with pytest.raises(TrainingError, match="--resume"):
        train(_cfg(tiny_data, out, steps=3), progress=False)  # refuses to overwrite a run


def test_resume_is_exact(tiny_data, tmp_path):
    full = train(_cfg(tiny_data, tmp_path / "a", steps=6), progress=False)
    half = train(_cfg(tiny_data, tmp_path / "b", steps=3), progress=False)
    cfg = resume_config(tmp_path / "b", {"steps": 6})
    rest = train(cfg, resume=True, progress=False)
    assert half.losses + rest.losses == full.losses  # bit-for-bit
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    a = load_state(tmp_path / "a")
    b = load_state(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a different seed gives a different curve (the comparison above can fail)
    other = train(_cfg(tiny_data, tmp_path / "c", steps=3, seed=1), progress=False)
    assert other.losses != full.losses[:3]


def load_state(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def test_resume_refuses_changed_architecture(tiny_data, tmp_path):
    train(_cfg(tiny_data, tmp_path / "r", steps=2), progress=False)
    with pytest.raises(TrainingError, match="width"):
        resume_config(tmp_path / "r", {"width": 64, "steps": 4})
    with pytest.raises(TrainingError, match="no checkpoint"):
        resume_config(tmp_path / "missing", {})


def test_resume_of_a_run_saved_before_the_skeleton_and_heading_settings(tiny_data, tmp_path, monkeypatch):
    import rvqfast.train.checkpoint as ck

    train(_cfg(tiny_data, tmp_path / "r", steps=2, skeleton=False), progress=False)
    read = ck.read_checkpoint_meta

    def older(path):
        meta = read(path)
        del meta["config"]["skeleton"], meta["config"]["heading_loss_weight"]
        return meta
    monkeypatch.setattr(ck, "read_checkpoint_meta", older)
    cfg = resume_config(tmp_path / "r", {"steps": 4})
    assert cfg.skeleton is True  # output only: today's default
    assert cfg.heading_loss_weight == 0.0  # a loss added later: the run trained without it
    def incomplete(path):  # a training setting missing is still refused
        meta = read(path)
        del meta["config"]["lr"]
        return meta
    monkeypatch.setattr(ck, "read_checkpoint_meta", incomplete)
    with pytest.raises(CheckpointError, match="lr"):
        resume_config(tmp_path / "r", {"steps": 4})


def test_corrupt_and_mismatched_checkpoints(tiny_data, tmp_path):
    from rvqfast.models import MotionTokenizer, TokenizerConfig

    train(_cfg(tiny_data, tmp_path / "r", steps=2), progress=False)
    (_, path), = list_checkpoints(tmp_path / "r" / "checkpoints")
    cfg = resume_config(tmp_path / "r", {"steps": 4})
    model = MotionTokenizer(cfg.tokenizer)
    opt = torch.optim.AdamW(model.parameters())
    meta = load_checkpoint(path, model, opt)
    assert meta["step"] == 2 and len(opt.state) > 0

    other = MotionTokenizer(TokenizerConfig(**{**cfg.tokenizer.to_dict(), "width": 16}))
    with pytest.raises(CheckpointError, match="does not match the model"):
        load_checkpoint(path, other, torch.optim.AdamW(other.parameters()))

    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="corrupt"):
        train(cfg, resume=True, progress=False)
    path.write_bytes(b"\x00" * 64)
    assert main(["--out", str(tmp_path / "r"), "--resume", "--no-progress"]) == 2


def test_checkpoint_keeps_newest(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, model, opt, {"config": {}}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000000004.safetensors", "step_000000005.safetensors"]


def test_sigterm_saves_and_exits_cleanly(tiny_data, tmp_path):
    out = tmp_path / "sig"
    cmd = [sys.executable, "-m", "rvqfast.train", "--data", str(tiny_data), "--out", str(out), "--preset", "quick",
           "--config", str(_write(tmp_path / "c.json", TINY)), "--steps", "100000", "--no-progress"]
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 2):
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "checkpoint saved" in err and "Traceback" not in err
    ((step, _),) = list_checkpoints(out / "checkpoints")
    assert step >= 2
    assert step == max(s for s, _ in _losses(out))


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_two_process_ddp(tiny_data, tmp_path):
    """torchrun, 2 CPU processes (gloo): codebooks and weights identical on both ranks,
    only rank 0 writes the run folder."""
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import sys, torch, torch.distributed as dist\n"
        "from safetensors.torch import save_file\n"
        "from rvqfast.train import build_config, train\n"
        "cfg = build_config('quick', sys.argv[1], {'data': sys.argv[2], 'out': sys.argv[3], 'steps': 4})\n"
        "res = train(cfg, progress=False)\n"
        "sd = {k: v.contiguous() for k, v in res.model.state_dict().items()}\n"
        "save_file(sd, f'{sys.argv[4]}/rank{dist.get_rank()}.safetensors')\n"
    )
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port),
           str(worker), str(_write(tmp_path / "c.json", TINY)), str(tiny_data), str(tmp_path / "run"), str(ranks)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    from safetensors.torch import load_file

    s0, s1 = load_file(str(ranks / "rank0.safetensors")), load_file(str(ranks / "rank1.safetensors"))
    assert any(k.endswith("embed") for k in s0)
    for k in s0:
        assert torch.equal(s0[k], s1[k]), k
    assert bool(s0["rvq.initted"].all())
    assert (tmp_path / "run" / "model.safetensors").exists()
    assert len(_losses(tmp_path / "run")) == 4


def test_augment_flags_reach_the_config(capsys):
    from rvqfast.train.__main__ import main
    assert main(["--print-config", "--augment", "mirror,noise", "--augment-fraction", "0.5"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["augment"] == "mirror,noise" and cfg["augment_fraction"] == 0.5
    assert main(["--print-config", "--augment", "yaw"]) == 2
    assert "heading frame" in capsys.readouterr().err


def test_bone_loss_is_logged_and_trains(tiny_data, tmp_path):
    res = train(_cfg(tiny_data, tmp_path / "b", steps=2, bone_loss_weight=1.0), progress=False)
    recs = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    bone = [r["bone"] for r in recs if "loss" in r]
    assert len(bone) == 2 and all(np.isfinite(b) and b > 0 for b in bone)
    assert res.step == 2
    # an rvq model has no pose codes to obey: the loss is not applied (measured to cost it FID)
    train(_cfg(tiny_data, tmp_path / "r", steps=2, bone_loss_weight=1.0, model="rvq"), progress=False)
    recs = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert not [r for r in recs if "bone" in r]


def test_heading_loss_is_logged_for_every_model(tiny_data, tmp_path):
    for model in ("posecode_rvq", "rvq"):
        train(_cfg(tiny_data, tmp_path / model, steps=2, heading_loss_weight=1.0, model=model), progress=False)
        recs = [json.loads(x) for x in (tmp_path / model / "log.jsonl").read_text().splitlines()]
        heading = [r["heading"] for r in recs if "loss" in r]
        assert len(heading) == 2 and all(np.isfinite(h) and h > 0 for h in heading), model


def test_run_decodes_onto_the_training_skeleton(tiny_data, tmp_path, capsys):
    from rvqfast.models import MotionTokenizer
    from rvqfast.motion.retarget import REFERENCE_BONE_LENGTHS

    # The generated data are on the canonical skeleton, so the run records its lengths ...
    train(_cfg(tiny_data, tmp_path / "s", steps=1), progress=False)
    tok = MotionTokenizer.load(tmp_path / "s")
    np.testing.assert_allclose(tok.skeleton.numpy(), REFERENCE_BONE_LENGTHS[1:], atol=1e-6)
    # ... unless asked not to, and the flag reaches the config.
    train(_cfg(tiny_data, tmp_path / "n", steps=1, skeleton=False), progress=False)
    assert MotionTokenizer.load(tmp_path / "n").skeleton is None
    assert main(["--print-config", "--no-skeleton"]) == 0
    assert json.loads(capsys.readouterr().out)["skeleton"] is False
