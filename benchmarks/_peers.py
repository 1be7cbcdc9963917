"""The encoders rvqfast is compared against, all fed the same codebooks.

- torch reference: per stage ``addmm`` (-2 x.c + |c|^2) + ``argmin``, residual carried in Python;
- vector-quantize-pytorch ``ResidualVQ`` eval forward with our codebooks copied into its layers;
- faiss ``IndexFlatL2`` per stage.
Each returns ``indices (N, Q)`` so the benchmark can check it before timing it.
"""
from __future__ import annotations

from typing import Callable

import torch



def torch_reference(x: torch.Tensor, cbs: torch.Tensor) -> Callable[[], torch.Tensor]:
    norms = [(cb * cb).sum(1) for cb in cbs]
    cts = [cb.t().contiguous() for cb in cbs]

    def run() -> torch.Tensor:
        residual = x.clone()
        out = []
        for cb, ct, nrm in zip(cbs, cts, norms):
            idx = torch.addmm(nrm, residual, ct, alpha=-2).argmin(1)
            residual -= cb[idx]
            out.append(idx)
        return torch.stack(out, 1)

    return run


def vqp(x: torch.Tensor, cbs: torch.Tensor) -> Callable[[], torch.Tensor]:
    from vector_quantize_pytorch import ResidualVQ

    q, k, d = cbs.shape
    model = ResidualVQ(dim=d, num_quantizers=q, codebook_size=k).eval()
    with torch.no_grad():
        for layer, cb in zip(model.layers, cbs):
            layer._codebook.embed.copy_(cb[None])
    xb = x[None]

    def run() -> torch.Tensor:
        with torch.no_grad():
            _, idx, _ = model(xb)
        return idx[0]

    return run


def faiss_flat(x: torch.Tensor, cbs: torch.Tensor) -> Callable[[], torch.Tensor]:
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())
    indexes = []
    for cb in cbs:
        ix = faiss.IndexFlatL2(cb.shape[1])
        ix.add(cb.numpy())
        indexes.append(ix)
    xn = x.numpy()

    def run() -> torch.Tensor:
        residual = xn.copy()
        out = []
        for ix, cb in zip(indexes, cbs):
            _, i = ix.search(residual, 1)
            i = i[:, 0]
            residual -= cb.numpy()[i]
            out.append(torch.from_numpy(i.astype("int64")))
        return torch.stack(out, 1)

    return run


def assert_nearest_chunked(x: torch.Tensor, cb: torch.Tensor, idx: torch.Tensor, rtol: float = 1e-4) -> None:
    """fp64 brute-force check (centred, in row chunks so big benchmarks fit in memory) that each
    index is a nearest code up to the contracts' near-tie rule."""
    c64 = cb.double()
    mu = c64.mean(0)
    cc = c64 - mu
    cn = (cc * cc).sum(1)
    for s in range(0, x.shape[0], 2048):
        xc = x[s : s + 2048].double() - mu
        d = (xc * xc).sum(1, keepdim=True) + cn - 2 * xc @ cc.t()
        best = d.min(1).values
        got = d.gather(1, idx[s : s + 2048].view(-1, 1)).squeeze(1)
        bad = got > best + rtol * (1 + best.abs())
        assert not bad.any(), f"{int(bad.sum())} rows not nearest (first gap {float((got - best)[bad][0])})"


def check_stagewise(x: torch.Tensor, cbs: torch.Tensor, idx: torch.Tensor, rtol: float = 1e-4) -> None:
    """Every stage picked a (near-)nearest code of its own residual (the near-tie rule)."""
    residual = x.clone()
    for s in range(cbs.shape[0]):
        assert_nearest_chunked(residual, cbs[s], idx[:, s], rtol)
        residual -= cbs[s][idx[:, s]]


def row_disagreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of rows whose index tuples differ anywhere."""
    return float((a != b).any(1).float().mean())
