"""Imputation against the exact conditional law of a correlated 8-D Gaussian with 4 known entries, RePaint,
reconstruction guidance, the stored condition, split runs and clear errors."""

import math

import numpy as np
import pytest
import torch

import sdegen
from sdegen import analytic
from sdegen.inpaint import Known, mask_from_name

N = 4000
SDE = sdegen.VPSDE()


def _problem():
    g = torch.Generator().manual_seed(0)
    gauss = analytic.CorrelatedGaussian.random(8, g, mean=torch.linspace(-1, 1, 8, dtype=torch.float64))
    mask = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0]).bool()
    y = gauss.sample(1, generator=g)[0].double()
    return gauss, mask, y, gauss.conditional(mask, y)


GAUSS, MASK, Y, COND = _problem()
KNOWN = Known(Y.float(), MASK)


def _errors(ds):
    """max |z| of the unknown entries' means and max |z| of their covariance entries against the exact conditional."""
    u = (~MASK).numpy()
    x = ds["x"].isel(time=-1).values.astype(np.float64)[:, u]
    m, c = COND.mean[u].numpy(), COND.cov[u][:, u].numpy()
    z_mean = (x.mean(0) - m) / np.sqrt(np.diag(c) / N)
    # normal theory: Var(ĉ_ij) = (c_ii c_jj + c_ij²)/n
    z_cov = (np.cov(x.T) - c) / np.sqrt((np.outer(np.diag(c), np.diag(c)) + c**2) / N)
    return np.abs(z_mean).max(), np.abs(z_cov).max()


@pytest.mark.parametrize(("solver", "steps"), [("dpmpp_2m", 50), ("ancestral", 300), ("euler", 400)])
def test_the_exact_conditional_score_reproduces_the_conditional_law(solver, steps):
    ds = sdegen.sample(SDE, COND.score_fn(SDE), (N, 8), solver=solver, steps=steps, seed=0, condition=KNOWN,
                       impute="given", denoise=True)  # fmt: skip
    z_mean, z_cov = _errors(ds)
    assert z_mean < 4 and z_cov < 4.5, (z_mean, z_cov)  # 4 s.e. (4.5 over the 10 covariance entries)
    known = ds["x"].isel(time=-1).values[:, MASK.numpy()]
    np.testing.assert_allclose(known, np.broadcast_to(Y[MASK].numpy(), known.shape), atol=1e-5)


def test_negative_control_a_shrunk_conditional_fails_the_same_check():
    shrunk = analytic.CorrelatedGaussian(COND.mean, 0.8 * COND.cov)
    ds = sdegen.sample(SDE, shrunk.score_fn(SDE), (N, 8), solver="dpmpp_2m", steps=50, seed=0, condition=KNOWN,
                       impute="given", denoise=True)  # fmt: skip
    assert _errors(ds)[1] > 6


def test_replacement_is_biased_for_correlated_data_and_repaint_reduces_the_bias():
    score = GAUSS.score_fn(SDE)
    plain = sdegen.sample(SDE, score, (N, 8), solver="ancestral", steps=100, seed=0, condition=KNOWN, denoise=True)
    r5 = sdegen.sample(SDE, score, (N, 8), solver="ancestral", steps=100, seed=0, condition=KNOWN, resample=5,
                       denoise=True)  # fmt: skip
    bias_plain, bias_r5 = _errors(plain)[0], _errors(r5)[0]
    assert bias_plain > 20 and bias_r5 < 0.7 * bias_plain  # measured 58 → 25 s.e. (docs/inpainting.md)
    assert r5.attrs["nfe"] == 5 * 100 + 1 and plain.attrs["nfe"] == 101
    # Tweedie's x0_hat of a known entry is y exactly: the denoised known entries are y.
    known = plain["x"].isel(time=-1).values[:, MASK.numpy()]
    np.testing.assert_allclose(known, np.broadcast_to(Y[MASK].numpy(), known.shape), atol=1e-6)
    # without denoise the known entries end within a few sigma(t_min) of y
    raw = sdegen.sample(SDE, score, (500, 8), solver="ancestral", steps=100, seed=0, condition=KNOWN)
    sigma_min = float(SDE.marginal_std(1e-3, torch.zeros(1, 1)))
    assert np.abs(raw["x"].isel(time=-1).values[:, MASK.numpy()] - Y[MASK].numpy()).max() < 6 * sigma_min


def test_reconstruction_guidance_moves_towards_the_conditional_and_counts_vjps():
    score = GAUSS.score_fn(SDE)
    rep = sdegen.sample(SDE, score, (N, 8), solver="dpmpp_2m", steps=50, seed=0, condition=KNOWN, denoise=True)
    gui = sdegen.sample(SDE, score, (N, 8), solver="dpmpp_2m", steps=50, seed=0, condition=KNOWN, impute="guidance",
                        impute_options={"sigma_data": 1.0}, denoise=True)  # fmt: skip
    assert _errors(gui)[0] < 0.5 * _errors(rep)[0]  # still biased (isotropic posterior), but far less
    assert gui.attrs["impute_vjps"] == gui.attrs["nfe"] == 51


def test_resampling_is_refused_for_solvers_with_state():
    for solver in ("dpmpp_2m", "unipc", "ode", "reversible_heun"):
        with pytest.raises(ValueError, match="cannot do without losing its state"):
            sdegen.sample(SDE, GAUSS.score_fn(SDE), (4, 8), solver=solver, steps=4, seed=0, condition=KNOWN, resample=2)


def test_the_condition_is_stored_streamed_and_split_bit_for_bit(tmp_path):
    kw = {
        "solver": "ancestral",
        "steps": 20,
        "seed": 5,
        "condition": KNOWN,
        "resample": 2,
        "test_index": np.arange(6) + 10,
    }
    one = sdegen.sample(SDE, GAUSS.score_fn(SDE), (6, 8), out=tmp_path / "one.nc", **kw)
    back = sdegen.open_trajectory(tmp_path / "one.nc")
    for ds in (one, back):
        assert ds["mask"].dtype == np.uint8 and ds["mask"].dims == ("sample", "dim")
        np.testing.assert_array_equal(ds["mask"].values, np.broadcast_to(MASK.numpy(), (6, 8)).astype(np.uint8))
        np.testing.assert_array_equal(ds["known"].values[:, MASK.numpy()], np.broadcast_to(Y[MASK].float(), (6, 4)))
        assert list(ds["test_index"].values) == list(range(10, 16)) and ds.attrs["impute"] == "replace"
    parts = [sdegen.sample(SDE, GAUSS.score_fn(SDE), (6, 8), split=(r, 2), **kw) for r in range(2)]
    x = np.concatenate([p["x"].values for p in parts], axis=1)
    np.testing.assert_array_equal(x, one["x"].values)
    assert [int(v) for p in parts for v in p["test_index"].values] == list(range(10, 16))


def test_bad_conditions_are_named():
    score = GAUSS.score_fn(SDE)
    with pytest.raises(ValueError, match="hold only 0 and 1"):
        Known(Y, torch.full((8,), 2))
    with pytest.raises(ValueError, match="finite"):
        Known(torch.full((8,), math.nan), MASK)
    with pytest.raises(ValueError, match="does not fit"):
        Known(Y, torch.ones(3).bool())
    with pytest.raises(ValueError, match=r"condition has shape \(8,\); the samples have shape \(4, 6\)"):
        sdegen.sample(SDE, lambda x, t: -x, (4, 6), solver="euler", steps=2, condition=KNOWN)
    with pytest.raises(ValueError, match="outside the data range"):
        sdegen.sample(SDE, score, (4, 8), solver="euler", steps=2, condition=Known(Y + 5, MASK), data_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="unknown impute method 'paint'"):
        sdegen.sample(SDE, score, (4, 8), solver="euler", steps=2, condition=KNOWN, impute="paint")
    with pytest.raises(TypeError, match="Known"):
        sdegen.sample(SDE, score, (4, 8), solver="euler", steps=2, condition=(Y, MASK))
    with pytest.raises(ValueError, match="unknown mask 'middle'"):
        mask_from_name("middle", (1, 28, 28))
    assert mask_from_name("top", (1, 28, 28))[0, :14].all() and not mask_from_name("top", (1, 28, 28))[0, 14:].any()
    assert mask_from_name("center", (1, 28, 28)).sum() == 28 * 28 - 14 * 14
