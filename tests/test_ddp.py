"""Data parallel: two CPU processes with gloo compute the single-process gradient of the same global batch.

Every rank draws the global batch's randomness from identically seeded generators and keeps a disjoint
shard; DDP averages the shard gradients. Tolerance: rtol 1e-5, atol 1e-7 (float32 summation order of
the all-reduce is the only difference).
"""

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _tiny import tiny_config

from sdegen._distributed import DistInfo, init_process_group
from sdegen.checkpoint import read_checkpoint
from sdegen.config import config_from_dict, config_to_json
from sdegen.training import Trainer, train

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, cfg_json, out, mode):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    cfg = config_from_dict(json.loads(cfg_json))
    if mode == "train":
        train(cfg, resume=False, progress=False)
        return
    info = DistInfo.from_env()
    init_process_group(info, torch.device("cpu"))
    try:
        tr = Trainer(cfg, dist_info=info, verbose=False)
        batch = tr.next_batch()
        assert len(batch["x0"]) == cfg.batch_size // WORLD
        tr.loss(batch).backward()
        grads = {n: p.grad for n, p in tr.model.named_parameters()}
        torch.save({"grads": grads, "x0": batch["x0"]}, os.path.join(out, f"rank{rank}.pt"))
        # Free the DDP reducer and its pending gloo work before the group goes: a reducer outliving the
        # group can abort the process at exit (SIGABRT, "terminate called without an active exception").
        del tr, grads
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(cfg, out, mode):
    mp.spawn(_worker, args=(_free_port(), config_to_json(cfg), str(out), mode), nprocs=WORLD, join=True)


def test_two_process_gradients_match_single_process(tmp_path):
    cfg = tiny_config(tmp_path, "data.name=gaussian_mixture", "data.conditional=true")
    _spawn(cfg, tmp_path, "grads")
    shards = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    single = Trainer(cfg, dist_info=DistInfo(), verbose=False)
    batch = single.next_batch()
    # The ranks hold disjoint halves of the same global batch.
    torch.testing.assert_close(torch.cat([s["x0"] for s in shards]), batch["x0"], rtol=0, atol=0)
    single.loss(batch).backward()
    for name, p in single.model.named_parameters():
        for s in shards:  # after the all-reduce every rank holds the averaged gradient
            torch.testing.assert_close(s["grads"][name], p.grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.slow
def test_two_process_training_matches_single_process_training(tmp_path):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    _spawn(tiny_config(ddp_dir, "steps=6"), tmp_path, "train")
    train(tiny_config(single_dir, "steps=6"), resume=False, progress=False)
    a, b = read_checkpoint(ddp_dir / "checkpoint.pt").state, read_checkpoint(single_dir / "checkpoint.pt").state
    assert a["step"] == b["step"] == 6
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-6, msg=k)
    assert sorted(p.name for p in ddp_dir.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl", "model.pt"]
