"""Issue 18 regressions: every CLI ends with a message naming the file, never a traceback
(unless --debug), and never overwrites files of somebody else's in --out."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rvqfast.analyze import main as analyze_cli
from rvqfast.edit import main as edit_cli
from rvqfast.eval.cli import evaluate_main
from rvqfast.export.__main__ import main as export_cli
from reliability_support import assert_clean_failure, snapshot
from test_export import _tokenizer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    _tokenizer("posecode_rvq", width=16).save(out)
    return out


def _corrupt(run, tmp_path, kind):
    import shutil
    r = shutil.copytree(run, tmp_path / "bad_run")
    if kind == "config":
        (r / "config.json").write_text("{not json")
        return r, "config.json"
    if kind == "config_values":
        meta = json.loads((r / "config.json").read_text())
        meta["tokenizer"]["num_quantizers"] = -3
        (r / "config.json").write_text(json.dumps(meta))
        return r, "config.json"
    w = r / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-50])
    return r, "model.safetensors"


@pytest.mark.parametrize("kind", ["config", "config_values", "weights"])
@pytest.mark.parametrize("tool", ["analyze", "edit", "evaluate", "export"])
def test_corrupt_run_gives_a_message_naming_the_file(run, tmp_path, capsys, kind, tool):
    # defect 9: analyze/edit/evaluate on a corrupt run raised raw tracebacks
    r, name = _corrupt(run, tmp_path, kind)
    out = tmp_path / "out"
    if tool == "analyze":
        rc = analyze_cli([str(r), "--out", str(out)])
    elif tool == "edit":
        x = tmp_path / "x.npy"
        np.save(x, np.zeros((8, 263), np.float32))
        rc = edit_cli([str(r), "--input", str(x), "--set", "angle:left_knee=straight", "--out", str(out), "--no-gif"])
    elif tool == "evaluate":
        rc = evaluate_main([str(r), "--evaluator", str(tmp_path / "no_evaluator"), "--out", str(out)])
        name = "no_evaluator"  # the evaluator is loaded first; its absence is what is reported
    else:
        rc = export_cli([str(r), "--out", str(out)])
    assert_clean_failure(rc, capsys.readouterr().err, (name,))


def test_debug_shows_the_traceback(run, tmp_path):
    r, _ = _corrupt(run, tmp_path, "config")
    with pytest.raises(Exception, match="config.json"):
        analyze_cli([str(r), "--out", str(tmp_path / "o"), "--debug"])


@pytest.mark.parametrize("tool", ["export", "analyze"])
def test_out_naming_an_existing_file(run, tmp_path, capsys, tool):
    # defect 9: --out naming an existing file gave a traceback
    f = tmp_path / "file.txt"
    f.write_text("mine")
    cli = export_cli if tool == "export" else analyze_cli
    rc = cli([str(run), "--out", str(f)])
    assert_clean_failure(rc, capsys.readouterr().err, (str(f),))
    assert f.read_text() == "mine"


def test_export_refuses_a_foreign_folder_and_reuses_its_own(run, tmp_path, capsys):
    # defect 6: export --out DIR overwrote a user's manifest.json
    out = tmp_path / "mine"
    out.mkdir()
    (out / "manifest.json").write_text('{"my": "manifest"}')
    before = snapshot(out)
    rc = export_cli([str(run), "--out", str(out), "--graphs", "rvq"])
    assert_clean_failure(rc, capsys.readouterr().err, (str(out),))
    assert snapshot(out) == before
    fresh = tmp_path / "fresh"
    assert export_cli([str(run), "--out", str(fresh), "--graphs", "rvq"]) == 0
    assert export_cli([str(run), "--out", str(fresh), "--graphs", "rvq"]) == 0  # an earlier export: ok
