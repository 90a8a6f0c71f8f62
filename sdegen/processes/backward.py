"""The reverse chain of a bridge process: predict x0 from x_t, step to x_s by the bridge, repeat.

`sample_backward(process, predictor, x_T, times)` runs from times[-1] down to times[0]. At each state
x_t it calls `predictor(x_t, t)` for x0_hat (logits for categorical states, a tuple for `Joint`) and draws
x_s from `process.reverse_step`: the bridge x_s | x0 = x0_hat, x_t for point predictions, the mixture of
bridges over the predicted classes for categorical ones. For the Gaussian SDEs this is DDPM ancestral
sampling (the posterior q(x_s | x_t, x0_hat)) on the given grid.

Conventions shared with `sdegen.sample`: sample i draws its noise from its own generators seeded by
(seed, i) (splitmix64 `derive_seed`, via `PerSampleStream`), so it does not depend on the batch size;
`attrs["nfe"]` counts predictor calls (one per state, including the last, whose prediction is the
returned `x0_hat` at times[0]); the Dataset holds the saved states from times[-1] down to times[0].
"""

from __future__ import annotations

import math
import secrets
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from sdegen.processes._base import AbstractProcess
from sdegen.processes._common import Generator, PerSampleStream
from sdegen.processes._writer import StreamingWriter
from sdegen.processes.euclidean import _LinearGaussian
from sdegen.processes.joint import Joint
from sdegen.sdes import AbstractSDE
from sdegen.trajectory import data_dims, make_trajectory

BRIDGE_STREAM = 5  # per-sample stream ids 5 and 6 (normal, uniform); 1–3 are taken by sdegen.samplers
GRIDS = ("log", "linear")


def time_grid(kind: str, t_min: float, t_max: float, n: int) -> torch.Tensor:
    """n increasing times from t_min to t_max (both included), float64.

    Args:
        kind: "log" (geometric spacing, fine near t_min where bridges move least) or "linear".
        t_min, t_max: 0 < t_min < t_max.
        n: number of points, >= 2.
    """
    if kind not in GRIDS:
        raise ValueError(f"unknown time grid {kind!r}; choose one of {list(GRIDS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    lo, hi = float(t_min), float(t_max)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise ValueError(f"need 0 < t_min < t_max, got t_min={t_min!r}, t_max={t_max!r}")
    if kind == "log":
        grid = torch.logspace(math.log10(lo), math.log10(hi), n, dtype=torch.float64)
    else:
        grid = torch.linspace(lo, hi, n, dtype=torch.float64)
    grid[0], grid[-1] = lo, hi
    return grid


def reverse_step(process, prediction, x_t, s: float, t: float, generator: Generator = None):
    """x_s from the x0 prediction and x_t: `process.reverse_step` for bridge processes, the Gaussian
    posterior bridge for the SDEs of `sdegen.sdes`."""
    if isinstance(process, AbstractProcess):
        return process.reverse_step(prediction, x_t, s, t, generator=generator)
    return process.sample_bridge(prediction, x_t, s, t, generator=generator)


def _check_times(times) -> list[float]:
    ts = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
    if ts.ndim != 1 or ts.numel() < 2:
        raise ValueError(f"times must be a 1-D sequence of at least 2 times, got shape {tuple(ts.shape)}")
    if not torch.isfinite(ts).all() or ts[0] <= 0:
        raise ValueError(f"times must be finite and positive, got values in [{ts.min().item()}, {ts.max().item()}]")
    if (ts[1:] <= ts[:-1]).any():
        raise ValueError("times must be strictly increasing (the run goes from times[-1] down to times[0])")
    return ts.tolist()


def _resolve_seed(seed) -> int:
    if seed is None:
        return secrets.randbits(62)  # fresh entropy, recorded in attrs so the run can be repeated
    if isinstance(seed, torch.Generator):
        return int(torch.randint(0, 2**62, (), generator=seed))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, a torch.Generator or None, got {seed!r}")
    return int(seed)


def _save_indices(num_states: int, save_every) -> list[int]:
    """Indices (0 = the first state, at times[-1]) of the saved states; always the first and the last."""
    steps = num_states - 1
    if save_every is None:
        every = max(1, -(-steps // 10))
    elif isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
        raise ValueError(f"save_every must be an integer >= 1, got {save_every!r}")
    else:
        every = save_every
    idx = list(range(0, num_states, every))
    return idx if idx[-1] == steps else [*idx, steps]


def _components(process) -> tuple:
    return process.processes if isinstance(process, Joint) else (process,)


def _as_tuple(value, n: int, name: str) -> tuple:
    if n == 1 and not isinstance(value, tuple | list):
        return (value,)
    if not isinstance(value, tuple | list) or len(value) != n:
        raise ValueError(f"{name} must be a tuple of {n} entries (one per Joint component)")
    return tuple(value)


def _check_state(process, x, name: str) -> None:
    if isinstance(process, AbstractProcess):
        process.check_state(x, name)
    else:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
            raise ValueError(f"{name} must be a float tensor (batch, *data_shape), got {getattr(x, 'shape', x)}")


def _check_mask(process, mask, x: torch.Tensor, name: str) -> torch.Tensor | None:
    """The mask as a bool tensor shaped like x (True = diffused), or None."""
    if mask is None:
        return None
    mask = torch.as_tensor(mask, device=x.device)
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor (True where the element is diffused), got {mask.dtype}")
    if getattr(process, "kind", None) == "quaternion" and mask.shape == x.shape[:-1]:
        mask = mask.unsqueeze(-1).expand(x.shape)
    if mask.shape != x.shape:
        raise ValueError(f"{name} must have the state's shape {tuple(x.shape)}, got {tuple(mask.shape)}")
    if getattr(process, "kind", None) == "quaternion" and (mask != mask[..., :1]).any():
        raise ValueError(f"{name} must mask whole quaternions (equal along the last dim)")
    return mask


def sample_backward(
    process,
    predictor,
    x_T,
    times,
    *,
    seed: int | torch.Generator | None = None,
    mask=None,
    self_condition: bool = False,
    save_every: int | None = None,
    out=None,
) -> xr.Dataset:
    """Run the reverse bridge chain from x_T at times[-1] down to times[0] and return the path.

    Args:
        process: a bridge process (`sdegen.processes`), a `Joint` of them, or a Gaussian SDE.
        predictor: `predictor(x_t, t)` → x0_hat (logits (*state, K) for categorical states; a tuple for
            `Joint`), t a float32 (batch,) tensor; `predictor(x_t, t, x0_hat_prev)` when self_condition.
        x_T: the start state (a tuple for `Joint`), e.g. `process.sample_equilibrium(...)`.
        times: increasing positive times (`time_grid`); the chain visits them from last to first.
        seed: int >= 0, a torch.Generator (one int is drawn from it) or None (fresh, stored in attrs).
        mask: bool tensor shaped like the state (a tuple for `Joint`, entries may be None); True marks the
            diffused elements, the others keep their value from x_T along the whole path (inpainting).
        self_condition: pass the previous prediction as a third argument (None on the first call).
        save_every: keep every k-th state (always the first and the last); default about 10 states.
        out: optional netCDF path; records are streamed to `<out>.partial` (synced after each) and renamed
            to `out` when the run completes.

    Returns:
        A trajectory Dataset: `x` (time, sample, ...) (`x_0`, `x_1`, … for Joint) with the state kind in
        its attrs, `x0_hat` (`x0_hat_0`, …) the prediction made at each saved state, `sigma`/`mean_scale`
        for Gaussian processes, attrs `nfe`, `seed`, `steps`, `solver` = "bridge".

    Raises:
        ValueError/TypeError: bad times, state, mask, seed or save_every, or a prediction of the wrong shape.
    """
    ts = _check_times(times)
    comps = _components(process)
    joint = isinstance(process, Joint)
    if isinstance(process, AbstractSDE) and ts[-1] > process.T:
        raise ValueError(f"times must lie in (0, {process.T}] for {process!r}, got t_max={ts[-1]}")
    xs = _as_tuple(x_T, len(comps), "x_T")
    for j, (p, xj) in enumerate(zip(comps, xs, strict=True)):
        _check_state(p, xj, f"x_T[{j}]" if joint else "x_T")
    batch = xs[0].shape[0]
    if any(xj.shape[0] != batch for xj in xs):
        raise ValueError("x_T entries must share the batch size")
    masks = _as_tuple(mask, len(comps), "mask") if mask is not None else (None,) * len(comps)
    masks = tuple(_check_mask(p, m, xj, "mask") for p, m, xj in zip(comps, masks, xs, strict=True))
    seed = _resolve_seed(seed)
    generators = PerSampleStream(seed, BRIDGE_STREAM, batch)
    save = set(_save_indices(len(ts), save_every))
    given = tuple(xj.clone() for xj in xs)
    state = given
    float_dtype = next((xj.dtype for xj in xs if xj.is_floating_point()), torch.float32)
    attrs = {
        "sdegen_version": _version(),
        **process.attrs(),
        "solver": "bridge",
        "steps": len(ts) - 1,
        "seed": seed,
        "t_min": ts[0],
        "t_max": ts[-1],
        "self_condition": bool(self_condition),
        "masked": mask is not None,
        "score_source": str(getattr(predictor, "__qualname__", type(predictor).__qualname__))[:200],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    records: list[tuple[float, tuple, tuple]] = []
    writer = StreamingWriter(out) if out is not None else None
    prev, nfe = None, 0
    try:
        for k in range(len(ts) - 1, -1, -1):
            t = ts[k]
            tt = torch.full((batch,), t, dtype=float_dtype, device=xs[0].device)
            x_in = state if joint else state[0]
            with torch.no_grad():  # sampling: no graph through the chain
                pred = predictor(x_in, tt, prev) if self_condition else predictor(x_in, tt)
            nfe += 1
            preds = _as_tuple(pred, len(comps), "the prediction")
            index = len(ts) - 1 - k
            if index in save:
                record = (t, tuple(x.detach().cpu() for x in state), tuple(p.detach().cpu() for p in preds))
                records.append(record)
                if writer is not None:
                    writer.append(_dataset(process, [record], attrs, nfe))
            if k == 0:
                break
            s = ts[k - 1]
            new = tuple(
                reverse_step(p, pj, xj, s, t, generators) for p, pj, xj in zip(comps, preds, state, strict=True)
            )
            # Elements outside the mask keep their given value exactly (conditioning/inpainting).
            state = tuple(
                xj if m is None else torch.where(m, xj, g) for xj, m, g in zip(new, masks, given, strict=True)
            )
            prev = pred.detach() if isinstance(pred, torch.Tensor) else tuple(p.detach() for p in preds)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    ds = _dataset(process, records, attrs, nfe)
    if writer is not None:
        writer.finish(Path(out), {**attrs, "nfe": nfe})
    return ds


def _version() -> str:
    from sdegen import __version__

    return __version__


def _gaussian_coefficients(process, times: list[float]):
    """(sigma, mean_scale) at the saved times for Gaussian processes, (None, None) otherwise."""
    t = torch.tensor(times, dtype=torch.float64)
    if isinstance(process, AbstractSDE):
        return process._marginal_std(t).numpy(), process._mean_scale(t).numpy()
    if isinstance(process, _LinearGaussian):
        return process.marginal_std(t, len(times)).numpy(), process.mean_scale(t, len(times)).numpy()
    return None, None


def _dataset(process, records, attrs: dict, nfe: int) -> xr.Dataset:
    """Assemble the trajectory Dataset from records (t, states, predictions)."""
    times = [r[0] for r in records]
    comps = _components(process)
    parts = []
    for j, p in enumerate(comps):
        x = np.stack([r[1][j].numpy() for r in records])
        x0_hat = np.stack([r[2][j].float().numpy() for r in records])
        sigma, mean_scale = _gaussian_coefficients(p, times)
        ds = make_trajectory(x, times, sigma, mean_scale, x0_hat=x0_hat, attrs={}, kind=getattr(p, "kind", "euclidean"))
        if isinstance(process, Joint):
            dims = ("category", *data_dims(x.shape[2:]))
            ds = ds.rename({v: f"{v}_{j}" for v in ds.data_vars})
            ds = ds.rename_dims({d: f"x_{j}_{d}" for d in dims if d in ds.dims})
        parts.append(ds)
    ds = xr.merge(parts, combine_attrs="drop") if len(parts) > 1 else parts[0]
    for j, p in enumerate(comps):  # merge drops variable attrs; the state kinds are part of the schema
        ds[f"x_{j}" if isinstance(process, Joint) else "x"].attrs["kind"] = getattr(p, "kind", "euclidean")
    ds.attrs = {**ds.attrs, **_flat(attrs), "nfe": nfe}
    return ds


def _flat(attrs: dict) -> dict:
    from sdegen.trajectory import netcdf_attrs

    return netcdf_attrs(attrs)
