"""Backend registry: each backend registers plain functions for the ops declared in ``_ops``.

A backend is a name (``reference``, ``cpu``, ``triton``, ``cuda``) plus a table of op
implementations. The ops in :mod:`rvqfast._ops` look the implementation up here at call time,
so adding a backend is one module that calls :func:`register` and nothing else changes.
"""
from __future__ import annotations

import importlib
import os
import warnings
from typing import Callable

import torch

_IMPLS: dict[str, dict[str, Callable]] = {}
_LOAD_ERRORS: dict[str, str] = {}
_LOADED = False
_WARNED: set[str] = set()

BACKENDS = ("reference", "cpu", "triton", "cuda")
# Which devices each backend can run on. Triton also runs CPU tensors under TRITON_INTERPRET=1,
# which is how CI checks its correctness without a GPU.
_DEVICES = {"reference": ("cpu", "cuda"), "cpu": ("cpu",), "triton": ("cuda",), "cuda": ("cuda",)}


def register(backend: str, op: str) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` as ``backend``'s implementation of ``op``."""

    def deco(fn: Callable) -> Callable:
        _IMPLS.setdefault(backend, {})[op] = fn
        return fn

    return deco


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for name in BACKENDS:
        mod = "rvqfast.backends.triton" if name == "triton" else f"rvqfast.backends.{name}"
        try:
            importlib.import_module(mod)
        except Exception as e:  # an unbuilt extension or missing triton is normal, not fatal
            _IMPLS.pop(name, None)
            _LOAD_ERRORS[name] = f"{type(e).__name__}: {e}"


def available_backends() -> list[str]:
    """Names of the backends whose kernels are built and importable on this machine."""
    _load_all()
    return [b for b in BACKENDS if b in _IMPLS]


def backend_load_errors() -> dict[str, str]:
    """Why each unavailable backend failed to load (for diagnostics)."""
    _load_all()
    return dict(_LOAD_ERRORS)


def _triton_on(device: torch.device) -> bool:
    if device.type == "cuda":
        return True
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def resolve(backend: str, device: torch.device) -> str:
    """Turn ``backend`` (``"auto"`` or a name) into a backend that can run on ``device``."""
    _load_all()
    if backend == "auto":
        prefs = ("cuda", "triton", "reference") if device.type == "cuda" else ("cpu", "reference")
        for b in prefs:
            if b in _IMPLS:
                if b == "reference" and device.type == "cpu" and "cpu" not in _WARNED:
                    _WARNED.add("cpu")
                    warnings.warn(
                        "rvqfast: the C++ CPU extension is not built "
                        f"({_LOAD_ERRORS.get('cpu', 'unknown reason')}); falling back to the "
                        "pure-PyTorch reference backend. Reinstall with "
                        "`pip install --no-build-isolation .` to build it.",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                return b
        return "reference"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    if backend not in _IMPLS:
        raise ValueError(
            f"backend {backend!r} is not available here ({_LOAD_ERRORS.get(backend, 'not built')}); "
            f"available: {available_backends()}"
        )
    ok = _triton_on(device) if backend == "triton" else device.type in _DEVICES[backend]
    if not ok:
        raise ValueError(f"backend {backend!r} cannot run tensors on device {device}")
    return backend


def get_impl(backend: str, op: str) -> Callable:
    _load_all()
    try:
        return _IMPLS[backend][op]
    except KeyError:
        # A backend may implement a subset of the ops; the reference covers the rest.
        return _IMPLS["reference"][op]
