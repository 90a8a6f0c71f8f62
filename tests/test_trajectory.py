"""Trajectory files: exact round trip, atomic writes, checksums, clear errors, streaming, marginal analysis."""

from __future__ import annotations

import math
import os

import netCDF4
import numpy as np
import pytest
import torch
import xarray as xr

import sdegen
from sdegen import analytic, trajectory
from sdegen.trajectory import TrajectoryError, TrajectoryWriter, open_trajectory, save_netcdf, save_trajectory

MIX = analytic.gaussian_mixture_2d()


def _traj(shape=(5, 2), **kw):
    dist = MIX if shape[1:] == (2,) else analytic.Gaussian(torch.zeros(shape[1:]), torch.ones(shape[1:]))
    sde = sdegen.VPSDE()
    return sdegen.sample(sde, dist.score_fn(sde), shape, solver="ddim", steps=6, seed=0, save_every=2, **kw)


@pytest.mark.parametrize("compression", [False, True])
@pytest.mark.parametrize("shape", [(5, 2), (3, 1, 4, 4)])
def test_round_trip_is_exact(tmp_path, shape, compression):
    ds = _traj(shape, save_x0_hat=True, labels=list(range(shape[0])), data_range=(-1, 1))
    path = save_trajectory(ds, tmp_path / "sub" / "a.nc", compression=compression)
    back = open_trajectory(path)
    xr.testing.assert_identical(back, ds)
    assert back["x"].dtype == np.float32 and back["time"].dtype == np.float64
    assert [p.name for p in path.parent.iterdir()] == ["a.nc"]  # no temporary file left behind


def test_file_layout_checksums_and_fill_values(tmp_path):
    path = save_trajectory(_traj(labels=[0, 1, 2, 3, 4]), tmp_path / "a.nc")
    with netCDF4.Dataset(path) as nc:
        for name, var in nc.variables.items():
            assert var.filters()["fletcher32"], name
        for name in ("time", "sample", "label"):
            assert "_FillValue" not in nc[name].ncattrs(), name
        assert nc.getncattr("denoise") == 0  # flags are 0/1, never bool


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = save_trajectory(_traj(), tmp_path / "a.nc")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", boom)
    with pytest.raises(OSError, match="disk full"):
        save_trajectory(_traj(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.nc"]


def _flip_byte_in_x(path, ds):
    """Flip one byte inside the stored x values (located by searching for their raw bytes)."""
    raw = path.read_bytes()
    needle = ds["x"].values[1].astype("<f4").tobytes()[:16]
    at = raw.find(needle)
    assert at > 0, "x data not found in the file"
    flipped = bytearray(raw)
    flipped[at + 5] ^= 0xFF
    path.write_bytes(bytes(flipped))


def test_flipped_data_byte_is_detected(tmp_path):
    ds = _traj()
    path = save_trajectory(ds, tmp_path / "a.nc")
    _flip_byte_in_x(path, ds)
    with pytest.raises(TrajectoryError, match=r"a\.nc is corrupt"):
        open_trajectory(path)


def test_without_checksums_the_same_flip_goes_unnoticed(tmp_path):
    # Negative control: the fletcher32 checksum is what catches the flipped byte above.
    ds = _traj()
    path = tmp_path / "plain.nc"
    ds.to_netcdf(path, engine="netcdf4")
    _flip_byte_in_x(path, ds)
    back = open_trajectory(path)
    assert not np.array_equal(back["x"].values, ds["x"].values)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_truncated_or_garbage_file_is_a_clear_error(tmp_path, damage):
    path = save_trajectory(_traj(), tmp_path / "a.nc")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else os.urandom(len(data)))
    with pytest.raises(TrajectoryError, match=str(path.name)):
        open_trajectory(path)


def test_foreign_netcdf_is_refused_with_what_is_missing(tmp_path):
    path = tmp_path / "foreign.nc"
    xr.Dataset({"temperature": ("x", np.arange(3.0))}).to_netcdf(path)
    with pytest.raises(TrajectoryError, match=r"foreign\.nc is not an sdegen trajectory: missing variable 'x'.*'nfe'"):
        open_trajectory(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no trajectory file"):
        open_trajectory("/nonexistent/run.nc")


def test_open_loads_into_memory_and_closes(tmp_path):
    path = save_trajectory(_traj(), tmp_path / "a.nc")
    ds = open_trajectory(path)
    os.replace(path, tmp_path / "moved.nc")  # the file is no longer needed...
    assert np.isfinite(ds["x"].values).all()  # ...because the data are in memory
    with netCDF4.Dataset(tmp_path / "moved.nc", "a") as nc:  # and no handle keeps it open for writing
        nc.setncattr("touched", 1)


def test_save_netcdf_handles_any_dataset(tmp_path):
    ds = xr.Dataset({"bpd": ("image", np.array([1.5, 2.5]))}, attrs={"ok": True, "cfg": {"a": 1}, "none": None})
    back = xr.open_dataset(save_netcdf(ds, tmp_path / "b.nc")).load()
    assert back.attrs == {"ok": 1, "cfg": '{"a": 1}', "none": "none"}
    np.testing.assert_array_equal(back["bpd"].values, ds["bpd"].values)


def test_netcdf_attrs():
    out = trajectory.netcdf_attrs({"a": True, "b": None, "c": (1, 2), "d": np.float32(0.5), "e": "s", "f": 3})
    assert out == {"a": 1, "b": "none", "c": "[1, 2]", "d": 0.5, "e": "s", "f": 3}


def test_data_dims():
    assert trajectory.data_dims((7,)) == ("dim",)
    assert trajectory.data_dims((1, 28, 28)) == ("channel", "height", "width")
    assert trajectory.data_dims((3, 5)) == ("dim_0", "dim_1")


def test_writer_records_are_readable_before_close(tmp_path):
    path = tmp_path / "s.nc"
    w = TrajectoryWriter(path, (3, 2), attrs={**_traj().attrs}, labels=[1, 2, 3])
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    w.append(1.0, x, 2.0, 0.5, attrs={"nfe": 1})
    w.append(0.5, x + 1, 1.0, 0.7, attrs={"nfe": 2})
    assert not path.exists() and w.partial == tmp_path / "s.nc.partial"  # the target appears when complete
    with pytest.warns(trajectory.IncompleteTrajectoryWarning, match="2 saved state"):
        mid = open_trajectory(w.partial)  # still open for writing in this process
    assert mid.sizes["time"] == 2 and mid.attrs["complete"] == 0 and mid.attrs["nfe"] == 2
    np.testing.assert_array_equal(mid["x"].values[1], x + 1)
    assert w.close({"nfe": 2}, complete=True) == path
    w.close()  # idempotent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.nc"]  # no partial, no lock left
    done = open_trajectory(path)
    assert done.attrs["complete"] == 1
    np.testing.assert_array_equal(done["label"].values, [1, 2, 3])
    np.testing.assert_array_equal(done["mean_scale"].values, [0.5, 0.7])


def test_marginal_moments_and_compare_marginals_are_exact():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 50, 2)).astype(np.float32)
    sigma, alpha = np.array([1.0, 0.5, 0.1]), np.array([0.2, 0.6, 0.99])
    ds = trajectory.make_trajectory(x, [1.0, 0.5, 0.1], sigma, alpha, attrs={})
    mom = trajectory.marginal_moments(ds)
    np.testing.assert_allclose(mom["mean"].values, x.mean(1), rtol=1e-6)
    np.testing.assert_allclose(mom["std"].values, x.std(1, ddof=1), rtol=1e-5)
    cmp = trajectory.compare_marginals(ds, MIX)
    var0 = MIX.variance().numpy()
    exact_std = np.sqrt(alpha[:, None] ** 2 * var0[None] + sigma[:, None] ** 2)
    np.testing.assert_allclose(cmp["exact_std"].values, exact_std, rtol=1e-12)
    np.testing.assert_allclose(cmp["exact_mean"].values, alpha[:, None] * MIX.mean().numpy()[None], atol=1e-12)
    z = (x.std(1, ddof=1) - exact_std) / (exact_std / math.sqrt(2 * 49))
    np.testing.assert_allclose(cmp["z_std"].values, z, rtol=1e-4)
