"""Triton kernels for the rvqfast ops (not wired yet)."""
raise ImportError("triton backend not implemented yet")
