"""Two-rank (gloo, CPU) codebook checks for tests/test_codebook.py, run in ONE `mp.spawn`.

Kept apart from the test module so that each spawned process imports only torch and
`mdvq.models.codebook`, not the test module's own imports (hydra, diffusers' VQModel, ...),
and does every case in one process group: the synchronised and unsynchronised (negative
control) runs of each option set of `DDP_OPTIONS`, then the EMA pooling run.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp

from mdvq.models import codebook as cb
from mdvq.models.codebook import CodebookOptions, CodebookQuantizer

DDP_OPTIONS = {
    "healthy": {"kmeans_init": True, "restart_after_steps": 2, "ema_decay": 0.9},
    "learned-restart-lowdim": {"kmeans_init": True, "restart_after_steps": 2, "lookup_dim": 3},
}
STEPS = 6  # optimizer steps of the identity check
EMA_STEPS = 4  # steps of the EMA pooling check


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for the process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ema_data(rank: int, step: int) -> torch.Tensor:
    """Rank `rank`'s batch at `step` (B=2, D=4, 4x4): different data on each rank."""
    g = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randn(2, 4, 4, 4, generator=g) * (1 + rank) + step


def identity_run(rank: int, options: dict, sync: bool) -> tuple[list[bool], int]:
    """Train a K=32 quantiser for `STEPS` steps on rank-specific data; per step, whether both
    ranks hold the identical codebook, and the number of restarts. `sync=False` is the negative
    control: no all-reduce and no shared sampling."""
    distributed = cb._distributed
    if not sync:
        cb._distributed = lambda: False
    try:
        torch.manual_seed(0)  # same initial weights on both ranks
        q = CodebookQuantizer(4, 32, 0.25, CodebookOptions(**options))
        learned = [p for p in q.parameters() if p.requires_grad]
        ddp = torch.nn.parallel.DistributedDataParallel(q, broadcast_buffers=False) if learned else q
        opt = torch.optim.SGD(learned, lr=0.5) if learned else None
        torch.manual_seed(100 + rank)  # different data and sampling RNG on each rank
        identical = []
        for step in range(STEPS):
            z = torch.randn(2, 4, 4, 4) * (1 + rank) + step
            z_q, _, loss, _ = ddp(z)
            loss = loss + z_q.square().mean()  # a stand-in decoder loss reaching project_out
            if opt is not None:  # a learned codebook / projections: DDP averages the gradients
                opt.zero_grad()
                loss.backward()
                opt.step()
            gathered = [torch.empty_like(q.embed.data) for _ in range(2)]
            torch.distributed.all_gather(gathered, q.embed.data.contiguous())
            identical.append(torch.equal(gathered[0], gathered[1]))
        return identical, int(q.restarts)
    finally:
        cb._distributed = distributed


def ema_run(rank: int) -> dict[str, torch.Tensor]:
    """An EMA codebook after `EMA_STEPS` steps on this rank's half of every batch."""
    torch.manual_seed(0)
    q = CodebookQuantizer(4, 32, 0.25, CodebookOptions(ema_decay=0.9)).train()
    for step in range(EMA_STEPS):
        q(ema_data(rank, step))
    return {k: getattr(q, k).clone() for k in ("embed", "cluster_size", "embed_avg")}


def _worker(rank: int, port: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        result = {"identity": {name: {sync: identity_run(rank, options, sync)
                                      for sync in (True, False)}
                               for name, options in DDP_OPTIONS.items()},
                  "ema": ema_run(rank)}
        out[rank] = result
    finally:
        torch.distributed.destroy_process_group()


def run_two_ranks() -> dict[int, dict]:
    """Every case on 2 gloo ranks in one spawn: `{rank: {"identity": {name: {sync: (identical
    per step, restarts)}}, "ema": {"embed", "cluster_size", "embed_avg"}}}`."""
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(free_port(), out), nprocs=2, join=True)
        return dict(out)
