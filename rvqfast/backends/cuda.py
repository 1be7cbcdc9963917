"""Registers the CUDA extension (``rvqfast._cuda``) kernels (not wired yet)."""
raise ImportError("cuda backend not built")
