"""Drop-in quantizer modules with vector-quantize-pytorch's API: ``VectorQuantize``,
``ResidualVQ``, ``GroupedResidualVQ`` and ``SimVQ``/``ResidualSimVQ`` on rvqfast's search kernels;
``FSQ``/``ResidualFSQ``/``GroupedResidualFSQ`` and ``LFQ``/``ResidualLFQ``/``GroupedResidualLFQ``
in plain PyTorch (no search). vector-quantize-pytorch names not provided raise an ImportError
naming them (:data:`.compat.NOT_PROVIDED`).

Switch with the import line only::

    from rvqfast.quantize import ResidualVQ          # was: from vector_quantize_pytorch import ResidualVQ
    rvq = ResidualVQ(dim=512, num_quantizers=6, codebook_size=512)
    quantized, indices, commit_losses = rvq(x)       # x (B, N, 512) -> indices (B, N, 6)

State dicts saved from vector-quantize-pytorch load directly (see :mod:`.compat`).
"""
from __future__ import annotations

from .compat import missing_name_error, to_vector_quantize_pytorch
from .fsq import FSQ, GroupedResidualFSQ, ResidualFSQ
from .grouped import GroupedResidualVQ
from .lfq import LFQ, GroupedResidualLFQ, ResidualLFQ
from .residual_vq import ResidualVQ
from .simvq import ResidualSimVQ, SimVQ
from .vector_quantize import VectorQuantize

__all__ = ["FSQ", "GroupedResidualFSQ", "ResidualFSQ", "GroupedResidualLFQ", "GroupedResidualVQ", "LFQ", "ResidualLFQ", "ResidualSimVQ", "ResidualVQ", "SimVQ", "VectorQuantize", "to_vector_quantize_pytorch"]


def __getattr__(name: str):
    raise missing_name_error(__name__, name)
