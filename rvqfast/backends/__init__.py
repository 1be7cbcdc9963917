"""Backend registry: each backend registers plain functions for the ops declared in ``_ops``.

A backend is a name (``reference``, ``cpu``, ``triton``, ``cuda``) plus a table of op
implementations. The ops in :mod:`rvqfast._ops` look the implementation up here at call time,
so adding a backend is one module that calls :func:`register` and nothing else changes.
"""
from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType
from typing import Callable

import torch
from torch import Tensor

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


def register_extension(backend: str, ext: ModuleType, precisions: tuple[str, ...],
                       docs: dict[str, str] | None = None) -> tuple[Callable, ...]:
    """Register a compiled extension module's four ops as ``backend``'s implementations.

    ``ext`` must have ``nearest_code``, ``rvq_encode``, ``rvq_decode`` and ``ema_stats`` with the
    op signatures; the two searches are marked with the precisions they serve natively.
    ``docs`` optionally gives each op's docstring. Returns the registered functions
    ``(nearest_code, rvq_encode, rvq_decode, ema_stats)``.
    """
    # Plain Python wrappers, not the extension's builtins: a builtin takes no attributes
    # (``precisions``) and the wrappers look ``ext``'s function up at call time.
    def nearest_code(x: Tensor, codebook: Tensor, precision: str) -> tuple[Tensor, Tensor]:
        return ext.nearest_code(x, codebook, precision)

    def rvq_encode(x: Tensor, codebooks: Tensor, precision: str) -> tuple[Tensor, Tensor]:
        return ext.rvq_encode(x, codebooks, precision)

    def rvq_decode(indices: Tensor, codebooks: Tensor) -> Tensor:
        return ext.rvq_decode(indices, codebooks)

    def ema_stats(x: Tensor, indices: Tensor, num_codes: int) -> tuple[Tensor, Tensor]:
        return ext.ema_stats(x, indices, num_codes)

    fns = (nearest_code, rvq_encode, rvq_decode, ema_stats)
    for fn in fns:
        fn.__doc__ = (docs or {}).get(fn.__name__)
        register(backend, fn.__name__)(fn)
    nearest_code.precisions = rvq_encode.precisions = tuple(precisions)
    return fns


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
