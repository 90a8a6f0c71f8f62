"""Figures from stored trajectories: the right artists, the right numbers, files written headless."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.image import AxesImage
from PIL import Image

import sdegen
from sdegen import analytic, plots

VP = sdegen.VPSDE()
MIX = analytic.gaussian_mixture_2d()
IMG = analytic.Gaussian(torch.full((1, 6, 5), 0.5), torch.full((1, 6, 5), 0.2))


def _points(**kw):
    return sdegen.sample(VP, MIX.score_fn(VP), (40, 2), solver="ddim", steps=8, seed=0, save_every=2, **kw)


def _images(**kw):
    return sdegen.sample(VP, IMG.score_fn(VP), (6, 1, 6, 5), solver="ddim", steps=6, seed=0, save_every=2,
                         data_range=(0.0, 1.0), **kw)  # fmt: skip


def test_figures_carry_their_own_agg_canvas():
    # No pyplot: each figure gets an Agg canvas, whatever backend the session uses.
    fig = plots.sample_grid(_points())
    assert isinstance(fig.canvas, FigureCanvasAgg)
    assert "pyplot" not in plots.__dict__


def test_sample_grid_images_tiles_the_final_state(tmp_path):
    ds = _images()
    fig = plots.sample_grid(ds, tmp_path / "grid.png", ncols=3)
    (image,) = [a for a in fig.axes[0].get_children() if isinstance(a, AxesImage)]
    tile = np.asarray(image.get_array())
    assert tile.shape == (2 * 7 - 1, 3 * 6 - 1)  # 2 rows × 3 columns of 6×5 images with 1-pixel gaps
    np.testing.assert_allclose(tile[:6, :5], ds.x.values[-1, 0, 0])
    np.testing.assert_allclose(tile[7:13, 6:11], ds.x.values[-1, 4, 0])
    assert image.get_clim() == (0.0, 1.0)  # from the data_range attribute
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_grid_points_and_refusal():
    ds = _points()
    fig = plots.sample_grid(ds)
    (scatter,) = [a for a in fig.axes[0].get_children() if isinstance(a, PathCollection)]
    np.testing.assert_array_equal(scatter.get_offsets(), ds.x.values[-1])
    one_d = sdegen.sample(VP, lambda x, t: -x, (4, 3), solver="ddim", steps=2, seed=0)
    with pytest.raises(ValueError, match="sample_grid shows images"):
        plots.sample_grid(one_d)


@pytest.mark.parametrize("make", [_images, _points], ids=["images", "points"])
def test_animation_writes_one_frame_per_saved_time(tmp_path, make):
    ds = make(save_x0_hat=True)
    with_x0 = plots.animation(ds, tmp_path / "a.gif")
    without = plots.animation(make(), tmp_path / "b.gif")
    with Image.open(with_x0) as a, Image.open(without) as b:
        assert a.n_frames == b.n_frames == ds.sizes["time"]
        assert a.size[0] > 1.5 * b.size[0]  # x_t and x0_hat side by side


def test_component_paths_envelope_is_alpha_x_end_plus_minus_sigma():
    ds = _points()
    fig = plots.component_paths(ds, components=(1,), samples=[0, 3], dist=MIX)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 2 + 3  # two paths, exact mean and mean ± std
    np.testing.assert_array_equal(lines[1].get_ydata(), ds.x.values[:, 3, 1])
    band = [c for c in ax.collections if isinstance(c, PolyCollection)][1]  # the band of sample 3
    verts = band.get_paths()[0].vertices
    alpha, sigma = ds.mean_scale.values, ds.sigma.values
    centre = alpha * ds.x.values[-1, 3, 1]
    for k, t in enumerate(ds.time.values):
        ys = verts[np.isclose(verts[:, 0], t), 1]
        np.testing.assert_allclose([ys.min(), ys.max()], [centre[k] - sigma[k], centre[k] + sigma[k]], rtol=1e-6)
    # exact marginal std of coordinate 1 of p_t: √(alpha²·Var[x0] + sigma²)
    std = np.sqrt(alpha**2 * MIX.variance().numpy()[1] + sigma**2)
    np.testing.assert_allclose(lines[4].get_ydata() - lines[2].get_ydata(), std, rtol=1e-6)


def test_component_paths_default_pixel_is_the_centre_and_small_batches_work():
    fig = plots.component_paths(_images())  # 6 samples
    assert fig.axes[0].get_ylabel() == f"x[{3 * 5 + 2}]"
    small = sdegen.sample(VP, MIX.score_fn(VP), (3, 2), solver="ddim", steps=4, seed=0)
    assert len(plots.component_paths(small).axes[0].get_lines()) == 3


def test_marginals_overlay_is_the_exact_density():
    ds = _points()
    fig = plots.marginals(ds, times=[1.0, 1e-3], component=0, dist=MIX)
    assert len(fig.axes) == 2
    line = fig.axes[1].get_lines()[0]
    grid, density = line.get_xdata(), line.get_ydata()
    a, s = float(ds.mean_scale[-1]), float(ds.sigma[-1])
    mu = MIX.means[:, 0].numpy() * a
    sd = np.sqrt(a**2 * MIX.stds[:, 0].numpy() ** 2 + s**2)
    expect = (np.exp(-0.5 * ((grid[:, None] - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))).mean(1)
    np.testing.assert_allclose(density, expect, rtol=1e-10)
    assert fig.axes[1].get_title() == "t = 0.001"


@pytest.mark.parametrize(
    "kind, name", [("grid", "g.png"), ("animation", "a.gif"), ("paths", "p.png"), ("marginals", "m.png")]
)
def test_plot_kind_writes_each_figure(tmp_path, kind, name):
    plots.plot_kind(_points(), kind, tmp_path / name)
    assert (tmp_path / name).stat().st_size > 0


def test_plot_kind_unknown():
    with pytest.raises(ValueError, match="unknown plot kind 'hist'"):
        plots.plot_kind(_points(), "hist", "x.png")
