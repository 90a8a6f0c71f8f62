"""The training loop: data order, loss, Adam with warm-up and clipping, EMA, validation, logs, checkpoints.

`train(config)` trains (or resumes) a score model described by a `sdegen.config.TrainConfig` and writes
to `config.out_dir`: config.json, metrics.jsonl (one JSON object per `log_every` steps and per
validation), checkpoint.pt (every `checkpoint_every` steps and at the end, atomic) and model.pt (the
EMA weights, `sdegen.checkpoint.export_ema`).

Exact resume: the checkpoint holds model, EMA and optimizer state, the step, the data permutation of the
current epoch and the position in it, and the states of the two explicit generators (data order on
the CPU; t, noise, label dropout and dequantisation on the device). The learning-rate schedule is a
function of the step only, and validation draws from its own freshly seeded generator, so a run that
is killed and resumed performs the same operations as an uninterrupted one: on the CPU the weights
agree bitwise (tested). On CUDA, cuDNN may pick non-deterministic kernels; resumed runs then differ in
the last bits exactly as two uninterrupted runs do.

Data parallel: started under torchrun, each rank takes a disjoint shard of every global batch (see
`sdegen._distributed`) and DistributedDataParallel averages gradients; only rank 0 writes.

Nothing lost: a step whose loss or gradient is NaN/inf is skipped (no update, no EMA) and after
`max_skipped_steps` such steps in a row the run stops with `TrainingDivergedError`; no checkpoint or model
file with non-finite weights is ever written, so the last good checkpoint stays. While it trains, a run
holds the lock `out_dir/train.lock` (a second training of the same directory is refused). A directory
with training output but no checkpoint, or a fresh start (`resume=False`) over an existing run, is refused
unless `force=True`. A torn last line of metrics.jsonl (what a kill leaves) is dropped on resume.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from sdegen._distributed import DistInfo, init_process_group, resolve_device
from sdegen._io import FileLock, atomic_write_text, check_output_dir
from sdegen.checkpoint import CheckpointError, export_ema, read_checkpoint, save_checkpoint
from sdegen.config import OptimConfig, TrainConfig, config_to_dict, config_to_json, make_score_model
from sdegen.data import get_dataset
from sdegen.losses import LOSSES
from sdegen.model import load_model
from sdegen.runtime import tune_allocator_once

# Config keys that may change between a run and its resumption (they do not affect the trajectory; a resumed
# run takes its weights from the checkpoint, so where `init_from` pointed no longer matters).
RESUMABLE_CHANGES = {
    "steps", "checkpoint_every", "val_every", "log_every", "out_dir", "device", "compile", "init_from",
    "max_skipped_steps",
}  # fmt: skip
LOCK_NAME = "train.lock"  # held in out_dir while a run trains
RUN_FILES = ("checkpoint.pt", "model.pt", "metrics.jsonl")  # what a run directory holds once training began


class TrainingDivergedError(RuntimeError):
    """Training stopped: the loss or gradient stayed non-finite, or weights turned NaN/inf."""


class RunDirectoryError(ValueError):
    """A run directory whose contents training would overwrite (pass force=True / --force to allow it)."""


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path  # the last training checkpoint
    model: Path  # the exported EMA model file
    step: int  # steps done
    loss: float  # mean training loss over the last logging window
    val_loss: float | None  # last validation loss (EMA weights), if any


class Trainer:
    """Everything one training run holds; `train` drives it. Built identically on every rank."""

    def __init__(self, config: TrainConfig, *, dist_info: DistInfo | None = None, verbose: bool = True):
        cfg = self.cfg = config
        self.dist = dist_info or DistInfo.from_env()
        self.device = resolve_device(cfg.device, self.dist)
        if cfg.batch_size % self.dist.world_size:
            raise ValueError(f"batch_size={cfg.batch_size} is not divisible by world size {self.dist.world_size}")
        ds = get_dataset(
            cfg.data.name,
            root=cfg.data.root or None,
            num_samples=cfg.data.num_samples,
            seed=cfg.seed,
            verbose=verbose and self.dist.is_main,
        )
        if ds.data_range is not None:
            ds = ds.to_range(*cfg.data.range)
        if cfg.data.conditional and ds.labels is None:
            raise ValueError(f"data.conditional=true but dataset {ds.name} has no labels")
        if cfg.data.dequantize and ds.data_range is None:
            raise ValueError(f"data.dequantize=true needs 8-bit image data, {ds.name} is unbounded")
        split = torch.randperm(len(ds), generator=torch.Generator().manual_seed(cfg.seed))
        val_idx, train_idx = split[: cfg.data.val_size], split[cfg.data.val_size :]
        if len(train_idx) < cfg.batch_size:
            raise ValueError(f"{len(train_idx)} training examples are fewer than batch_size={cfg.batch_size}")
        labels = ds.labels if cfg.data.conditional else None
        self.data, self.val_data = ds.data[train_idx].to(self.device), ds.data[val_idx].to(self.device)
        self.labels = labels[train_idx].to(self.device) if labels is not None else None
        self.val_labels = labels[val_idx].to(self.device) if labels is not None else None
        self.data_shape, self.data_range = ds.data_shape, ds.data_range
        self.num_classes = ds.num_classes if cfg.data.conditional else None

        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG afterwards
            torch.manual_seed(cfg.seed)
            self.model = self.build_model().to(self.device)
        self.sde = self.model.sde
        if cfg.init_from:
            _init_weights(self.model, cfg, self.data_shape, self.num_classes)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        # Parameter lists, walked once (module-tree walks per step cost ~0.7 ms on a small MLP).
        self._params, self._ema_params = list(self.model.parameters()), list(self.ema.parameters())
        o = cfg.optim
        self.opt = torch.optim.Adam(
            self.model.parameters(),
            lr=o.lr,
            betas=(o.beta1, o.beta2),
            eps=o.eps,
            weight_decay=o.weight_decay,
            fused=self.device.type == "cuda",
        )
        self.train_model = self.model
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        self.loss_fn = LOSSES[cfg.loss.name]
        self.data_gen = torch.Generator().manual_seed(cfg.seed)
        self.noise_gen = torch.Generator(self.device).manual_seed(cfg.seed + 1)
        self.step = 0
        self.skipped = 0  # steps skipped in a row for a non-finite loss or gradient
        self.skipped_total = 0
        # The loss logged every `log_every` steps is the mean over this window; it is part of the checkpoint so
        # that a resumed run logs what an uninterrupted one does.
        self.window_loss = torch.zeros((), device=self.device, dtype=torch.float64)
        self.window_n = 0
        self._set_perm(torch.randperm(len(self.data), generator=self.data_gen), 0)

    def build_model(self) -> torch.nn.Module:
        """The model this run trains (a `ScoreModel` here; `sdegen.classifier.ClassifierTrainer` builds another)."""
        return make_score_model(self.cfg, self.data_shape, self.num_classes)

    @property
    def self_conditioned(self) -> bool:
        return bool(getattr(getattr(self.model, "parametrisation", None), "self_condition", False))

    def _set_perm(self, perm: torch.Tensor, pos: int) -> None:
        """The data order of the current epoch (kept on the CPU for checkpoints, on the device for indexing)."""
        self.perm, self.pos = perm.cpu(), pos
        self._perm_dev = perm.to(self.device)

    # -- batches ------------------------------------------------------------------------------------------------
    def next_batch(self) -> dict:
        """This rank's shard of the next global batch, with its t-uniforms, noise and (dropped) labels."""
        cfg, B, g, dev = self.cfg, self.cfg.batch_size, self.noise_gen, self.device
        if self.pos + B > len(self.perm):  # drop the last partial batch, start a new epoch
            self._set_perm(torch.randperm(len(self.data), generator=self.data_gen), 0)
        idx = self._perm_dev[self.pos : self.pos + B]  # on the device: no host-device copy per step
        self.pos += B
        # Randomness for the whole global batch, drawn in a fixed order on every rank; each keeps its shard.
        u = torch.rand(B, generator=g, device=dev, dtype=torch.float64)
        noise = torch.randn((B, *self.data_shape), generator=g, device=dev)
        drop = torch.rand(B, generator=g, device=dev) < cfg.loss.label_dropout if self.labels is not None else None
        deq = torch.rand((B, *self.data_shape), generator=g, device=dev) if cfg.data.dequantize else None
        # Self-conditioning: each sample sees the model's own x0 estimate with probability ½ (Chen et al. 2022).
        sc = torch.rand(B, generator=g, device=dev) < 0.5 if self.self_conditioned else None
        n = B // self.dist.world_size
        sl = slice(self.dist.rank * n, (self.dist.rank + 1) * n)
        x0 = self.data[idx[sl]]
        if deq is not None:  # x = lo + (k + u)/256·(hi − lo), k the 8-bit level
            lo, hi = self.data_range
            k = torch.round((x0 - lo) / (hi - lo) * 255)
            x0 = lo + (k + deq[sl]) / 256 * (hi - lo)
        y = None
        if self.labels is not None:
            y = torch.where(drop[sl], self.num_classes, self.labels[idx[sl]])
        return {"x0": x0, "labels": y, "u": u[sl], "noise": noise[sl], "self_cond": None if sc is None else sc[sl]}

    def loss(self, batch: dict, model=None) -> torch.Tensor:
        """Mean loss of a batch (this rank's shard) through `model` (default: the training model)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"):
            per_sample = self.loss_fn(
                model or self.train_model,
                self.sde,
                batch["x0"],
                t_min=self.cfg.loss.t_min,
                labels=batch["labels"],
                u=batch["u"],
                noise=batch["noise"],
                self_cond=batch.get("self_cond"),
            )
        return per_sample.mean()

    # -- one optimizer step ----------------------------------------------------------------------------------------
    def train_step(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Warm-up lr, forward, backward (all-reduced under DDP), clip, Adam, EMA.

        A non-finite loss or gradient norm skips the update (the batch is consumed, the step count stays) and
        counts in `skipped`. Returns (loss, grad norm, whether the step was taken).
        """
        o = self.cfg.optim
        lr = learning_rate(o, self.step, self.cfg.steps)
        for group in self.opt.param_groups:
            group["lr"] = lr
        loss = self.loss(self.next_batch())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if o.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(self._params, o.grad_clip, foreach=True)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self._params if p.grad is not None], foreach=True)
        bad = ~(torch.isfinite(loss.detach()) & torch.isfinite(norm))  # the gradient is all-reduced: same on all ranks
        if self.dist.world_size > 1:  # the loss is per rank: agree, so that every rank skips the same steps
            bad = bad.to(torch.int32)
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bool(bad):
            self.opt.zero_grad(set_to_none=True)
            self.skipped += 1
            self.skipped_total += 1
            return loss.detach(), norm, False
        self.skipped = 0
        self.opt.step()
        with torch.no_grad():  # ema ← decay·ema + (1 − decay)·θ
            torch._foreach_lerp_(self._ema_params, self._params, 1.0 - self.cfg.ema_decay)
        self.step += 1
        return loss.detach(), norm, True

    @torch.no_grad()
    def validate(self) -> float:
        """Mean loss of the EMA weights on the held-out data, with t and noise from a fixed seed (a self-conditioned
        model is scored with its own x0 estimate for every sample, as a sampler uses it)."""
        g = torch.Generator(self.device).manual_seed(self.cfg.seed + 2)
        total, count = torch.zeros((), device=self.device, dtype=torch.float64), 0
        for i in range(0, len(self.val_data), self.cfg.batch_size):
            x0 = self.val_data[i : i + self.cfg.batch_size]
            y = self.val_labels[i : i + self.cfg.batch_size] if self.val_labels is not None else None
            u = torch.rand(len(x0), generator=g, device=self.device, dtype=torch.float64)
            noise = torch.randn(x0.shape, generator=g, device=self.device)
            sc = torch.ones(len(x0), dtype=torch.bool, device=self.device) if self.self_conditioned else None
            batch = {"x0": x0, "labels": y, "u": u, "noise": noise, "self_cond": sc}
            total += self.loss(batch, model=self.ema.eval()) * len(x0)
            count += len(x0)
        return float(total / max(count, 1))

    # -- state -------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": self.step,
            "perm": self.perm,
            "pos": self.pos,
            "data_gen": self.data_gen.get_state(),
            "noise_gen": self.noise_gen.get_state(),
            "data_shape": list(self.data_shape),
            "data_range": list(self.data_range) if self.data_range else None,
            "num_classes": self.num_classes,
            "window_loss": self.window_loss.detach().cpu().clone(),
            "window_n": self.window_n,
            "skipped_total": self.skipped_total,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"], strict=True)
        self.ema.load_state_dict(state["ema"], strict=True)
        self.opt.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self._set_perm(state["perm"], int(state["pos"]))
        self.data_gen.set_state(state["data_gen"])
        self.noise_gen.set_state(state["noise_gen"])
        # Absent from checkpoints written before these existed: an empty window, nothing skipped.
        self.window_loss = state.get("window_loss", torch.zeros((), dtype=torch.float64)).to(self.device)
        self.window_n = int(state.get("window_n", 0))
        self.skipped_total = int(state.get("skipped_total", 0))

    def save(self, path: Path) -> None:
        """Write a training checkpoint, refusing weights that hold NaN or inf (the last good file stays).

        Raises:
            TrainingDivergedError: non-finite model or EMA weights.
            OSError: the file cannot be written (naming it and the cause).
        """
        for name, params in (("model", self._params), ("EMA", self._ema_params)):
            if not all(bool(torch.isfinite(p).all()) for p in params):
                raise TrainingDivergedError(
                    f"the {name} weights hold NaN or inf at step {self.step}; {path} is not written "
                    "(the last good checkpoint is kept); lower optim.lr or set optim.grad_clip"
                )
        save_checkpoint(path, self.state_dict(), config_to_json(self.cfg), kind="training")

    def resume(self, path: Path) -> None:
        """Load a checkpoint of the same run; refuses one whose config differs in a key that matters."""
        ck = read_checkpoint(path, kind="training")  # a model file placed here is refused by name
        # A key the stored config lacks (written before the field existed) counts as its default.
        old = {**_flat(config_to_dict(TrainConfig())), **_flat(json.loads(ck.config_json))}
        new = _flat(config_to_dict(self.cfg))
        diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
        if diff:
            raise ValueError(
                f"{path}: cannot resume, the config differs in {diff}; use another out_dir or resume=False"
            )
        self.load_state_dict(ck.state)


def learning_rate(optim: OptimConfig, step: int, steps: int) -> float:
    """The lr of optimizer step `step` (0-based) of a `steps`-step run: linear warm-up, then `optim.schedule`.

    Warm-up: lr·(step + 1)/warmup_steps for step < warmup_steps. After it, "constant" keeps lr and "cosine" follows
    lr_end + (lr − lr_end)·(1 + cos(π·p))/2 with p = (step + 1 − warmup_steps)/(steps − warmup_steps) ∈ (0, 1] and
    lr_end = lr·final_lr_ratio, so the last step runs at lr_end. `steps` may grow on resume: the cosine then
    stretches to the new end from the step reached.
    """
    if optim.warmup_steps and step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant" or steps <= optim.warmup_steps:
        return optim.lr
    progress = min(1.0, (step + 1 - optim.warmup_steps) / (steps - optim.warmup_steps))
    end = optim.lr * optim.final_lr_ratio
    return end + (optim.lr - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


# Config sections a fine-tuning run must share with the model it starts from (they define what the weights mean).
INIT_MUST_MATCH = ("sde.", "net.", "score.", "data.conditional")
# ... except turning self-conditioning on: the new x0_prev input channels start at zero weight, so the fine-tuned
# model starts as the source model's function.
INIT_MAY_ADD = {"score.self_condition": (False, True)}


def _init_weights(model, cfg, data_shape, num_classes) -> None:
    """Load the EMA weights of `cfg.init_from` into model, refusing a model of another SDE, net or score."""
    src = load_model(cfg.init_from)
    old, new = _flat(config_to_dict(src.config)), _flat(config_to_dict(cfg))
    diff = sorted(
        k
        for k in old.keys() | new.keys()
        if k.startswith(INIT_MUST_MATCH)
        and old.get(k, False) != new.get(k)
        and INIT_MAY_ADD.get(k) != (old.get(k, False), new.get(k))
    )
    if tuple(src.data_shape) != tuple(data_shape) or src.num_classes != num_classes:
        have, want = (tuple(src.data_shape), src.num_classes), (tuple(data_shape), num_classes)
        diff.append(f"data shape/classes {have} vs {want}")
    if diff:
        raise CheckpointError(f"init_from {src.path}: the model differs from this config in {diff}")
    state = src.score_model.state_dict()
    for name, target in model.state_dict().items():  # zero weights for the added input channels (INIT_MAY_ADD)
        have = state.get(name)
        if (
            have is not None
            and have.ndim == target.ndim >= 2
            and have.shape[1] < target.shape[1]
            and have.shape[0] == target.shape[0]
        ):
            padded = torch.zeros_like(target)
            padded[:, : have.shape[1]] = have
            state[name] = padded
    model.load_state_dict(state, strict=True)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def train(config: TrainConfig, *, resume: bool = True, progress: bool = True, force: bool = False) -> TrainResult:
    """Train (or resume, if `out_dir` holds a checkpoint and `resume`) the model of `config`; see the module doc.

    Args:
        config: the resolved training config.
        resume: continue from `out_dir/checkpoint.pt` if there is one; False starts afresh.
        progress: show a progress bar.
        force: allow starting afresh over a directory that holds a run (with resume=False, or when it has
            training output but no checkpoint to resume from); its files are overwritten.

    Raises:
        OSError: `out_dir` is a file or not writable (before any work), or a write failed (naming the file).
        sdegen._io.FileLockedError: another process trains in `out_dir`.
        RunDirectoryError: `out_dir` holds a run that would be overwritten, and not `force`.
        TrainingDivergedError: the loss or gradient stayed non-finite for more than `max_skipped_steps`
            steps in a row; the last good checkpoint is kept.
        sdegen.checkpoint.CheckpointError / ValueError: the checkpoint cannot be resumed (corrupt, a model
            file, another config).
    """
    tune_allocator_once()  # ~25% faster CPU forwards (sdegen.runtime)
    info = DistInfo.from_env()
    out = Path(config.out_dir)
    lock = None
    if info.is_main:  # before any work: a file in the way, a read-only place, a run in progress or at risk
        check_output_dir(out, "out_dir")
        lock = FileLock(out / LOCK_NAME, f"run directory {out}").acquire()
    try:
        if info.is_main:
            _check_run_dir(out, resume=resume, force=force)
        started_group = init_process_group(info, resolve_device(config.device, info))
        try:
            return _run(_make_trainer(config, info), resume=resume, progress=progress)
        finally:
            if started_group:
                dist.destroy_process_group()
    finally:
        if lock is not None:
            lock.release()


def _make_trainer(config: TrainConfig, info: DistInfo) -> Trainer:
    """The score trainer, or for a config with `process.name` the bridge-recipe trainer (sdegen.processes)."""
    if config.process.name:
        from sdegen.processes.trainer import BridgeTrainer  # late: it subclasses Trainer

        return BridgeTrainer(config, dist_info=info)
    if config.classifier.train:
        from sdegen.classifier import ClassifierTrainer  # late: it subclasses Trainer

        return ClassifierTrainer(config, dist_info=info)
    return Trainer(config, dist_info=info)


def _check_run_dir(out: Path, *, resume: bool, force: bool) -> None:
    """Refuse to overwrite a run: training output without a checkpoint, or a fresh start over a run."""
    present = [name for name in RUN_FILES if (out / name).is_file() and (out / name).stat().st_size > 0]
    if force or not present:
        return
    if not resume:
        raise RunDirectoryError(
            f"{out} holds a run ({', '.join(present)}); a fresh start (--no-resume) would overwrite it: "
            "use another out_dir, or add --force (force=True) to start afresh anyway"
        )
    if "checkpoint.pt" not in present:
        raise RunDirectoryError(
            f"{out} holds {', '.join(present)} but no checkpoint.pt to resume from; starting afresh would "
            "overwrite them: restore checkpoint.pt, use another out_dir, or add --force (force=True)"
        )


def _run(tr: Trainer, *, resume: bool, progress: bool) -> TrainResult:
    cfg, main = tr.cfg, tr.dist.is_main
    out = Path(cfg.out_dir)
    ckpt, metrics_path = out / "checkpoint.pt", out / "metrics.jsonl"
    if resume and ckpt.exists():
        tr.resume(ckpt)
    if main:
        atomic_write_text(out / "config.json", config_to_json(cfg) + "\n")
        _truncate_metrics(metrics_path, tr.step)
    bar = tqdm(total=cfg.steps, initial=tr.step, disable=not (progress and main), dynamic_ncols=True, unit="it")
    timed_n, window_t0 = 0, time.perf_counter()  # throughput counts this process's steps only
    last_loss, val_loss, good_step = float("nan"), None, (tr.step if ckpt.exists() else None)
    try:
        with _open_log(metrics_path) if main else contextlib.nullcontext(io.StringIO()) as log:
            tr.model.train()  # validation evaluates the EMA copy, so the model stays in training mode
            while tr.step < cfg.steps:
                loss, norm, taken = tr.train_step()
                if not taken:
                    if tr.skipped > cfg.max_skipped_steps:
                        raise _diverged(tr, ckpt if main and good_step is not None else None, good_step, loss, norm)
                    continue
                tr.window_loss += loss
                tr.window_n += 1
                timed_n += 1
                bar.update(1)
                record = {}
                if tr.step % cfg.log_every == 0 or tr.step == cfg.steps:
                    dt = time.perf_counter() - window_t0
                    last_loss = float(tr.window_loss) / tr.window_n
                    record = {
                        "loss": last_loss,
                        "lr": tr.opt.param_groups[0]["lr"],
                        "grad_norm": float(norm),
                        "images_per_s": timed_n * cfg.batch_size / dt,
                    }
                    if tr.skipped_total:
                        record["skipped_steps"] = tr.skipped_total
                    tr.window_loss.zero_()
                    tr.window_n, timed_n, window_t0 = 0, 0, time.perf_counter()
                validate = cfg.val_every and (tr.step % cfg.val_every == 0 or tr.step == cfg.steps)
                if validate and main and len(tr.val_data):
                    val_loss = record["val_loss"] = tr.validate()
                if record and main:
                    _write_line(log, metrics_path, json.dumps({"step": tr.step, **record}))
                    bar.set_postfix(loss=f"{last_loss:.4g}", **({"val": f"{val_loss:.4g}"} if val_loss else {}))
                if main and (tr.step % cfg.checkpoint_every == 0 or tr.step == cfg.steps):
                    tr.save(ckpt)
                    good_step = tr.step
    finally:
        bar.close()  # before any error message, so that it starts on a line of its own
    if main:
        if not ckpt.exists():
            tr.save(ckpt)
        export_ema(ckpt, out / "model.pt")
    if tr.dist.world_size > 1:
        dist.barrier()
    return TrainResult(ckpt, out / "model.pt", tr.step, last_loss, val_loss)


def _diverged(tr: Trainer, ckpt: Path | None, good_step: int | None, loss, norm) -> TrainingDivergedError:
    kept = f"the last good checkpoint {ckpt} (step {good_step}) is kept" if ckpt else "no checkpoint was written"
    return TrainingDivergedError(
        f"training diverged: the loss or gradient was NaN/inf for {tr.skipped} steps in a row after step "
        f"{tr.step} (last loss {float(loss):.4g}, gradient norm {float(norm):.4g}); {kept}. Lower optim.lr, set "
        f"optim.grad_clip, or raise max_skipped_steps (now {tr.cfg.max_skipped_steps})"
    )


def _open_log(path: Path):
    try:
        return open(path, "a")
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from err


def _write_line(log, path: Path, line: str) -> None:
    try:
        log.write(line + "\n")
        log.flush()
    except OSError as err:  # a full disk: name the file
        raise OSError(err.errno, err.strerror, str(path)) from err


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past `step` (written after the checkpoint a resumed run restarts from).

    A torn last line (what a kill during a write leaves) is dropped; any other line that is not a JSON record
    with an integer "step" is an error naming the file and line.
    """
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    keep = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                break  # torn by a kill mid-write
            raise ValueError(f"{path}: line {number} is not a JSON record ({err}); remove it to resume") from None
        step_of = record.get("step") if isinstance(record, dict) else None
        if isinstance(step_of, bool) or not isinstance(step_of, int):
            raise ValueError(f"{path}: line {number} has no integer 'step'; remove it to resume")
        if record["step"] <= step:
            keep.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in keep))
