"""Registers the C++ CPU extension (``rvqfast._C``) kernels for the rvqfast ops."""
from __future__ import annotations

from .. import _C  # noqa: F401  (ImportError here means "not built": the registry records why)

raise ImportError("rvqfast._C kernels are not wired yet")
