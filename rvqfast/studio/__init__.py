"""rvqfast studio: a local web app to browse, edit and export motions through their pose codes.

``python -m rvqfast.studio RUN`` exports the run's ``decoder.onnx`` and serves a page (three.js
player, pose-code strips, editing) in which onnxruntime-web decodes edited codes in the browser.
The front end's dependencies are vendored under ``static/vendor/`` (see ``package.json`` and
``vendor.mjs`` next to this file); nothing is fetched from the network at run time.
"""
from __future__ import annotations

from .app import build_state, export_for_browser
from .library import Library, UploadError
from .server import StudioState, make_server

__all__ = ["Library", "StudioState", "UploadError", "build_state", "export_for_browser", "make_server"]
