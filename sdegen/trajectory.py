"""Trajectory datasets: the schema, netCDF save/open (atomic, checksummed), streaming, marginal analysis.

A trajectory is an `xarray.Dataset` (DESIGN.md, "Trajectory dataset schema"):

* dims `time`, `sample`, then the data dims: `dim` for (B, D) vectors, `channel, height, width` for
  (B, C, H, W) images, `dim_0, …, dim_{k-1}` for any other data rank k;
* coords `time` (float64 SDE time, T down to t_min for samplers), `sample` (int64), `label` (sample) when
  conditional;
* variables `x` (time, sample, …) float32, `sigma` and `mean_scale` (time) float64 (x_t | x0 ~
  N(mean_scale·x0, sigma²)), optional `x0_hat` (time, sample, …) float32 and `logp` (sample);
* flat netCDF-safe attrs: `sdegen_version, sde, sde_<param>, solver, steps, nfe, seed, t_min, score_source,
  data_range, created` (+ solver options). Flags are stored as 0/1, nested values as JSON strings.

Files are netCDF4 with a fletcher32 checksum on every variable, so flipped bytes are detected on read.
`save_trajectory` writes a temporary file in the target directory, fsyncs it and renames it into place.
`TrajectoryWriter` streams records into an unlimited `time` dimension and syncs after each one, so a run
that dies leaves a readable file with the records written so far (attr `complete` = 0).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

IMAGE_DIMS = ("channel", "height", "width")
REQUIRED_ATTRS = ("sdegen_version", "sde", "solver", "steps", "nfe", "seed", "t_min")


class TrajectoryError(ValueError):
    """A file that is not a readable sdegen trajectory (corrupt, truncated or foreign)."""


def data_dims(data_shape: tuple[int, ...]) -> tuple[str, ...]:
    """Dimension names for one sample of shape data_shape (see the module docstring)."""
    if len(data_shape) == 1:
        return ("dim",)
    if len(data_shape) == 3:
        return IMAGE_DIMS
    return tuple(f"dim_{i}" for i in range(len(data_shape)))


def netcdf_attrs(attrs: dict) -> dict:
    """Flatten attribute values to what netCDF stores: bool → 0/1, None → "none", containers → JSON."""
    out = {}
    for key, value in attrs.items():
        if isinstance(value, bool | np.bool_):
            out[key] = int(value)
        elif value is None:
            out[key] = "none"
        elif isinstance(value, np.generic):
            out[key] = value.item()
        elif isinstance(value, int | float | str):
            out[key] = value
        elif isinstance(value, dict | list | tuple):
            out[key] = json.dumps(value, default=str, sort_keys=True)
        else:
            out[key] = str(value)
    return out


def make_trajectory(
    x, times, sigma=None, mean_scale=None, *, x0_hat=None, labels=None, attrs=None, kind=None
) -> xr.Dataset:
    """Assemble a schema-conforming Dataset.

    Args:
        x: (time, sample, *data_shape) array; integer arrays (categories) keep an integer dtype, everything
            else is stored as float32.
        times: (time,) array.
        sigma, mean_scale: (time,) arrays for Gaussian processes (x_t | x0 ~ N(mean_scale·x0, sigma²)),
            both None for the other processes (then `kind` must be given).
        x0_hat: optional array shaped like x, or with one trailing dim more (`category`: logits over the
            classes of a categorical state).
        labels: optional (sample,) integer labels.
        attrs: dataset attributes (flattened with `netcdf_attrs`).
        kind: the state kind stored in `x.attrs["kind"]`: "euclidean", "angle", "quaternion" or "category".
    """
    x = np.asarray(x)
    x = x.astype(np.int64) if x.dtype.kind in "iub" else x.astype(np.float32)
    dims = ("time", "sample", *data_dims(x.shape[2:]))
    coords = {"time": np.asarray(times, dtype=np.float64), "sample": np.arange(x.shape[1], dtype=np.int64)}
    if labels is not None:
        coords["label"] = ("sample", np.asarray(labels, dtype=np.int64))
    if (sigma is None) != (mean_scale is None):
        raise ValueError("sigma and mean_scale are given together (Gaussian processes) or not at all")
    if sigma is None and kind is None:
        raise ValueError("a trajectory without sigma/mean_scale must state its kind (kind=...)")
    data = {"x": (dims, x)}
    if sigma is not None:
        data["sigma"] = ("time", np.asarray(sigma, dtype=np.float64))
        data["mean_scale"] = ("time", np.asarray(mean_scale, dtype=np.float64))
    if x0_hat is not None:
        x0_hat = np.asarray(x0_hat, dtype=np.float32)
        extra = x0_hat.shape[x.ndim :]
        if x0_hat.shape[: x.ndim] != x.shape or len(extra) > 1:
            raise ValueError(f"x0_hat must have shape {x.shape} (+ one class dim), got {x0_hat.shape}")
        data["x0_hat"] = ((*dims, "category") if extra else dims, x0_hat)
    ds = xr.Dataset(data, coords=coords, attrs=netcdf_attrs(attrs or {}))
    ds["time"].attrs["long_name"] = "SDE time t"
    if kind is not None:
        ds["x"].attrs["kind"] = str(kind)
    if sigma is not None:
        ds["sigma"].attrs["long_name"] = "marginal std sigma(t) of x_t | x0"
        ds["mean_scale"].attrs["long_name"] = "mean scale alpha(t): E[x_t | x0] = alpha(t) x0"
    return ds


def check_trajectory(ds: xr.Dataset, source: str = "dataset") -> None:
    """Raise TrajectoryError naming `source` unless ds follows the trajectory schema.

    The state is `x` (or `x_0`, `x_1`, … for joint processes). `sigma` and `mean_scale` are required unless
    every state variable states a non-Gaussian `kind` in its attrs.
    """
    state = [v for v in ds.data_vars if v == "x" or (v.startswith("x_") and v[2:].isdigit())]
    problems = [] if state else ["variable 'x'"]
    gaussian = [v for v in ("sigma", "mean_scale") if v in ds.variables]
    if len(gaussian) == 1 or not (gaussian or (state and all("kind" in ds[v].attrs for v in state))):
        problems += [f"variable {v!r}" for v in ("sigma", "mean_scale") if v not in ds.variables]
    for v in state:
        if tuple(ds[v].dims[:2]) != ("time", "sample"):
            problems.append(f"{v} dims (time, sample, ...) (found {ds[v].dims})")
    problems += [f"attribute {a!r}" for a in REQUIRED_ATTRS if a not in ds.attrs]
    if problems:
        raise TrajectoryError(f"{source} is not an sdegen trajectory: missing {', '.join(problems)}")


def _encoding(ds: xr.Dataset, compression: bool) -> dict:
    enc = {}
    for name, var in ds.variables.items():
        e = {"fletcher32": True, "zlib": bool(compression)}
        if name in ds.coords or var.dtype.kind in "iu":
            e["_FillValue"] = None  # coordinates and integers never hold missing values
        enc[name] = e
    return enc


def save_netcdf(ds: xr.Dataset, path, compression: bool = False) -> Path:
    """Write any Dataset to netCDF4 atomically (temporary file in the same directory, fsync, rename).

    Every variable gets a fletcher32 checksum; coordinates and integer variables get no `_FillValue`; attrs
    are flattened with `netcdf_attrs`.

    Args:
        ds: the Dataset.
        path: target file; parent directories are created.
        compression: zlib-compress the variables (noise-like states barely shrink and writes get much
            slower, hence off by default).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.copy(deep=False)
    ds.attrs = netcdf_attrs(ds.attrs)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp")
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=_encoding(ds, compression))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    return path


def save_trajectory(ds: xr.Dataset, path, compression: bool = False) -> Path:
    """Validate a trajectory and write it with `save_netcdf` (atomic, checksummed); returns the path."""
    check_trajectory(ds)
    return save_netcdf(ds, path, compression)


def open_trajectory(path) -> xr.Dataset:
    """Load a trajectory file fully into memory (the file is closed on return) and validate it.

    Raises:
        FileNotFoundError: no such file.
        TrajectoryError: the file is corrupt (unreadable, checksum mismatch) or not an sdegen trajectory.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trajectory file at {path}")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds.load()
    except (OSError, RuntimeError, ValueError) as err:
        raise TrajectoryError(f"{path} is corrupt or not a netCDF file (read failed: {err})") from err
    check_trajectory(ds, str(path))
    return ds


class TrajectoryWriter:
    """Stream trajectory records into a netCDF file with an unlimited `time` dimension.

    Args:
        path: the file to create (overwritten).
        shape: (batch, *data_shape).
        attrs: dataset attributes; `complete` = 0 is added and set to 1 by `close(complete=True)`.
        labels: optional (batch,) labels.
        x0_hat: whether records carry x0_hat.
        compression: zlib-compress x and x0_hat.
    """

    def __init__(self, path, shape, *, attrs, labels=None, x0_hat: bool = False, compression: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        batch, data_shape = shape[0], tuple(shape[1:])
        dims = data_dims(data_shape)
        with netCDF4.Dataset(self.path, "w", format="NETCDF4") as nc:
            nc.createDimension("time", None)
            nc.createDimension("sample", batch)
            for name, size in zip(dims, data_shape, strict=True):
                nc.createDimension(name, size)
            ck = {"fletcher32": True, "fill_value": False}
            nc.createVariable("time", "f8", ("time",), **ck).long_name = "SDE time t"
            nc.createVariable("sample", "i8", ("sample",), **ck)[:] = np.arange(batch)
            if labels is not None:
                nc.createVariable("label", "i8", ("sample",), **ck)[:] = np.asarray(labels)
            big = {"fletcher32": True, "zlib": bool(compression), "chunksizes": (1, batch, *data_shape)}
            for name in ("x", "x0_hat") if x0_hat else ("x",):
                nc.createVariable(name, "f4", ("time", "sample", *dims), **big)
            nc.createVariable("sigma", "f8", ("time",), fletcher32=True)
            nc.createVariable("mean_scale", "f8", ("time",), fletcher32=True)
            if labels is not None:
                nc["x"].coordinates = "label"
            nc.setncatts(netcdf_attrs({**attrs, "complete": 0}))
        self._nc = netCDF4.Dataset(self.path, "a")

    def append(self, t: float, x, sigma: float, mean_scale: float, x0_hat=None, attrs: dict | None = None):
        """Append one record (x: (batch, *data_shape)) and sync it to disk."""
        n = len(self._nc.dimensions["time"])
        self._nc["time"][n] = t
        self._nc["x"][n] = x
        self._nc["sigma"][n] = sigma
        self._nc["mean_scale"][n] = mean_scale
        if x0_hat is not None:
            self._nc["x0_hat"][n] = x0_hat
        if attrs:
            self._nc.setncatts(netcdf_attrs(attrs))
        self._nc.sync()

    def close(self, attrs: dict | None = None, complete: bool = False) -> None:
        """Write final attributes and close (idempotent)."""
        if self._nc is None:
            return
        try:
            self._nc.setncatts(netcdf_attrs({**(attrs or {}), "complete": int(complete)}))
        finally:
            self._nc.close()
            self._nc = None


def marginal_moments(ds: xr.Dataset, variable: str = "x") -> xr.Dataset:
    """Empirical per-coordinate mean and std (ddof=1) over samples at each saved time, with sigma, mean_scale."""
    v = ds[variable]
    return xr.Dataset(
        {"mean": v.mean("sample"), "std": v.std("sample", ddof=1), "sigma": ds["sigma"], "mean_scale": ds["mean_scale"]}
    )


def compare_marginals(ds: xr.Dataset, dist) -> xr.Dataset:
    """Empirical marginal moments of x at each saved time against the exact p_t of `dist`.

    For x0 ~ dist, x_t = alpha·x0 + sigma·ε has per-coordinate mean alpha·E[x0] and std
    √(alpha²·Var[x0] + sigma²), computed here from the stored `mean_scale` and `sigma`. The z-scores use the
    normal-theory standard errors std/√n (mean) and std/√(2(n − 1)) (std). A record replaced by `denoise`
    (attr `denoise` = 1, last time) holds E[x0 | x_t], not x_t, and does not follow p_t.

    Args:
        ds: a trajectory.
        dist: a `sdegen.analytic` distribution with `mean()` and `variance()` of the data shape.

    Returns:
        Dataset with `mean`, `std`, `exact_mean`, `exact_std`, `z_mean`, `z_std` over (time, *data dims).
    """
    mom = marginal_moments(ds)
    dims = ds["x"].dims[2:]
    mu0 = xr.DataArray(dist.mean().numpy(), dims=dims)
    var0 = xr.DataArray(dist.variance().numpy(), dims=dims)
    n = ds.sizes["sample"]
    exact_mean = ds["mean_scale"] * mu0
    exact_std = np.sqrt(ds["mean_scale"] ** 2 * var0 + ds["sigma"] ** 2)
    return xr.Dataset(
        {
            "mean": mom["mean"],
            "std": mom["std"],
            "exact_mean": exact_mean,
            "exact_std": exact_std,
            "z_mean": (mom["mean"] - exact_mean) / (exact_std / math.sqrt(n)),
            "z_std": (mom["std"] - exact_std) / (exact_std / math.sqrt(2 * (n - 1))),
        }
    )
