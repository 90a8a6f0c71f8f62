"""Streaming of `sample_backward` records into netCDF: one record per saved state, synced, renamed at the end.

Records go to `<path>.partial` through `netCDF4.Dataset` on an unlimited `time` dimension, with `sync()` after
each record, so a run that dies leaves a readable partial file (attr `complete` = 0). `finish` writes the
final attributes (`complete` = 1) and renames the file onto `path` atomically. The file's life (lock,
`.partial`, fsync and rename) is `sdegen._io.PartialFile`, as for `sdegen.sample`'s streams.
"""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

from sdegen._io import PartialFile
from sdegen.trajectory import netcdf_attrs


class StreamingWriter:
    """Append one-time-record Datasets (same variables each time) to `<path>.partial`."""

    def __init__(self, path):
        self.path = Path(path)
        self._file = PartialFile(self.path, "trajectory")
        self.partial = self._file.partial
        self._nc: netCDF4.Dataset | None = None

    def _create(self, ds: xr.Dataset) -> None:
        nc = netCDF4.Dataset(self.partial, "w", format="NETCDF4")
        nc.createDimension("time", None)
        for dim, size in ds.sizes.items():
            if dim != "time":
                nc.createDimension(dim, size)
        nc.createVariable("time", "f8", ("time",), fletcher32=True)
        for name in ds.coords:
            if name != "time":
                var = nc.createVariable(name, ds[name].dtype, ds[name].dims, fletcher32=True)
                var[:] = ds[name].values
        for name, da in ds.data_vars.items():
            var = nc.createVariable(name, da.dtype, da.dims, fletcher32=True)
            var.setncatts(netcdf_attrs(dict(da.attrs)))
        nc.setncatts(netcdf_attrs({**ds.attrs, "complete": 0}))
        self._nc = nc

    def append(self, ds: xr.Dataset) -> None:
        """Append the single time record of ds and sync it to disk."""
        if self._nc is None:
            self._create(ds)
        nc = self._nc
        n = len(nc.dimensions["time"])
        nc["time"][n] = ds["time"].values[0]
        for name, da in ds.data_vars.items():
            nc[name][n] = np.asarray(da.values[0])
        nc.setncatts(netcdf_attrs({"nfe": ds.attrs.get("nfe", 0)}))
        nc.sync()

    def finish(self, path: Path, attrs: dict) -> None:
        """Write the final attributes, close and rename onto the target (`path`, the writer's own)."""
        if self._nc is None:
            raise RuntimeError("nothing was written")
        if Path(path) != self.path:
            raise ValueError(f"finish({path}) on a writer of {self.path}")
        self._nc.setncatts(netcdf_attrs({**attrs, "complete": 1}))
        self._nc.close()
        self._nc = None
        self._file.commit()

    def abort(self) -> None:
        """Close the partial file (kept for inspection, `complete` = 0; removed if it holds no record)."""
        had_records = self._nc is not None
        if self._nc is not None:
            self._nc.close()
            self._nc = None
        self._file.abort(discard=not had_records)
