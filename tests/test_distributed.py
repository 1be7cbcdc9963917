"""Synchronised codebooks across 2 gloo processes on CPU, and no collective outside training."""
from __future__ import annotations

import datetime
import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    warnings.simplefilter("ignore", RuntimeWarning)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    # A short timeout turns a collective that only one rank reaches into an error, not a hang.
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=20))
    try:
        from rvqfast.quantize import ResidualVQ

        torch.manual_seed(0)  # same init on both ranks, as DDP would broadcast
        kw = dict(dim=8, num_quantizers=3, codebook_size=16, kmeans_init=True, kmeans_iters=3,
                  threshold_ema_dead_code=1.0, quantize_dropout=True)
        synced = ResidualVQ(**kw)  # sync_codebook=None -> on, since world_size > 1
        local = ResidualVQ(**kw, sync_codebook=False)
        torch.manual_seed(100 + rank)  # different data and RNG per rank
        for step in range(4):
            x = torch.randn(2, 12 + 4 * rank, 8) * (1 + rank) + rank  # also different sizes
            for m in (synced, local):
                m.train()
                q, _, losses = m(x.clone().requires_grad_())
                (q.sum() + losses.sum()).backward()
            if rank == 0:
                # Only rank 0 validates: an eval pass and a training-mode pass under no_grad
                # must reach no collective (rank 1 would never join it).
                synced.eval()(x)
                with torch.no_grad():
                    synced.train()(x)
        torch.save(
            {"synced": {k: v.clone() for k, v in synced.state_dict().items()},
             "local": {k: v.clone() for k, v in local.state_dict().items()}},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_two_ranks_keep_identical_codebooks(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in ("embed", "embed_avg", "cluster_size", "initted"):
        assert torch.equal(r0["synced"][key], r1["synced"][key]), key
    assert bool(r0["synced"]["initted"].all())
    # The check has teeth: without sync the same steps leave different codebooks.
    assert not torch.equal(r0["local"]["embed"], r1["local"]["embed"])


def test_sync_resolution_without_process_group():
    from rvqfast.quantize import distributed as ddp

    assert not ddp.is_distributed()
    assert ddp.resolve_sync(None) is False and ddp.resolve_sync(True) is False
