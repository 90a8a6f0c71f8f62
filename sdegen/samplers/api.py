"""`sdegen.sample`: draw samples with any registered solver and return the path as a trajectory Dataset."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime

import numpy as np
import torch
import xarray as xr

from sdegen._checks import check_finite, check_int, resolve_seed
from sdegen.grids import coefficients
from sdegen.inpaint import (
    IMPUTE_METHODS,
    RESAMPLE_SOLVERS,
    Known,
    reconstruction_guidance,
    repaint,
    replacement_score,
)
from sdegen.runtime import tune_allocator_once
from sdegen.samplers._noise import prior_sample, sample_offset
from sdegen.samplers._record import Recorder
from sdegen.samplers._split import local_part
from sdegen.samplers.registry import SOLVERS
from sdegen.score_guard import GuardedScore
from sdegen.sdes import AbstractSDE
from sdegen.trajectory import TrajectoryWriter, make_trajectory


def _check_conditioning(score, labels) -> None:
    """Refuse labels to store that differ from those the score says it is conditioned on (`score.labels`,
    set by `ScoreModel.score_fn` for per-sample labels)."""
    conditioned = getattr(score, "labels", None)
    if labels is None or not isinstance(conditioned, torch.Tensor):
        return
    if conditioned.shape != labels.shape or not np.array_equal(conditioned.cpu().numpy(), labels):
        raise ValueError(
            f"labels {labels[:8].tolist()}... differ from the labels the score is conditioned on "
            f"{conditioned[:8].tolist()}...; build the score with the labels you store"
        )


def _check_condition(condition, impute, resample, jump, solver, shape, dtype, data_range):
    """(the condition for the run's batch, its per-sample variables, attrs), checked before any work."""
    if impute not in IMPUTE_METHODS:
        raise ValueError(f"unknown impute method {impute!r}; choose one of {list(IMPUTE_METHODS)}")
    resample, jump = check_int(resample, "resample", 1), check_int(jump, "jump", 1)
    if (resample > 1 or jump > 1) and solver not in RESAMPLE_SOLVERS:
        raise ValueError(
            f"resampling restarts the solver on pieces of its grid, which {solver!r} cannot do without losing its "
            f"state; use one of {list(RESAMPLE_SOLVERS)}"
        )
    attrs = {"resample": resample, "jump": jump}
    if condition is None:
        return None, {}, attrs
    if not isinstance(condition, Known):
        raise TypeError(f"condition must be a sdegen.inpaint.Known(values, mask), got {type(condition).__name__}")
    condition = condition.for_batch(shape, dtype)
    condition.check_range(data_range)
    mask = condition.mask.cpu().numpy().astype(np.uint8)
    known = np.where(mask == 1, condition.values.cpu().numpy(), 0).astype(np.float32)
    return condition, {"mask": mask, "known": known}, {**attrs, "impute": impute}


def _save_indices(steps: int, save_every: int | None) -> tuple[int, ...]:
    every = -(-steps // 10) if save_every is None else check_int(save_every, "save_every", 1)
    idx = list(range(0, steps + 1, every))
    return tuple(idx if idx[-1] == steps else [*idx, steps])


def _options(solver: str, given: dict) -> dict:
    """The solver's options (its own and its grid's) with the given values over the defaults."""
    accepted = SOLVERS[solver].options
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        warnings.warn(
            f"solver {solver!r} ignores unknown option(s) {unknown}; it accepts {sorted(accepted)}",
            UserWarning,
            stacklevel=3,
        )
    return {**accepted, **{k: v for k, v in given.items() if k in accepted}}


def _describe(score) -> str:
    name = getattr(score, "__qualname__", None) or type(score).__qualname__
    return str(name)[:200]


def sample(
    sde: AbstractSDE,
    score,
    shape: tuple[int, ...],
    solver: str = "euler",
    steps: int = 500,
    seed: int | torch.Generator | None = None,
    save_every: int | None = None,
    t_min: float = 1e-3,
    *,
    labels=None,
    denoise: bool = False,
    save_x0_hat: bool = False,
    progress: bool = False,
    out=None,
    compression: bool | int = False,
    chunking: str = "time",
    split: bool | tuple[int, int] | None = None,
    resume: bool = False,
    init: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device=None,
    score_source: str | None = None,
    data_range="unspecified",
    extra_attrs: dict | None = None,
    condition: Known | None = None,
    impute: str = "replace",
    impute_options: dict | None = None,
    resample: int = 1,
    jump: int = 1,
    test_index=None,
    test_label=None,
    **options,
) -> xr.Dataset:
    """Sample by solving the reverse-time SDE or probability-flow ODE from T down to t_min.

    Args:
        sde: the forward SDE the score belongs to.
        score: callable score(x, t) -> tensor shaped like x; x: (batch, *data_shape), t: (batch,).
        shape: (batch, *data_shape) of the samples.
        solver: a name from `sdegen.solvers()`; see `sdegen.samplers.SOLVERS` for each one's properties.
        steps: number of grid intervals (for adaptive solvers: of the save grid only).
        seed: int >= 0, a torch.Generator (one int is drawn from it) or None (fresh, recorded in attrs).
            Sample i of a run depends on (seed, i) only, not on the batch size (fixed-step solvers).
        save_every: keep every k-th grid state (always the first and the last); default ~10 states.
        t_min: the final time, 0 < t_min < T.

    Other arguments:
        labels: (batch,) integer labels stored as the `label` coordinate (the score must be conditioned).
        denoise: replace the final state by Tweedie's E[x0 | x_{t_min}] (one extra evaluation, counted).
        save_x0_hat: also record E[x0 | x_t] at every saved state (`x0_hat`), read from the evaluations the
            solver makes anyway; states whose score the solver never evaluates cost one extra evaluation.
        progress: show a tqdm progress bar.
        out: stream every saved state into `<out>.partial` as it is produced and rename it onto `out` when
            the run completes; a failed or killed run leaves `out` untouched and the partial file readable.
        compression: zlib compression of the streamed file: False, True (level 4) or a level 0..9.
        chunking: netCDF chunks of the streamed file, "time" (one saved state per chunk: reading along samples,
            e.g. per-time moments) or "sample" (the saved path of a block of samples per chunk: reading along
            time); see `sdegen.trajectory.TrajectoryWriter`.
        split: run only this rank's block of the `shape[0]` samples when a torch.distributed process group of
            several ranks is initialised (None, the default), never (False), or as rank r of N given as a pair
            (r, N) without a process group (job arrays; ranks simulated in one process); see `sdegen.shards`. Rank r
            streams `out` to `<stem>-0000r-of-0000N.nc` and returns its block, whose `sample` coordinate holds
            the global indices; `labels` and `init` are given for all samples and sliced, while a score
            conditioned per sample must be built for the block (`sdegen.shards.split_range`).
        resume: with `out`: when `out` (this rank's shard) is already a complete file of the same run, open it
            lazily and return it instead of sampling again.
        init: (batch, *data_shape) starting state at t = T instead of a prior draw.
        dtype, device: of the state (float32 default; the trajectory stores x as float32).
        score_source, data_range: descriptions stored in the attributes (data_range, e.g. (0.0, 1.0), is stored
            as a JSON string when it is not a string).
        extra_attrs: more attributes for the trajectory (and the streamed file), e.g. {"guidance": 1.5}.
        condition: `sdegen.inpaint.Known(values, mask)`: impute the samples given these known entries
            (`sdegen.inpaint`); stored as the variables `mask` (uint8, 1 = known) and `known`.
        impute: how the condition enters: "replace" (the known entries' score is that of their noised value,
            every solver), "guidance" (reconstruction guidance, `impute_options` for its `weight` and
            `sigma_data`) or "given" (the score is already conditional, e.g. an exact analytic one).
        resample, jump: RePaint resampling, `resample` passes over every `jump` grid steps (1, 1: off); for
            the single-step solvers `sdegen.inpaint.RESAMPLE_SOLVERS` only.
        test_index, test_label: (batch,) integers stored as the coordinates `test_index` and `test_label` (e.g.
            the test digits an imputation completes, and their true labels).
        **options: solver options (see each solver's `SolverInfo.options`); unknown names warn.

    Returns:
        The trajectory Dataset (see `sdegen.trajectory`); `attrs["nfe"]` counts every score evaluation,
        `attrs["nfe_extra"]` those made for `denoise`/`x0_hat` beyond the solver's own.

    Raises:
        ValueError: unknown solver (the message lists the legal names), bad steps, shapes, times or options,
            a VP-only solver on another SDE, or a score returning non-finite values or the wrong shape.
    """
    if not isinstance(sde, AbstractSDE):
        raise TypeError(f"sde must be an sdegen SDE (AbstractSDE), got {type(sde).__name__}")
    if not callable(score):
        raise TypeError(f"score must be callable as score(x, t), got {type(score).__name__}")
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {list(SOLVERS)}")
    steps = check_int(steps, "steps", 1)
    shape = tuple(int(check_int(n, "shape entries", 1)) for n in shape)
    if len(shape) < 2:
        raise ValueError(f"shape must be (batch, *data_shape) with at least 2 entries, got {shape}")
    t_min = float(t_min)
    if not 0.0 < t_min < sde.T:
        raise ValueError(f"t_min must lie in (0, T={sde.T}), got {t_min}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    info = SOLVERS[solver]
    opts = _options(solver, options)
    if info.vp_only and not sde.vp_family:
        raise ValueError(
            f"solver {solver!r} is defined for the VP family (VPSDE, SubVPSDE) only, got {sde!r}; "
            "for VE SDEs use 'euler', 'pc', 'ode', 'dpmpp_2m' or 'edm_heun'"
        )
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (shape[0],) or labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be {shape[0]} integers, got shape {labels.shape} dtype {labels.dtype}")
    per_sample, cond_attrs = {}, {}
    if condition is not None or resample != 1 or jump != 1:
        condition, per_sample, cond_attrs = _check_condition(condition, impute, resample, jump, solver, shape,
                                                             dtype, data_range)  # fmt: skip
    for name, value in (("test_index", test_index), ("test_label", test_label)):
        if value is not None:
            value = np.asarray(value)
            if value.shape != (shape[0],) or value.dtype.kind not in "iu":
                raise ValueError(f"{name} must be {shape[0]} integers, got shape {value.shape} dtype {value.dtype}")
            per_sample[name] = value.astype(np.int64)
    seed = resolve_seed(seed)  # None: fresh entropy, recorded in the attrs
    part = local_part(shape, labels, init, out, split, solver, opts)  # this rank's block of a split run
    shape, labels, init, out, offset = part.shape, part.labels, part.init, part.out, part.offset
    if offset or len(per_sample) and next(iter(per_sample.values())).shape[0] != shape[0]:
        per_sample = {k: v[offset : offset + shape[0]] for k, v in per_sample.items()}
        condition = None if condition is None else condition.block(offset, offset + shape[0])
    _check_conditioning(score, labels)
    device = torch.device("cpu") if device is None else torch.device(device)
    ts = info.grid(sde, steps, t_min, **{k: opts[k] for k in info.grid_options})
    alpha, sigma = coefficients(sde, ts)
    save_idx = _save_indices(len(ts) - 1, save_every)

    if init is None:
        with sample_offset(offset):
            x = prior_sample(sde, seed, shape, dtype, device)
    else:
        if not isinstance(init, torch.Tensor) or tuple(init.shape) != shape:
            raise ValueError(f"init must be a tensor of shape {shape}, got {getattr(init, 'shape', type(init))}")
        check_finite(init, "init")  # not the score's fault when it meets a NaN start
        x = init.detach().to(dtype=dtype, device=device).clone()

    tune_allocator_once()  # ~25% faster CPU forwards (sdegen.runtime)
    if condition is not None and impute == "replace":
        score = replacement_score(score, sde, condition.for_batch(shape, dtype, device))
    elif condition is not None and impute == "guidance":
        score = reconstruction_guidance(score, sde, condition.for_batch(shape, dtype, device), **(impute_options or {}))
    guarded = GuardedScore(score, t_min, sde.T)  # the one wrapper of this run: checks, time guard, NFE
    attrs = {
        "sdegen_version": _version(), **sde.attrs(), "solver": solver, "steps": len(ts) - 1, "nfe": 0,
        "nfe_extra": 0, "seed": seed, "t_min": t_min, "T": sde.T, "score_source": score_source or _describe(score),
        "data_range": data_range, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "save_every": save_idx[1] - save_idx[0] if len(save_idx) > 1 else 1, "denoise": denoise,
        "init": "prior" if init is None else "given", "dtype": str(dtype).replace("torch.", ""),
        **{f"solver_{k}": v for k, v in opts.items()}, "solver_options": json.dumps(opts, default=str, sort_keys=True),
    }  # fmt: skip
    attrs.update({**part.attrs, **cond_attrs, **(extra_attrs or {})})
    if resume and out is not None and part.completed(out, attrs):
        return part.open(out)
    states, x0s, times = [], [], []
    writer = None  # opened before any work: an unwritable or locked `out` fails at once
    if out is not None:
        writer = TrajectoryWriter(out, shape, attrs=attrs, labels=labels, x0_hat=save_x0_hat, compression=compression,
                                  sample_offset=offset, chunking=chunking, saved=len(save_idx),
                                  per_sample=per_sample)  # fmt: skip

    def emit(k: int, xk: np.ndarray, x0k: np.ndarray | None) -> None:
        states.append(xk)
        x0s.append(x0k)
        times.append(k)
        if writer is not None:
            t = float(ts[k])
            writer.append(t, xk, sigma[k], alpha[k], x0k, attrs={"nfe": guarded.nfe})

    recorder = Recorder(guarded, ts, alpha, sigma, save_idx, save_x0_hat, emit, progress)
    diagnostics: dict = {}
    run_args = {"seed": seed, "saved": save_idx, "diagnostics": diagnostics}
    solver_opts = {k: v for k, v in opts.items() if k not in info.grid_options}
    try:
        with torch.no_grad(), sample_offset(offset):
            if resample > 1 or jump > 1:

                def solve(xk, piece, callback, piece_seed):
                    args = {"seed": piece_seed, "saved": (0, len(piece) - 1), "diagnostics": diagnostics}
                    return info.fn(
                        sde,
                        guarded,
                        xk,
                        piece,
                        callback=callback,
                        **{a: args[a] for a in info.run_arguments},
                        **solver_opts,
                    )

                x = repaint(solve, sde, x, ts, callback=recorder, seed=seed, resample=resample, jump=jump)
            else:
                x = info.fn(
                    sde,
                    guarded,
                    x,
                    ts,
                    callback=recorder,
                    **{a: run_args[a] for a in info.run_arguments},
                    **solver_opts,
                )
            recorder.finish(x, denoise)  # fmt: skip
    except BaseException as err:
        recorder.close()
        if writer is not None:
            writer.abort(err, {"nfe": guarded.nfe})  # `out` untouched; the partial file is named on err
        raise
    attrs.update(nfe=guarded.nfe, nfe_extra=recorder.nfe_extra, **diagnostics)
    if impute == "guidance" and condition is not None:
        attrs["impute_vjps"] = score.vjps  # vector–Jacobian products through the network (one per evaluation)
    if writer is not None:
        writer.close(attrs, complete=True)
    idx = np.asarray(times)
    ds = make_trajectory(
        np.stack(states),
        ts.numpy()[idx],
        np.asarray(sigma)[idx],
        np.asarray(alpha)[idx],
        x0_hat=np.stack(x0s) if save_x0_hat else None,
        labels=labels,
        attrs={**attrs, "complete": 1},
        per_sample=per_sample,
    )
    return ds.assign_coords(sample=ds["sample"] + offset) if offset else ds


def _version() -> str:
    from sdegen import __version__

    return __version__
