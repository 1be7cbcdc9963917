"""Compatibility with vector-quantize-pytorch: which names rvqfast provides, keyword checks and
state_dict conversion.

vector-quantize-pytorch keeps one ``_codebook`` module per layer with a leading heads axis:
``layers.{q}._codebook.embed`` (1, K, D), ``.embed_avg`` (1, K, D), ``.cluster_size`` (1, K),
``.initted`` () for :class:`ResidualVQ` and ``_codebook.*`` for :class:`VectorQuantize`.
rvqfast stacks the stages: ``embed`` (S, K, D), ``embed_avg``, ``cluster_size`` (S, K),
``initted`` (S,). The projections (``project_in``/``project_out``) have the same names in both.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch
from torch import Tensor

# Options of vector-quantize-pytorch that rvqfast does not implement: named in the error so a
# user knows it is a known option we lack, not a typo.
KNOWN_UNSUPPORTED = frozenset(
    {
        "sync_kmeans", "layernorm_after_project_in",
        "accept_3d_fmap", "commitment_use_cross_entropy_loss", "codebook_diversity_loss_weight",
        "codebook_diversity_temperature", "directional_reparam", "directional_reparam_variance",
        "sync_affine_param", "vq_bridge", "manual_ema_update", "in_place_codebook_optimizer",
        "manual_in_place_optimizer_update", "affine_param", "affine_param_batch_decay",
        "affine_param_codebook_decay", "sync_update_v", "return_zeros_for_masked_padding",
        "route_gradients_to_input", "diveq", "implicit_neural_codebook",
        "mlp_kwargs", "beam_size", "eval_beam_size", "beam_score_quantizer_weights", "quant_grad_frac",
    }
)


# vector-quantize-pytorch's exports (1.32) that rvqfast provides as drop-ins.
PROVIDED = (
    "VectorQuantize", "ResidualVQ", "GroupedResidualVQ", "FSQ", "ResidualFSQ", "GroupedResidualFSQ",
    "SimVQ", "ResidualSimVQ", "LFQ", "ResidualLFQ", "GroupedResidualLFQ",
)

# vector-quantize-pytorch's exports (1.32) that rvqfast does not provide: the one list. Importing
# one from rvqfast or rvqfast.quantize raises an ImportError naming it (see missing_name_error).
NOT_PROVIDED = {
    "RandomProjectionQuantizer": "random-projection quantizer (BEST-RQ)",
    "FSP": "finite scalar perturbation",
    "EvoLFQ": "evolutionary lookup-free quantization",
    "LatentQuantize": "latent quantization",
    "BinaryMapper": "binary mapper",
    "HierarchicalVQ": "hierarchical VQ",
    "Sequential": "vector-quantize-pytorch's Sequential helper",
}


class NotProvidedError(ImportError):
    """A vector-quantize-pytorch name rvqfast does not provide (``from rvqfast import X`` and
    ``rvqfast.X`` both raise it; ``hasattr(rvqfast, X)`` too, by design: the name is known)."""


def missing_name_error(module: str, name: str) -> Exception:
    """The error a module ``__getattr__`` raises for ``name``: names the vqp feature if it is one."""
    if name in NOT_PROVIDED:
        return NotProvidedError(
            f"{name} ({NOT_PROVIDED[name]}) is a vector-quantize-pytorch class that rvqfast does not "
            f"provide; keep importing it from vector_quantize_pytorch (rvqfast's drop-ins: "
            f"{', '.join(PROVIDED)})",
            name=name,
        )
    return AttributeError(f"module {module!r} has no attribute {name!r}")


def reject_kwargs(cls_name: str, extra: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` naming every keyword ``cls_name`` does not take."""
    if not extra:
        return
    names = sorted(extra)
    known = [n for n in names if n in KNOWN_UNSUPPORTED]
    unknown = [n for n in names if n not in KNOWN_UNSUPPORTED]
    parts = []
    if known:
        parts.append(f"vector-quantize-pytorch option(s) not supported by rvqfast: {', '.join(known)}")
    if unknown:
        parts.append(f"unexpected keyword argument(s): {', '.join(unknown)}")
    raise TypeError(f"{cls_name}(): " + "; ".join(parts))


_FIELDS = "(embed|embed_avg|cluster_size|initted)"
_GRVQ_KEY = re.compile(rf"^rvqs\.(\d+)\.layers\.(\d+)\._codebook\.{_FIELDS}$")
_RVQ_KEY = re.compile(rf"^layers\.(\d+)\._codebook\.{_FIELDS}$")
_VQ_KEY = re.compile(rf"^_codebook\.{_FIELDS}$")


def _parse(rest: str) -> tuple[int, int, str] | None:
    """``(group, layer, field)`` of a vector-quantize-pytorch codebook key, else None."""
    m = _GRVQ_KEY.match(rest)
    if m:
        return int(m.group(1)), int(m.group(2)), m.group(3)
    m = _RVQ_KEY.match(rest)
    if m:
        return 0, int(m.group(1)), m.group(2)
    m = _VQ_KEY.match(rest)
    if m:
        return 0, 0, m.group(1)
    return None


def is_foreign(keys, prefix: str = "") -> bool:
    """True when ``keys`` (under ``prefix``) hold vector-quantize-pytorch codebook entries."""
    n = len(prefix)
    return any(k.startswith(prefix) and _parse(k[n:]) is not None for k in keys)


def _rows(name: str, t: object, field: str) -> Tensor:
    """The entry with its leading codebook (heads) axis; ``initted`` is a scalar there."""
    want = {"embed": 3, "embed_avg": 3, "cluster_size": 2, "initted": 0}[field]
    if not isinstance(t, Tensor) or t.dim() != want:
        raise ValueError(
            f"state_dict entry {name!r}: expected a tensor with {want} dims (vector-quantize-pytorch "
            f"layout), got {tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}"
        )
    return t


def from_vector_quantize_pytorch(state: dict, prefix: str, num_slots: int, num_groups: int = 1) -> None:
    """Rewrite vector-quantize-pytorch codebook entries under ``prefix`` into rvqfast's, in place.

    Handles ``VectorQuantize`` (``_codebook.*``, one codebook per head when
    ``separate_codebook_per_head``), ``ResidualVQ`` (``layers.{q}._codebook.*``) and
    ``GroupedResidualVQ`` (``rvqs.{g}.layers.{q}._codebook.*``). The codebooks of each group,
    in layer then head order, become consecutive slots of rvqfast's (S, K, D) tensors.

    Args:
        state: the state dict being loaded (mutated: foreign keys are replaced).
        prefix: the module's prefix inside ``state``.
        num_slots: how many codebooks the target module holds (S).
        num_groups: how many groups they split into (the slots of a group are consecutive).
    """
    n = len(prefix)
    found: dict[int, dict[int, dict[str, Tensor]]] = {}
    grouped_keys = 0
    for key in [k for k in state if k.startswith(prefix)]:
        parsed = _parse(key[n:])
        if parsed is None:
            continue
        g, q, field = parsed
        grouped_keys += key[n:].startswith("rvqs.")
        found.setdefault(g, {}).setdefault(q, {})[field] = _rows(key, state.pop(key), field)
    if not found:
        return
    if grouped_keys == 0:
        # A VectorQuantize / ResidualVQ checkpoint: its heads (one codebook per head) fill the
        # module's groups in order.
        num_groups = 1
    if sorted(found) != list(range(num_groups)):
        raise ValueError(f"state_dict holds codebooks of groups {sorted(found)} but the module has {num_groups} group(s)")
    per_group = num_slots // num_groups
    out: dict[str, list[Tensor]] = {f: [] for f in ("embed", "embed_avg", "cluster_size", "initted")}
    for g in range(num_groups):
        layers = sorted(found[g])
        if layers != list(range(len(layers))):
            raise ValueError(f"state_dict codebook layers are not contiguous from 0: {layers}")
        for field in out:
            missing = [q for q in layers if field not in found[g][q]]
            if missing:
                raise ValueError(f"state_dict lacks '_codebook.{field}' for layer(s) {missing}")
        heads = {found[g][q][f].shape[0] for q in layers for f in ("embed", "embed_avg", "cluster_size")}
        if len(heads) != 1:
            raise ValueError(f"state_dict codebooks of group {g} have different numbers of heads: {sorted(heads)}")
        h = heads.pop()
        if h * len(layers) != per_group and not (h == per_group and len(layers) > 1):
            raise ValueError(
                f"state_dict holds {len(layers)} codebook layer(s) of {h} head(s) each"
                + (f" for group {g}" if num_groups > 1 else "")
                + f" but the module needs {per_group} codebook(s): check num_quantizers, heads, "
                "separate_codebook_per_head and shared_codebook"
            )
        # A shared codebook is saved once per layer by vector-quantize-pytorch: keep the first.
        for q in layers[: per_group // h]:
            e = found[g][q]
            for field in out:
                out[field].extend([e[field]] * h if field == "initted" else list(e[field]))
    for field, vals in out.items():
        if len({tuple(v.shape) for v in vals}) != 1:
            raise ValueError(f"state_dict '_codebook.{field}' shapes differ between layers")
        state[prefix + field] = torch.stack(vals)


def to_vector_quantize_pytorch(
    state: Mapping[str, Tensor], *, residual: bool, num_quantizers: int = 1, shared: bool = False,
    groups: int = 1, separate_heads: int = 1,
) -> dict:
    """Convert an rvqfast ``state_dict`` into vector-quantize-pytorch's layout.

    Args:
        state: ``state_dict()`` of an rvqfast ``VectorQuantize``, ``ResidualVQ`` or
            ``GroupedResidualVQ``.
        residual: True for a ``ResidualVQ`` / ``GroupedResidualVQ`` target
            (``[rvqs.{g}.]layers.{q}._codebook.*``), False for ``VectorQuantize`` (``_codebook.*``).
        num_quantizers: number of layers of the target (per group).
        shared: the codebook is shared by all layers (saved once per group in ``state``).
        groups: number of groups of a ``GroupedResidualVQ`` target (``rvqs.{g}.*``).
        separate_heads: heads of a ``VectorQuantize(separate_codebook_per_head=True)`` target
            (one (H, K, D) codebook tensor there).
    """
    fields = ("embed", "embed_avg", "cluster_size", "initted")
    out = {k: v for k, v in state.items() if k not in fields}
    for field in fields:
        if field not in state:
            raise ValueError(f"state_dict lacks {field!r}: not an rvqfast quantizer state_dict")
    if not residual:
        for field in fields:
            t = state[field]
            out[f"_codebook.{field}"] = t.all().clone() if field == "initted" else t[:separate_heads].clone()
        return out
    per_group = 1 if shared else num_quantizers
    for g in range(groups):
        prefix = f"rvqs.{g}." if groups > 1 else ""
        for q in range(num_quantizers):
            slot = g * per_group + (0 if shared else q)
            for field in fields:
                v = state[field][slot]
                out[f"{prefix}layers.{q}._codebook.{field}"] = v.clone() if field == "initted" else v.unsqueeze(0).clone()
    return out
