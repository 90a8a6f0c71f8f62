"""Figures of stored trajectories: sample grids, reverse-process animations, component paths, marginals.

Every function takes a trajectory Dataset (from `sdegen.sample` or `sdegen.open_trajectory`) and returns
a `matplotlib.figure.Figure`, saving it when given a path (`animation` writes a GIF and returns its path):
`sample_grid`, `animation`, `component_paths`, `marginals`; `plot_kind(ds, kind, out)` picks one by name.
Figures are built with the object-oriented API on an Agg canvas, never through pyplot, so they work
headless and leave no global state behind.

Conventions: `time` runs from T down to t_min along the stored path; paths are drawn against t with the
axis inverted so that sampling reads left to right. Analytic overlays take a `sdegen.analytic`
distribution of the data and use the stored `mean_scale` alpha(t) and `sigma` sigma(t): coordinate j of
p_t is the 1-D mixture Σ_k w_k N(alpha·μ_kj, alpha²·s_kj² + sigma²).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sdegen._io import atomic_path
from sdegen.trajectory import IMAGE_DIMS


def _figure(**kwargs) -> Figure:
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out) -> Figure:
    """Write fig to out atomically (`sdegen._io.atomic_path`; the temporary keeps the suffix: the format)."""
    if out is not None:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return fig


def _data_range(ds: xr.Dataset):
    """(low, high) from a `data_range` attribute such as "[0.0, 1.0]", else None."""
    try:
        lo, hi = json.loads(str(ds.attrs.get("data_range", "")))
        return float(lo), float(hi)
    except (ValueError, TypeError):
        return None


def _is_image(ds: xr.Dataset) -> bool:
    return tuple(ds["x"].dims[2:]) == IMAGE_DIMS


def _mosaic(images: np.ndarray, ncols: int | None = None) -> np.ndarray:
    """Tile (n, C, H, W) images into one (rows·H, cols·W[, C]) array with 1-pixel gaps (NaN)."""
    n, c, h, w = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    out = np.full((nrows * (h + 1) - 1, ncols * (w + 1) - 1, c), np.nan, dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, ncols)
        out[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = images[i].transpose(1, 2, 0)
    return out[..., 0] if c == 1 else out


def _show_images(ax, images: np.ndarray, ncols, vmin: float, vmax: float):
    tile = _mosaic(images, ncols)
    if tile.ndim == 3:  # RGB: imshow needs [0, 1]
        tile = np.clip((np.nan_to_num(tile, nan=vmax) - vmin) / max(vmax - vmin, 1e-12), 0, 1)
        art = ax.imshow(tile)
    else:
        art = ax.imshow(tile, cmap="gray", vmin=vmin, vmax=vmax)
    ax.set_axis_off()
    return art


def _limits(values: np.ndarray, clip) -> tuple[float, float]:
    if clip is not None:
        return float(clip[0]), float(clip[1])
    finite = values[np.isfinite(values)]
    return float(finite.min()), float(finite.max())


def sample_grid(
    ds: xr.Dataset, out=None, *, time: int = -1, variable: str = "x", max_samples: int = 64, ncols=None, clip=None
) -> Figure:
    """Samples at one saved time: an image grid for image data, a scatter plot for 2-D vectors.

    Args:
        ds: trajectory.
        out: if given, the figure is also saved there.
        time: index along `time` (default: the final state).
        variable: "x" or "x0_hat".
        max_samples: at most this many samples are shown.
        ncols: columns of the image grid (default: square).
        clip: (low, high) colour limits (default: the `data_range` attribute if it holds two numbers, else
            the data's min and max).
    """
    values = ds[variable].isel(time=time, sample=slice(0, max_samples)).values
    clip = clip if clip is not None else _data_range(ds)
    fig = _figure(figsize=(6, 6))
    ax = fig.add_subplot()
    if _is_image(ds):
        _show_images(ax, values, ncols, *_limits(values, clip))
    elif values.ndim == 2 and values.shape[1] == 2:
        ax.scatter(values[:, 0], values[:, 1], s=4, alpha=0.6)
        ax.set_aspect("equal")
        ax.set_xlabel("x[0]")
        ax.set_ylabel("x[1]")
    else:
        raise ValueError(f"sample_grid shows images (channel, height, width) or 2-D points, not {ds[variable].dims}")
    ax.set_title(f"{variable} at t = {float(ds['time'][time]):.4g} ({ds.attrs.get('solver', '?')})")
    return _save(fig, out)


def animation(ds: xr.Dataset, out, *, max_samples: int = 16, fps: int = 6, ncols=None, clip=None) -> Path:
    """Write a GIF of the reverse process: x_t and (if stored) x0_hat side by side, one frame per saved time.

    Returns:
        The path written.
    """
    panels = ["x"] + (["x0_hat"] if "x0_hat" in ds else [])
    data = {v: ds[v].isel(sample=slice(0, max_samples)).values for v in panels}
    image = _is_image(ds)
    if not image and data["x"].shape[2:] != (2,):
        raise ValueError(f"animate shows images or 2-D points, got dims {ds['x'].dims}")
    fig = _figure(figsize=(4 * len(panels), 4.4))
    axes = [fig.add_subplot(1, len(panels), i + 1) for i in range(len(panels))]
    lims = _limits(data["x"][-1], clip if clip is not None else _data_range(ds))
    arts = []
    for ax, v in zip(axes, panels, strict=True):
        if image:
            arts.append(_show_images(ax, data[v][0], ncols, *lims))
        else:
            arts.append(ax.scatter(data[v][0][:, 0], data[v][0][:, 1], s=4))
            span = max(np.abs(data["x"]).max(), 1e-6)
            ax.set_xlim(-span, span)
            ax.set_ylim(-span, span)
            ax.set_aspect("equal")
    title = fig.suptitle("")

    def update(frame: int):
        for art, v in zip(arts, panels, strict=True):
            if image:
                art.set_data(_mosaic(data[v][frame], ncols))
            else:
                art.set_offsets(data[v][frame])
        right = ", right: E[x0 | x_t])" if len(panels) > 1 else ")"
        title.set_text(f"t = {float(ds['time'][frame]):.4g}   (left: x_t{right}")
        return [*arts, title]

    anim = FuncAnimation(fig, update, frames=ds.sizes["time"], blit=False)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        anim.save(tmp, writer=PillowWriter(fps=fps))
    return path


def _component_moments(dist, j: int, alpha: np.ndarray, sigma: np.ndarray):
    """Per-component weights (K,), means and stds (time, K) of coordinate j under p_t."""
    mu = dist.means.reshape(dist.num_components, -1)[:, j].numpy()
    s = dist.stds.reshape(dist.num_components, -1)[:, j].numpy()
    means = alpha[:, None] * mu[None]
    stds = np.sqrt(alpha[:, None] ** 2 * s[None] ** 2 + sigma[:, None] ** 2)
    return dist.weights.numpy(), means, stds


def component_paths(
    ds: xr.Dataset, out=None, *, components=(0,), samples=range(5), dist=None, variable: str = "x"
) -> Figure:
    """Component paths x_i(t) against t with the ±sigma(t) envelope around alpha(t)·x_i(t_min).

    Given the endpoint, the forward process has x_t | x0 ~ N(alpha(t)·x0, sigma(t)²): the shaded band is where
    a path ending at x0 is expected to lie. With `dist`, the exact marginal mean ± std of p_t is drawn too.

    Args:
        out: if given, the figure is also saved there.
        components: flat indices of data coordinates (pixels for images), one panel each; default: the
            first coordinate (the centre pixel for images).
        samples: which samples to draw (indices beyond the batch are skipped).
        dist: optional `sdegen.analytic` distribution of the data.
    """
    t = ds["time"].values
    alpha, sigma = ds["mean_scale"].values, ds["sigma"].values
    flat = ds[variable].values.reshape(ds.sizes["time"], ds.sizes["sample"], -1)
    if _is_image(ds) and tuple(components) == (0,):
        c, h, w = ds["x"].shape[2:]
        components = ((h // 2) * w + w // 2,)  # the centre pixel of channel 0 (a corner pixel is constant)
    components = list(components)
    samples = [i for i in samples if i < ds.sizes["sample"]]  # the default asks for 5; a run may have fewer
    fig = _figure(figsize=(6, 2.6 * len(components)))
    for row, j in enumerate(components):
        ax = fig.add_subplot(len(components), 1, row + 1)
        for i in samples:
            line = ax.plot(t, flat[:, i, j], lw=1)[0]
            centre = alpha * flat[-1, i, j]
            ax.fill_between(t, centre - sigma, centre + sigma, color=line.get_color(), alpha=0.12, lw=0)
        if dist is not None:
            w, m, s = _component_moments(dist, j, alpha, sigma)
            mean = m @ w
            std = np.sqrt((s**2 + m**2) @ w - mean**2)
            ax.plot(t, mean, "k--", lw=1, label="exact mean ± std of p_t")
            ax.plot(t, mean - std, "k:", lw=1)
            ax.plot(t, mean + std, "k:", lw=1)
            ax.legend(loc="upper right", fontsize=8)
        ax.set_xlim(t.max(), t.min())
        ax.set_ylabel(f"x[{j}]")
    fig.axes[-1].set_xlabel("t (sampling runs left to right)")
    return _save(fig, out)


def marginals(ds: xr.Dataset, out=None, *, times=None, component: int = 0, dist=None, bins: int = 50) -> Figure:
    """Histograms of one coordinate at chosen saved times, against the analytic p_t density if `dist` given.

    Args:
        out: if given, the figure is also saved there.
        times: SDE times (the nearest saved ones are used); default: four spread over the path.
        component: flat index of the data coordinate.
        dist: optional `sdegen.analytic` distribution of the data.

    Only the plotted saved states are read, so a lazy (dask-backed) trajectory larger than memory plots with
    memory for those states alone.
    """
    if times is None:
        idx = sorted({round(i) for i in np.linspace(0, ds.sizes["time"] - 1, 4)})
    else:
        idx = [int(np.abs(ds["time"].values - float(t)).argmin()) for t in times]
    picked = np.asarray(ds["x"].isel(time=idx).values).reshape(len(idx), ds.sizes["sample"], -1)[:, :, component]
    flat = dict(zip(idx, picked, strict=True))
    fig = _figure(figsize=(3.2 * len(idx), 3))
    for col, k in enumerate(idx):
        ax = fig.add_subplot(1, len(idx), col + 1)
        ax.hist(flat[k], bins=bins, density=True, alpha=0.6)
        if dist is not None:
            alpha, sigma = ds["mean_scale"].values[[k]], ds["sigma"].values[[k]]
            w, m, s = _component_moments(dist, component, alpha, sigma)
            grid = np.linspace(flat[k].min() - 1, flat[k].max() + 1, 400)
            z = (grid[:, None] - m[0][None]) / s[0][None]
            density = (np.exp(-0.5 * z**2) / (s[0][None] * math.sqrt(2 * math.pi))) @ w
            ax.plot(grid, density, "k", lw=1.2, label="exact p_t")
            ax.legend(fontsize=8)
        ax.set_title(f"t = {float(ds['time'][k]):.3g}")
        ax.set_xlabel(f"x[{component}]")
    return _save(fig, out)


KINDS = ("grid", "animation", "paths", "marginals")


def plot_kind(ds: xr.Dataset, kind: str, out):
    """Write the figure `kind` ("grid", "animation", "paths" or "marginals") of ds to out (the CLI's verb)."""
    if kind == "grid":
        return sample_grid(ds, out)
    if kind == "animation":
        return animation(ds, out)
    if kind == "paths":
        return component_paths(ds, out)
    if kind == "marginals":
        return marginals(ds, out)
    raise ValueError(f"unknown plot kind {kind!r}; known: {list(KINDS)}")
