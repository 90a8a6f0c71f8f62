"""`BridgeTrainer`: the `sdegen train` loop (EMA, checkpoints, resume, metrics, CLI) for bridge recipes.

When a config sets `process.name`, `sdegen.training.train` builds this trainer instead of the score-model
one. It keeps the score trainer's optimizer step (warm-up, clipping, non-finite guards, EMA), checkpoint
format, resume checks and run loop, and replaces what depends on the model kind: the recipe's network and
training states (`sdegen.processes.recipes`), batches of clean states, and the x0-prediction loss
(`sdegen.processes.training.x0_prediction_loss`: log-uniform t on [process.t_min, process.t_max],
self-conditioning with 50 % dropout when the recipe's network takes it).

`load_bridge_model(path)` rebuilds (process, EMA network, config) from a `model.pt` or `checkpoint.pt`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from sdegen._distributed import DistInfo, resolve_device
from sdegen.processes.recipes import RECIPES
from sdegen.processes.training import x0_prediction_loss
from sdegen.training import Trainer


def _index(data, idx):
    return tuple(d[idx] for d in data) if isinstance(data, tuple) else data[idx]


def _length(data) -> int:
    return len(data[0]) if isinstance(data, tuple) else len(data)


def _to(data, device):
    return tuple(d.to(device) for d in data) if isinstance(data, tuple) else data.to(device)


class BridgeTrainer(Trainer):
    """A training run of a bridge recipe; `sdegen.training.train` drives it like the score trainer.

    Raises:
        ValueError: an unknown recipe, self-conditioning asked of a network that does not take it,
            data-parallel runs or `init_from` (not supported for bridge recipes).
    """

    def __init__(self, config, *, dist_info: DistInfo | None = None, verbose: bool = True):
        cfg = self.cfg = config
        pc = cfg.process
        self.dist = dist_info or DistInfo.from_env()
        if self.dist.world_size > 1 or cfg.init_from:
            raise ValueError("bridge recipes train on one device without init_from")
        recipe = RECIPES[pc.name]
        if pc.self_condition and not recipe.self_condition:
            raise ValueError(f"process.self_condition: recipe {pc.name!r} has a network without self-conditioning")
        self.device = resolve_device(cfg.device, self.dist)
        self.process = recipe.make_process(pc.rate)
        data = recipe.load_data(cfg.data.name, cfg.data.root or None, cfg.data.num_samples, cfg.seed)
        n = _length(data)
        split = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
        val_idx, train_idx = split[: cfg.data.val_size], split[cfg.data.val_size :]
        if len(train_idx) < cfg.batch_size:
            raise ValueError(f"{len(train_idx)} training examples are fewer than batch_size={cfg.batch_size}")
        self.data = _to(_index(data, train_idx), self.device)
        self.val_data = _to(_index(data, val_idx), self.device)
        self.labels = self.val_labels = None
        first = data[0] if isinstance(data, tuple) else data
        self.data_shape, self.data_range = tuple(first.shape[1:]), None
        self.num_classes = 10 if isinstance(data, tuple) else None
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG afterwards
            torch.manual_seed(cfg.seed)
            self.model = recipe.make_net(pc.width, pc.rate).to(self.device)
        self.sde = None
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self._params, self._ema_params = list(self.model.parameters()), list(self.ema.parameters())
        o = cfg.optim
        self.opt = torch.optim.Adam(
            self.model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay
        )
        self.train_model = torch.compile(self.model) if cfg.compile else self.model
        self.data_gen = torch.Generator().manual_seed(cfg.seed)
        # CPU generator: the processes draw their noise (and the IGSO(3)/categorical inversions) on the CPU.
        self.noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = self.skipped = self.skipped_total = 0
        self.window_loss = torch.zeros((), device=self.device, dtype=torch.float64)
        self.window_n = 0
        self._set_perm(torch.randperm(_length(self.data), generator=self.data_gen), 0)

    def next_batch(self) -> dict:
        """The next batch of clean states (the recipe's noise is drawn inside the loss)."""
        B = self.cfg.batch_size
        if self.pos + B > len(self.perm):  # drop the last partial batch, start a new epoch
            self._set_perm(torch.randperm(_length(self.data), generator=self.data_gen), 0)
        idx = self._perm_dev[self.pos : self.pos + B]
        self.pos += B
        return {"x0": _index(self.data, idx)}

    def loss(self, batch: dict, model=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The mean x0-prediction loss of a batch through `model` (default: the training model)."""
        pc = self.cfg.process
        return x0_prediction_loss(
            self.process,
            model or self.train_model,
            batch["x0"],
            t_min=pc.t_min,
            t_max=pc.t_max,
            generator=generator or self.noise_gen,
            self_condition=pc.self_condition,
        )

    @torch.no_grad()
    def validate(self) -> float:
        """Mean loss of the EMA weights on the held-out states, with t and noise from a fixed seed."""
        g = torch.Generator().manual_seed(self.cfg.seed + 2)
        total, count = 0.0, 0
        for i in range(0, _length(self.val_data), self.cfg.batch_size):
            x0 = _index(self.val_data, slice(i, i + self.cfg.batch_size))
            k = _length(x0)
            total += float(self.loss({"x0": x0}, model=self.ema.eval(), generator=g)) * k
            count += k
        return total / max(count, 1)


def load_bridge_model(path):
    """(process, network with the EMA weights in eval mode, config) from a bridge run's model or checkpoint file."""
    from sdegen.checkpoint import read_checkpoint
    from sdegen.config import config_from_dict

    ck = read_checkpoint(Path(path))
    cfg = config_from_dict(json.loads(ck.config_json))
    if not cfg.process.name:
        raise ValueError(f"{path} is a score model, not a bridge recipe (load it with sdegen.load_model)")
    recipe = RECIPES[cfg.process.name]
    net = recipe.make_net(cfg.process.width, cfg.process.rate)
    net.load_state_dict(ck.state["ema"], strict=True)
    return recipe.make_process(cfg.process.rate), net.eval(), cfg
