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
`save_trajectory` writes a temporary file in the target directory, fsyncs it and renames it into place
(`sdegen._io.atomic_path`). `TrajectoryWriter` streams records into `<path>.partial` (an unlimited `time`
dimension, synced after each record) under the lock `<path>.lock`, and renames it onto `<path>` when the run
completes: a run that fails or is killed leaves `<path>` as it was and `<path>.partial` readable with the
records written so far (attr `complete` = 0); a second writer of the same path is refused.
"""

from __future__ import annotations

import glob
import json
import math
import os
import warnings
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

from sdegen._io import PartialFile, atomic_path, explain_write_error, lock_owner, partial_path

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


# Per-sample variables that are coordinates along `sample` (the others are data variables, e.g. `mask`, `known`).
SAMPLE_COORDS = ("test_index", "test_label")


def _per_sample_dims(name: str, a: np.ndarray, data_shape) -> tuple[str, ...]:
    if a.ndim == 1:
        return ("sample",)
    if tuple(a.shape[1:]) != tuple(data_shape):
        raise ValueError(f"{name} must have shape (sample,) or (sample, *{tuple(data_shape)}), got {a.shape}")
    return ("sample", *data_dims(a.shape[1:]))


def make_trajectory(
    x, times, sigma=None, mean_scale=None, *, x0_hat=None, labels=None, attrs=None, kind=None, per_sample=None
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
        per_sample: {name: (sample,) or (sample, *data_shape) array}: e.g. an imputation's `mask` (uint8, 1 =
            known) and `known` values; names in `SAMPLE_COORDS` (`test_index`, `test_label`) become coordinates.
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
    for name, a in (per_sample or {}).items():
        a = np.asarray(a)
        entry = (_per_sample_dims(name, a, x.shape[2:]), a)
        (coords if name in SAMPLE_COORDS else data)[name] = entry
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
    ds = ds.copy(deep=False)
    ds.attrs = netcdf_attrs(ds.attrs)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=_encoding(ds, compression))
    return path


def save_trajectory(ds: xr.Dataset, path, compression: bool = False) -> Path:
    """Validate a trajectory and write it with `save_netcdf` (atomic, checksummed); returns the path."""
    check_trajectory(ds)
    return save_netcdf(ds, path, compression)


class IncompleteTrajectoryWarning(UserWarning):
    """An opened trajectory holds only the records of a run that did not complete (attr `complete` = 0)."""


def _writer_of(path: Path) -> int | None:
    """The pid of the process streaming into `path` (the target or its `.partial`), if one is."""
    target = path.with_name(path.name.removesuffix(".partial"))
    return lock_owner(target.with_name(target.name + ".lock"))


def open_trajectory(path, chunks=None) -> xr.Dataset:
    """Load a trajectory file fully into memory (the file is closed on return) and validate it.

    A file of a run that did not complete (a `.partial` file, attr `complete` = 0) loads with an
    `IncompleteTrajectoryWarning` saying how many records it holds.

    Lazy, out of core: with `chunks` (dask chunks per dimension, e.g. {"time": 1}, or {} for the file's own
    chunks), or for the shards of a run split over processes (a glob pattern such as "run-*.nc", or a list
    of paths), the Dataset is dask-backed and reads only what a computation asks for (`sdegen.shards`).

    Raises:
        FileNotFoundError: no such file (the message points to `<path>.partial` when that exists).
        TrajectoryError: the file is still being written by another process, is corrupt (unreadable,
            checksum mismatch) or is not an sdegen trajectory; shards of different runs, overlapping or
            missing shards.
    """
    if not isinstance(path, str | os.PathLike) or (not Path(path).is_file() and glob.has_magic(str(path))):
        from sdegen.shards import open_shards

        return open_shards(path, chunks)  # a pattern or a list: the shards of one run, lazily
    if chunks is not None:
        from sdegen.shards import open_lazy

        return open_lazy(path, chunks)
    path = Path(path)
    if not path.is_file():
        partial = partial_path(path)
        hint = f"; the partial file of an unfinished run is {partial}" if partial.is_file() else ""
        raise FileNotFoundError(f"no trajectory file at {path}{hint}")
    owner = _writer_of(path)
    if owner == os.getpid():
        owner = None  # this process writes it (records are synced): reading is safe
    if owner is not None and path.name.endswith(".partial"):
        raise TrajectoryError(f"{path} is still being written (by process {owner}); open it when the run ends")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds.load()
    except (OSError, RuntimeError, ValueError) as err:
        if owner is not None:
            raise TrajectoryError(f"{path} is being written (by process {owner}); open it when the run ends") from err
        raise TrajectoryError(f"{path} is corrupt or not a netCDF file (read failed: {err})") from err
    check_trajectory(ds, str(path))
    if int(ds.attrs.get("complete", 1)) == 0:
        warnings.warn(
            f"{path} is the partial file of a run that did not complete: {ds.sizes.get('time', 0)} saved "
            f"state(s), the last at t = {float(ds['time'][-1]) if ds.sizes.get('time') else float('nan'):.4g}",
            IncompleteTrajectoryWarning,
            stacklevel=2,
        )
    return ds


CHUNKINGS = ("time", "sample")
_CHUNK_BYTES = 1 << 20  # a "sample" chunk holds about this much float32 (HDF5's default chunk cache is 1 MiB)


def compression_level(compression: bool | int) -> int:
    """zlib level 0..9 of `compression` (False: 0, True: 4, an int: itself)."""
    if isinstance(compression, bool | np.bool_):
        return 4 if compression else 0
    if not isinstance(compression, int | np.integer) or not 0 <= compression <= 9:
        raise ValueError(f"compression must be True/False or a zlib level 0..9, got {compression!r}")
    return int(compression)


def chunk_shape(chunking: str, shape, saved: int) -> tuple[int, ...]:
    """netCDF chunk shape of x for (batch, *data_shape): see `TrajectoryWriter`'s `chunking`."""
    batch, data_shape = shape[0], tuple(shape[1:])
    if chunking == "time":
        return (1, batch, *data_shape)
    d = max(1, math.prod(data_shape))
    steps = max(1, min(saved, _CHUNK_BYTES // (4 * d)))
    return (steps, max(1, min(batch, _CHUNK_BYTES // (4 * d * steps))), *data_shape)


class TrajectoryWriter:
    """Stream trajectory records into `<path>.partial` (unlimited `time` dimension), renamed onto `path` at the end.

    `close(complete=True)` moves the partial file onto `path` atomically; `close(complete=False)` (or `abort`)
    keeps `path` untouched and the partial file readable. While the writer is open, `<path>.lock` refuses a
    second writer of the same path. A write that fails raises an `OSError` naming `path` and the cause (e.g.
    "No space left on device"), the records so far stay in the partial file.

    Args:
        path: the file to create; an existing file there is replaced only when the run completes.
        shape: (batch, *data_shape).
        attrs: dataset attributes; `complete` = 0 is added and set to 1 by `close(complete=True)`.
        labels: optional (batch,) labels.
        x0_hat: whether records carry x0_hat.
        compression: zlib-compress x and x0_hat: False, True (level 4) or a level 1..9.
        sample_offset: the global index of sample 0 (a shard of a run split over processes).
        chunking: the netCDF chunks of x (and x0_hat): "time" (one saved state of all samples per chunk:
            reading along samples at a time, e.g. per-time moments) or "sample" (the whole path of a block of
            samples per chunk, up to `saved` states: reading along time, e.g. one sample's path).
        saved: the number of states the run will save (sizes the "sample" chunks).

    Raises:
        IsADirectoryError / OSError: `path` is a directory or cannot be written.
        sdegen._io.FileLockedError: another process is writing `path`.
    """

    def __init__(self, path, shape, *, attrs, labels=None, x0_hat: bool = False, compression: bool | int = False,
                 sample_offset: int = 0, chunking: str = "time", saved: int = 1, per_sample=None):  # fmt: skip
        if chunking not in CHUNKINGS:
            raise ValueError(f"chunking must be one of {list(CHUNKINGS)}, got {chunking!r}")
        level = compression_level(compression)
        self._file = PartialFile(path, "trajectory")
        self.path, self.partial = self._file.path, self._file.partial
        self._nc = None
        self.records = 0
        self._layout = (int(sample_offset), chunking, max(1, int(saved)))
        self._per_sample = {k: np.asarray(v) for k, v in (per_sample or {}).items()}
        try:
            self._create(shape, attrs, labels, x0_hat, level)
            self._nc = netCDF4.Dataset(self.partial, "a")
            if chunking == "sample":  # a record touches a row of chunks: keep the row cached (at most 256 MiB)
                row = 4 * math.prod(chunk_shape(chunking, shape, saved)[:1]) * math.prod(shape)
                for name in ("x", "x0_hat") if x0_hat else ("x",):
                    self._nc[name].set_var_chunk_cache(size=min(int(row * 1.25), 256 << 20))
        except BaseException as err:
            self._file.abort()
            if isinstance(err, OSError | RuntimeError):
                raise explain_write_error(err, self.partial) from err
            raise

    def _create(self, shape, attrs, labels, x0_hat, compression) -> None:
        batch, data_shape = shape[0], tuple(shape[1:])
        dims = data_dims(data_shape)
        with netCDF4.Dataset(self.partial, "w", format="NETCDF4") as nc:
            nc.createDimension("time", None)
            nc.createDimension("sample", batch)
            for name, size in zip(dims, data_shape, strict=True):
                nc.createDimension(name, size)
            ck = {"fletcher32": True, "fill_value": False}
            nc.createVariable("time", "f8", ("time",), **ck).long_name = "SDE time t"
            offset, chunking, saved = self._layout
            nc.createVariable("sample", "i8", ("sample",), **ck)[:] = np.arange(offset, offset + batch)
            if labels is not None:
                nc.createVariable("label", "i8", ("sample",), **ck)[:] = np.asarray(labels)
            big = {"fletcher32": True, "zlib": compression > 0, "complevel": compression or 4,
                   "chunksizes": chunk_shape(chunking, shape, saved)}  # fmt: skip
            for name in ("x", "x0_hat") if x0_hat else ("x",):
                nc.createVariable(name, "f4", ("time", "sample", *dims), **big)
            nc.createVariable("sigma", "f8", ("time",), fletcher32=True)
            nc.createVariable("mean_scale", "f8", ("time",), fletcher32=True)
            for name, a in self._per_sample.items():
                var = nc.createVariable(name, a.dtype.str[1:], _per_sample_dims(name, a, data_shape), **ck)
                var[:] = a
            coord_names = (["label"] if labels is not None else []) + [
                n for n in self._per_sample if n in SAMPLE_COORDS
            ]
            if coord_names:
                nc["x"].coordinates = " ".join(coord_names)
            nc.setncatts(netcdf_attrs({**attrs, "complete": 0}))

    def append(self, t: float, x, sigma: float, mean_scale: float, x0_hat=None, attrs: dict | None = None):
        """Append one record (x: (batch, *data_shape)) and sync it to disk.

        Raises:
            OSError: the write failed; names the target and the cause, and where the partial file is.
        """
        try:
            self._write_record(t, x, sigma, mean_scale, x0_hat, attrs)
        except (OSError, RuntimeError) as err:
            raise self._write_error(err) from err
        self.records += 1

    def _write_error(self, err: BaseException) -> OSError:
        e = explain_write_error(err, self.path)
        return OSError(e.errno, f"{e.strerror}; the states written so far are in {self.partial}", e.filename)

    def _write_record(self, t, x, sigma, mean_scale, x0_hat, attrs) -> None:
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

    def close(self, attrs: dict | None = None, complete: bool = False) -> Path | None:
        """Write final attributes and close (idempotent); returns the file that holds the records.

        complete=True moves the partial file onto `path` (returned); complete=False keeps it as the partial
        file (returned) and leaves `path` untouched, or removes it if it holds no record (returns None).
        """
        if self._nc is None:
            return self.path if complete else (self.partial if self.partial.exists() else None)
        try:
            try:
                self._nc.setncatts(netcdf_attrs({**(attrs or {}), "complete": int(complete)}))
            finally:
                nc, self._nc = self._nc, None
                nc.close()
        except (OSError, RuntimeError) as err:
            self._file.abort()
            raise self._write_error(err) from err
        except BaseException:
            self._file.abort()
            raise
        if complete:
            return self._file.commit()
        return self._file.abort(discard=self.records == 0)

    def abort(self, error: BaseException | None = None, attrs: dict | None = None) -> Path | None:
        """Close without completing (the target stays untouched); note the partial file on `error`.

        Returns the partial file, or None when no record was written (then it is removed).
        """
        partial = self.close(attrs, complete=False)
        notes = getattr(error, "__notes__", [])
        if error is not None and partial is not None and not any(str(partial) in str(n) for n in notes):
            error.add_note(f"the states saved before the failure are in {partial}")
        return partial

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close(complete=True)
        else:
            self.abort(exc)


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
