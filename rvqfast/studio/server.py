"""The studio's HTTP server (standard library only).

It serves exactly three things: the files under ``static/`` (the page and the vendored
three.js / onnxruntime-web builds, stored gzip-compressed), the run's exported files named in
:data:`EXPORT_FILES`, and a small JSON API. Paths are matched against fixed patterns after
decoding, never joined blindly: ``..``, absolute, backslash, NUL and dot-file paths are refused
whatever their encoding, and a resolved static path must still lie inside ``static/``. Request
bodies are size-limited before they are read, and the ``Host`` header must name the loopback
address the server listens on (a web page elsewhere cannot reach the API by DNS rebinding);
POSTs need a custom header (``X-Studio: 1``) that other sites cannot send without a CORS
preflight, and uploads are capped in number as well as size.
"""
from __future__ import annotations

import gzip
import json
import re
import sys
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from rvqfast.data.bvh_export import joints_to_bvh
from rvqfast.motion.skeleton import NUM_JOINTS

from .library import MAX_UPLOAD_BYTES, Library, UploadError

STATIC_DIR = Path(__file__).resolve().parent / "static"
EXPORT_FILES = ("decoder.onnx", "manifest.json", "edit.onnx")
MAX_JSON_BYTES = 16 * 1024 * 1024
_SAFE_REL = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".json": "application/json", ".wasm": "application/wasm", ".onnx": "application/octet-stream",
          ".png": "image/png", ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8"}
# Everything the page loads comes from this server; the wasm runtime needs wasm compilation.
_CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self' data: blob:; worker-src 'self' blob:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'")


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def safe_relative(path: str) -> str | None:
    """``path`` (already URL-decoded) if it is a plain relative path of safe names, else None."""
    if "\x00" in path or "\\" in path or not _SAFE_REL.match(path):
        return None
    if any(part in (".", "..") for part in path.split("/")):
        return None
    return path


class StudioState:
    """What the handler serves: the library, the API's static info, the export folder."""

    def __init__(self, library: Library, export_dir: Path, info: dict[str, Any]) -> None:
        self.library = library
        self.export_dir = Path(export_dir)
        self.info = info


class StudioHandler(BaseHTTPRequestHandler):
    server_version = "rvqfast-studio"
    sys_version = ""
    state: StudioState  # set on the per-server subclass
    quiet = True

    # ------------------------------------------------------------------ plumbing

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if not self.quiet:
            super().log_message(format, *args)

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(obj, separators=(",", ":")).encode(), "application/json")

    def _check_host(self) -> None:
        host = (self.headers.get("Host") or "").lower()
        port = self.server.server_address[1]
        allowed = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
        bound = self.server.server_address[0]
        if bound not in ("127.0.0.1", "localhost", "::1"):
            return  # the user chose to listen elsewhere; any Host is theirs to use
        if host not in allowed:
            raise RequestError(HTTPStatus.FORBIDDEN, f"Host {host!r} is not this local server")

    def _check_post_origin(self) -> None:
        # A page on another site can send a "simple" cross-origin POST without asking; it cannot
        # set a custom header without a CORS preflight, which this server never grants.
        if self.headers.get("X-Studio") != "1":
            raise RequestError(HTTPStatus.FORBIDDEN, "POST requests need the header X-Studio: 1")
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != (self.headers.get("Host") or "").lower():
            raise RequestError(HTTPStatus.FORBIDDEN, f"cross-origin request from {origin!r} refused")

    def _body(self, limit: int) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "request needs a Content-Length")
        n = int(length)
        if n > limit:
            self.close_connection = True  # the unread body must not be parsed as a next request
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"{n} bytes; the limit is {limit} bytes ({limit // (1024 * 1024)} MiB)")
        return self.rfile.read(n)

    def _dispatch(self, method: str) -> None:
        try:
            self._check_host()
            url = urlsplit(self.path)
            raw = url.path
            path = unquote(raw)
            if method == "GET":
                self._get(path, parse_qs(url.query))
            else:
                self._check_post_origin()
                self._post(path, parse_qs(url.query))
        except RequestError as e:
            self._json({"error": str(e)}, e.status)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # noqa: BLE001 - one bad request must not stop the server
            traceback.print_exc(file=sys.stderr)
            self._json({"error": f"internal error: {type(e).__name__}: {e}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    # ------------------------------------------------------------------ routes

    def _get(self, path: str, query: dict) -> None:
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/"):])
        if path.startswith("/export/"):
            name = path[len("/export/"):]
            file = self.state.export_dir / name
            if name not in EXPORT_FILES or not file.is_file():
                raise RequestError(HTTPStatus.NOT_FOUND, "not found")
            return self._send(HTTPStatus.OK, file.read_bytes(), _TYPES.get(file.suffix, "application/octet-stream"))
        if path == "/api/info":
            return self._json(self.state.info)
        if path == "/api/library":
            return self._json([m.summary() for m in self.state.library.motions.values()])
        if path == "/api/motion":
            mid = (query.get("id") or [""])[0]
            if mid not in self.state.library.motions:
                raise RequestError(HTTPStatus.NOT_FOUND, f"no motion with id {mid!r}")
            return self._json(self.state.library.detail(mid))
        raise RequestError(HTTPStatus.NOT_FOUND, "not found")

    def _static(self, rel: str) -> None:
        rel_ok = safe_relative(rel)
        if rel_ok is None:
            raise RequestError(HTTPStatus.NOT_FOUND, "not found")
        root = STATIC_DIR
        plain, packed = root / rel_ok, root / (rel_ok + ".gz")
        file = plain if plain.is_file() else packed if packed.is_file() else None
        if file is None or not file.resolve().is_relative_to(root):
            raise RequestError(HTTPStatus.NOT_FOUND, "not found")
        ctype = _TYPES.get(Path(rel_ok).suffix, "application/octet-stream")
        data = file.read_bytes()
        if file is packed:
            if "gzip" in (self.headers.get("Accept-Encoding") or ""):
                return self._send(HTTPStatus.OK, data, ctype, {"Content-Encoding": "gzip"})
            data = gzip.decompress(data)
        self._send(HTTPStatus.OK, data, ctype)

    def _post(self, path: str, query: dict) -> None:
        if path == "/api/upload":
            name = (query.get("name") or ["upload.bvh"])[0][:200]
            data = self._body(MAX_UPLOAD_BYTES)
            try:
                motion = self.state.library.add_upload(data, name)
            except UploadError as e:
                raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None
            return self._json({**motion.summary(), "note": motion.note})
        if path == "/api/export/bvh":
            joints, fps = self._joints_payload()
            text, err = joints_to_bvh(joints, fps=fps)
            return self._send(HTTPStatus.OK, text.encode(), "text/plain; charset=utf-8",
                              {"Content-Disposition": 'attachment; filename="motion.bvh"',
                               "X-Max-Deviation-M": f"{err:.6g}"})
        raise RequestError(HTTPStatus.NOT_FOUND, "not found")

    def _joints_payload(self) -> tuple[np.ndarray, int]:
        try:
            obj = json.loads(self._body(MAX_JSON_BYTES))
            flat = np.asarray(obj["joints"], dtype=np.float64)
            fps = int(obj.get("fps", 20))
        except (ValueError, KeyError, TypeError) as e:
            raise RequestError(HTTPStatus.BAD_REQUEST,
                               f"expected JSON {{\"joints\": [T*22*3 numbers], \"fps\": 20}} ({e})") from None
        if flat.ndim != 1 or flat.size == 0 or flat.size % (NUM_JOINTS * 3):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"joints: expected T*{NUM_JOINTS}*3 numbers, got {flat.size}")
        if not np.isfinite(flat).all():
            raise RequestError(HTTPStatus.BAD_REQUEST, "joints: contains NaN or infinite values")
        if not 1 <= fps <= 1000:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"fps: expected 1..1000, got {fps}")
        return flat.reshape(-1, NUM_JOINTS, 3), fps


def make_server(state: StudioState, host: str = "127.0.0.1", port: int = 8765, *,
                quiet: bool = True) -> ThreadingHTTPServer:
    """A threading HTTP server bound to (host, port) serving ``state``; port 0 picks a free one."""
    handler = type("BoundStudioHandler", (StudioHandler,), {"state": state, "quiet": quiet})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


__all__ = ["EXPORT_FILES", "MAX_JSON_BYTES", "STATIC_DIR", "StudioHandler", "StudioState", "make_server",
           "safe_relative"]
