"""rvqfast studio: the HTTP server (paths, uploads, API) and the page in a real headless Chromium.

One tiny run is trained for the whole module (a few seconds): the browser decodes with its
exported decoder.onnx and the results are compared with onnxruntime in Python.
"""
from __future__ import annotations

import gzip
import http.client
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from rvqfast.data import write_dataset_atomically
from rvqfast.data.bvh import bvh_to_joints, load_bvh, parse_bvh
from rvqfast.data.bvh_export import joints_to_bvh
from rvqfast.motion.features import features_to_joints, joints_to_features
from rvqfast.motion.retarget import retarget
from rvqfast.studio import build_state, make_server
from rvqfast.studio.headless import Browser, find_chromium
from rvqfast.studio.library import MAX_UPLOAD_BYTES
from rvqfast.studio.server import STATIC_DIR, safe_relative

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio")
    data = write_dataset_atomically(root / "data", n_motions=8, seed=0, progress=False)
    r = subprocess.run([sys.executable, "-W", "ignore", "-m", "rvqfast.train", "--out", str(root / "run"),
                        "--data", str(data), "--preset", "quick", "--steps", "12", "--batch-size", "4", "--window", "32",
                        "--num-threads", "1", "--no-gif", "--no-progress", "--val-every", "0",
                        "--ckpt-every", "0"], capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return root / "run", data


@pytest.fixture(scope="module")
def studio(run_and_data):
    run, data = run_and_data
    state = build_state(run, data)
    server = make_server(state, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, server.server_address[1]
    server.shutdown()
    server.server_close()


def _request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """Raw request: the path is sent exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    hdrs = {"Host": f"127.0.0.1:{port}", **({"X-Studio": "1"} if method == "POST" else {}), **(headers or {})}
    if body is not None:
        hdrs.setdefault("Content-Length", str(len(body)))
    for k, v in hdrs.items():
        conn.putheader(k, v)
    conn.endheaders()
    if body is not None:
        conn.send(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


# ----------------------------------------------------------------------------- server


@pytest.mark.parametrize("path,ok", [
    ("app.js", True), ("vendor/three.module.js", True), ("a/b-c_d.e", True),
    ("../x", False), ("a/../b", False), ("./a", False), ("/etc/passwd", False), ("a\\..\\b", False),
    ("a/\x00b", False), (".hidden", False), ("a//b", False), ("", False), ("a/", False),
])
def test_safe_relative(path, ok):
    assert (safe_relative(path) is not None) == ok


ATTACKS = [
    "/static/../server.py", "/static/%2e%2e/server.py", "/static/%2E%2E%2Fserver.py", "/static/..%2fapp.py",
    "/static/vendor/..%2f..%2fserver.py", "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fsetup.py", "/static//etc/passwd",
    "/static/%2Fetc%2Fpasswd", "/static/..%5c..%5cserver.py", "/static/index.html%00.js", "/static/%252e%252e/x",
    "/export/../config.json", "/export/%2e%2e%2fconfig.json", "/export/model.safetensors",
    "/export/studio_stamp.json", "/export//etc/passwd", "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
    "/etc/passwd", "//etc/passwd", "/static/.hidden", "/api/../static/app.js",
]


@pytest.mark.parametrize("path", ATTACKS)
def test_no_path_traversal(studio, path):
    _, port = studio
    status, _, body = _request(port, "GET", path)
    assert status == 404, (path, status, body[:200])
    assert b"def " not in body and b"root:" not in body


def test_serves_own_files_and_export(studio):
    state, port = studio
    status, headers, body = _request(port, "GET", "/")
    assert status == 200 and b"rvqfast studio" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, headers, body = _request(port, "GET", "/static/vendor/three.module.js", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    plain = _request(port, "GET", "/static/vendor/three.module.js")[2]
    assert gzip.decompress(body) == plain and b"three" in plain.lower()
    status, headers, body = _request(port, "GET", "/export/decoder.onnx")
    assert status == 200 and body == (state.export_dir / "decoder.onnx").read_bytes()
    assert _request(port, "GET", "/static/vendor/ort-wasm-simd-threaded.wasm")[1]["Content-Type"] == "application/wasm"


def test_host_header_checked(studio):
    _, port = studio
    status, _, body = _request(port, "GET", "/api/info", headers={"Host": "evil.example:80"})
    assert status == 403 and b"Host" in body


def test_post_needs_studio_header_and_same_origin(studio):
    _, port = studio
    text = b"HIERARCHY\n"
    status, _, body = _request(port, "POST", "/api/upload?name=x.bvh", text, headers={"X-Studio": "0"})
    assert status == 403 and b"X-Studio" in body
    status, _, body = _request(port, "POST", "/api/upload?name=x.bvh", text, headers={"Origin": "http://evil.example"})
    assert status == 403 and b"cross-origin" in body


def test_api_library_and_motion(studio):
    state, port = studio
    status, _, body = _request(port, "GET", "/api/library")
    lib = json.loads(body)
    assert status == 200 and len(lib) == 8 and all(m["captions"] for m in lib)
    status, _, body = _request(port, "GET", f"/api/motion?id={lib[0]['id']}")
    m = json.loads(body)
    assert status == 200 and len(m["categories"]) == m["tokens"] * 70
    assert len(m["joints"]) == m["frames"] * 66 and m["frames"] == 4 * m["tokens"]
    info = json.loads(_request(port, "GET", "/api/info")[2])
    assert len(info["slots"]) == 70 and sorted(info["display_order"]) == list(range(70))
    assert info["slots"][0]["phrases"][-1] == "left knee: straight"
    assert _request(port, "GET", "/api/motion?id=nope")[0] == 404


def test_upload_limits_and_errors(studio):
    state, port = studio
    before = len(state.library.motions)
    status, _, body = _request(port, "POST", "/api/upload?name=big.bvh", b"",
                               headers={"Content-Length": str(MAX_UPLOAD_BYTES + 1)})
    assert status == 413 and b"limit" in body
    for data, needle in [(b"", b"empty"), (b"\xff\xfe\x00garbage", b"not a text file"),
                         (b"HIERARCHY\nROOT Hips\n{\nOFFSET 0 0\n", b"bad.bvh"),
                         (b"hello world", b"HIERARCHY")]:
        status, _, body = _request(port, "POST", "/api/upload?name=bad.bvh", data)
        assert status == 400, (data, body)
        assert needle in body and json.loads(body)["error"]
    assert len(state.library.motions) == before
    assert _request(port, "GET", "/api/info")[0] == 200  # still serving


def test_upload_valid_bvh_and_export_endpoint(studio, run_and_data):
    state, port = studio
    feats = next(iter(state.library.motions.values())).features
    joints = features_to_joints(feats.astype(np.float64))
    text, _ = joints_to_bvh(joints)
    status, _, body = _request(port, "POST", "/api/upload?name=mine.bvh", text.encode())
    assert status == 200, body
    up = json.loads(body)
    detail = state.library.detail(up["id"])
    expect = features_to_joints(joints_to_features(retarget(bvh_to_joints(parse_bvh(text)))))
    got = np.asarray(detail["joints"]).reshape(-1, 22, 3)
    assert np.abs(got - expect[: len(got)]).max() < 1e-4
    payload = json.dumps({"joints": joints.reshape(-1).tolist(), "fps": 20}).encode()
    status, headers, body = _request(port, "POST", "/api/export/bvh", payload,
                                     headers={"Content-Type": "application/json"})
    assert status == 200 and float(headers["X-Max-Deviation-M"]) < 1e-3
    assert np.abs(bvh_to_joints(parse_bvh(body.decode())) - joints).max() < 1e-3
    for bad in (b"{", b'{"joints": [1, 2]}', b'{"joints": [NaN]}'):
        assert _request(port, "POST", "/api/export/bvh", bad)[0] == 400


def test_decoder_export_is_cached(run_and_data, tmp_path):
    import shutil
    run, _ = run_and_data
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("studio_export", "checkpoints"))
    before = sorted(p.name for p in copy.iterdir())
    state = build_state(copy, None)
    mtime = (state.export_dir / "decoder.onnx").stat().st_mtime_ns
    state2 = build_state(copy, None)
    assert state2.export_dir == state.export_dir == copy / "studio_export"
    assert (state2.export_dir / "decoder.onnx").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in copy.iterdir()) == sorted(before + ["studio_export"])  # nothing else written
    # A stamp that does not match the weights (new training) makes it export again.
    stamp = json.loads((state.export_dir / "studio_stamp.json").read_text())
    (state.export_dir / "studio_stamp.json").write_text(json.dumps({"weights_sha256": "stale"}))
    build_state(copy, None)
    assert (state.export_dir / "decoder.onnx").stat().st_mtime_ns != mtime
    assert json.loads((state.export_dir / "studio_stamp.json").read_text()) == stamp


def test_cli_prints_loopback_address_and_errors(run_and_data, tmp_path):
    run, data = run_and_data
    proc = subprocess.Popen([sys.executable, "-W", "ignore", "-m", "rvqfast.studio", str(run), "--data", str(data),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        line = proc.stdout.readline()
        assert line.startswith("rvqfast studio: http://127.0.0.1:"), line + proc.stderr.read()
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        assert _request(port, "GET", "/api/info")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    r = subprocess.run([sys.executable, "-m", "rvqfast.studio", str(tmp_path / "nope")], capture_output=True,
                       text=True, env=_env(), timeout=120)
    assert r.returncode == 2 and "nope" in r.stderr and "run" in r.stderr


def test_vendored_files_present():
    versions = json.loads((STATIC_DIR / "vendor" / "VERSIONS.json").read_text())
    for name, meta in versions["files"].items():
        packed = (STATIC_DIR / "vendor" / (name + ".gz")).read_bytes()
        assert len(gzip.decompress(packed)) == meta["bytes"], name
    lock = json.loads((STATIC_DIR.parent / "package-lock.json").read_text())
    for pkg in ("three", "onnxruntime-web"):
        assert lock["packages"][f"node_modules/{pkg}"]["version"] == versions["versions"][pkg]["version"]


# ----------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def page(studio):
    if find_chromium() is None:
        pytest.fail("chromium is not installed: `apt-get install -y chromium` (see .ci/run)")
    state, port = studio
    with Browser(width=1280, height=800, timeout=120) as b:
        b.goto(f"http://127.0.0.1:{port}/")
        b.wait_for("window.__studio && (window.__studio.ready || window.__studio.error)", timeout=180)
        assert b.evaluate("window.__studio.error") is None
        yield b, state


def _decoded(b, which="edited"):
    return np.asarray(b.evaluate(f"window.__studio.{which}Joints()"), dtype=np.float32).reshape(-1, 22, 3)


def test_page_loads_without_errors_and_draws(page):
    b, _ = page
    assert b.console_errors() == []
    from io import BytesIO

    import imageio.v2 as imageio
    img = imageio.imread(BytesIO(b.screenshot()))[..., :3].astype(int)
    rect = b.evaluate("(() => { const r = document.getElementById('scene').getBoundingClientRect();"
                      " return [r.left, r.top, r.width, r.height]; })()")
    x, y, w, h = (int(v) for v in rect)
    canvas = img[y:y + h, x:x + w]
    assert canvas.shape[0] > 100 and canvas.shape[1] > 100
    assert canvas.std() > 3 and len(np.unique(canvas.reshape(-1, 3), axis=0)) > 50
    orange = (canvas[..., 0] > 180) & (canvas[..., 1] > 110) & (canvas[..., 1] < 200) & (canvas[..., 2] < 120)
    assert orange.sum() > 30  # the edited skeleton / trail is drawn
    assert b.evaluate("document.getElementById('frame-counter').textContent").startswith("1 / ")
    for source in ("dataset", "decoded"):  # compare with the source motion, then back
        b.evaluate(f"(() => {{ const s = document.getElementById('ghost-source'); s.value = '{source}';"
                   " s.dispatchEvent(new Event('change')); })()")
    assert b.console_errors() == []


def test_decoded_joints_match_onnxruntime(page):
    b, state = page
    from rvqfast.export.runtime import OnnxMotionTokenizer
    rt = OnnxMotionTokenizer(state.export_dir, threads=1)
    n = b.evaluate("window.__studio.categories().length") // 70
    cats = np.asarray(b.evaluate("window.__studio.categories()"), dtype=np.int64).reshape(1, n, 70)
    idx = np.asarray(b.evaluate("window.__studio.indices()"), dtype=np.int64).reshape(1, n, -1)
    _, joints = rt.decode(cats, idx)
    assert np.abs(_decoded(b) - joints[0]).max() < 1e-4
    # Residual stages 0..Q: the page's masking is onnxruntime's -1 (stage skipped).
    for stages in (0, 2):
        page_j = np.asarray(b.evaluate(f"window.__studio.decode(window.__studio.categories(), "
                                       f"window.__studio.indices(), {n}, {stages}).then(r => r.joints)"))
        masked = idx.copy()
        masked[..., stages:] = -1
        assert np.abs(page_j.reshape(-1, 22, 3) - rt.decode(cats, masked)[1][0]).max() < 1e-4
    # ... and through the slider: 0 stages = the pose codes alone.
    q = idx.shape[-1]
    for value in (0, q):
        count = b.evaluate("window.__studio.decodeCount")
        b.evaluate(f"(() => {{ const s = document.getElementById('stages'); s.value = '{value}';"
                   " s.dispatchEvent(new Event('input')); })()")
        b.wait_for(f"window.__studio.decodeCount > {count}", timeout=60)
        masked = idx.copy()
        masked[..., value:] = -1
        assert b.evaluate("window.__studio.stages()") == value
        assert np.abs(_decoded(b) - rt.decode(cats, masked)[1][0]).max() < 1e-4


def test_edit_through_ui_changes_decoded_joints(page):
    b, _ = page
    before = _decoded(b)
    count = b.evaluate("window.__studio.decodeCount")
    slot = 0  # angle:left_knee
    p0 = b.evaluate(f"window.__studio.cellCenter({slot}, 2)")
    p1 = b.evaluate(f"window.__studio.cellCenter({slot}, 9)")
    b.drag(p0["x"], p0["y"], p1["x"], p1["y"])
    assert b.evaluate("document.getElementById('edit-range').textContent").startswith("latent 2–9")
    cats = b.evaluate("window.__studio.categories()")
    target = 0 if cats[2 * 70 + slot] != 0 else 17  # "completely bent" unless already so
    b.evaluate(f"(() => {{ const s = document.getElementById('edit-category'); s.value = '{target}';"
               f" s.dispatchEvent(new Event('change'));"
               " document.getElementById('consistent').checked = false; })()")  # this slot only
    btn = b.evaluate("(() => { const r = document.getElementById('apply-edit').getBoundingClientRect();"
                     " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()")
    b.mouse("mousePressed", btn["x"], btn["y"], buttons=1)
    b.mouse("mouseReleased", btn["x"], btn["y"])
    b.wait_for(f"window.__studio.decodeCount > {count}", timeout=60)
    after = _decoded(b)
    new = np.asarray(b.evaluate("window.__studio.categories()")).reshape(-1, 70)
    old = np.asarray(cats).reshape(-1, 70)
    changed = np.argwhere(new != old)
    assert set(changed[:, 1]) == {slot} and changed[:, 0].min() >= 2 and changed[:, 0].max() <= 9
    assert (new[2:10, slot] == target).all()
    assert np.abs(after - before).max() > 1e-3
    # The original (ghost) is the unedited decode.
    assert np.abs(_decoded(b, "original") - before).max() < 1e-6
    assert b.console_errors() == []


def test_exports_and_bvh_roundtrip_through_upload(page, tmp_path):
    b, state = page
    edited = _decoded(b)
    b.evaluate("document.getElementById('export-bvh').click()")
    exp = b.wait_for("window.__studio.lastExport && window.__studio.lastExport.kind === 'bvh' && "
                     "window.__studio.lastExport", timeout=60)
    path = tmp_path / "edited.bvh"
    path.write_text(exp["text"])
    back = load_bvh(path)
    assert back.shape == edited.shape
    # The rigid skeleton stays within the reported deviation of the decoded (non-rigid) joints.
    assert np.abs(back - edited).max() <= exp["deviation"] + 1e-3
    assert 0 <= exp["deviation"] < 1.0  # metres; the decoder's bone-length noise, reported in the page
    # npy and codes exports
    b.evaluate("document.getElementById('export-npy').click()")
    raw = bytes(b.wait_for("window.__studio.lastExport.kind === 'npy' && window.__studio.lastExport.bytes"))
    (tmp_path / "f.npy").write_bytes(raw)
    feats = np.load(tmp_path / "f.npy", allow_pickle=False)
    assert feats.dtype == np.float32 and feats.shape == (edited.shape[0], 263)
    assert np.abs(features_to_joints(feats.astype(np.float64)) - edited).max() < 1e-3
    b.evaluate("document.getElementById('export-codes').click()")
    codes = json.loads(b.wait_for("window.__studio.lastExport.kind === 'codes' && window.__studio.lastExport.text"))
    assert np.asarray(codes["categories"]).shape == (edited.shape[0] // 4, 70)
    assert codes["categories"] == np.asarray(b.evaluate("window.__studio.categories()")).reshape(-1, 70).tolist()
    assert codes["edits"] == b.evaluate("window.__studio.edits()")
    # Import the exported BVH through the page: what it shows is what Python reads from the file.
    uploads, before = b.evaluate("window.__studio.uploads"), b.evaluate("window.__studio.motionId()")
    b.set_files("#upload-input", [str(path)])
    b.wait_for(f"window.__studio.uploads > {uploads} && window.__studio.motionId() !== {json.dumps(before)}"
               " && window.__studio.motionId().startsWith('upload/')", timeout=60)
    b.wait_for("document.getElementById('upload-message').className.includes('ok')", timeout=30)
    shown = np.asarray(b.evaluate("window.__studio.datasetJoints()")).reshape(-1, 22, 3)
    expect = features_to_joints(joints_to_features(retarget(back)))
    assert np.abs(shown - expect[: len(shown)]).max() < 1e-3


def test_malformed_upload_shows_error(page, tmp_path):
    b, _ = page
    bad = tmp_path / "broken.bvh"
    bad.write_text("HIERARCHY\nROOT Hips\n{\n  OFFSET 0 0 0\n  CHANNELS 6 Xposition\n")
    b.set_files("#upload-input", [str(bad)])
    msg = b.wait_for("document.getElementById('upload-message').className.includes('error') && "
                     "document.getElementById('upload-message').textContent", timeout=60)
    assert "broken.bvh" in msg
    assert b.evaluate("window.__studio.ready") is True
    # Only the expected failed request (HTTP 400) may be logged; no script errors.
    errors = [e for e in b.console_errors() if "400" not in e]
    assert errors == []


def test_consistent_edit_through_edit_graph_when_the_run_has_one(page, run_and_data):
    """edit.onnx (the editing work's engine-side edit) is wired in when this rvqfast can build it
    and the run has a pose-code bank; the page's edit then equals onnxruntime's in Python."""
    b, state = page
    run, _ = run_and_data
    try:
        from rvqfast.export.exporter import GRAPH_NAMES
        buildable = "edit" in GRAPH_NAMES and (run / "posecode_bank.npy").is_file()
    except ImportError:
        buildable = False
    has = (state.export_dir / "edit.onnx").is_file()
    assert has == buildable
    assert (state.info["edit_graph"] is not None) == has == b.evaluate("window.__studio.hasEditGraph()")
    if not has:
        return
    import onnxruntime as ort

    from rvqfast.export.runtime import OnnxMotionTokenizer
    b.evaluate("document.getElementById('reset-edits').click()")
    cats0 = np.asarray(b.evaluate("window.__studio.categories()"), dtype=np.int64).reshape(1, -1, 70)
    idx0 = np.asarray(b.evaluate("window.__studio.indices()"), dtype=np.int64).reshape(1, cats0.shape[1], -1)
    slot, a, z, target = 0, 1, 4, 9
    p0, p1 = (b.evaluate(f"window.__studio.cellCenter({slot}, {t})") for t in (a, z))
    b.drag(p0["x"], p0["y"], p1["x"], p1["y"])
    count = b.evaluate("window.__studio.decodeCount")
    b.evaluate(f"(() => {{ document.getElementById('consistent').checked = true;"
               f" document.getElementById('edit-category').value = '{target}';"
               " document.getElementById('apply-edit').click(); })()")
    b.wait_for(f"window.__studio.decodeCount > {count}", timeout=60)
    cats1 = np.asarray(b.evaluate("window.__studio.categories()"), dtype=np.int64).reshape(cats0.shape)
    idx1 = np.asarray(b.evaluate("window.__studio.indices()"), dtype=np.int64).reshape(idx0.shape)
    sess = ort.InferenceSession(str(state.export_dir / "edit.onnx"), providers=["CPUExecutionProvider"])
    request = np.full(70, -1, dtype=np.int64)
    request[slot] = target
    weight = np.zeros((1, cats0.shape[1]), dtype=np.float32)
    weight[0, a:z + 1] = 1
    want_c, want_i, _, valid = sess.run(None, {"categories": cats0, "indices": idx0, "request": request,
                                              "weight": weight})
    assert (valid == 1).all()
    assert np.array_equal(cats1, want_c) and np.array_equal(idx1, want_i)
    rt = OnnxMotionTokenizer(state.export_dir, threads=1)
    assert np.abs(_decoded(b) - rt.decode(cats1, idx1)[1][0]).max() < 1e-4
