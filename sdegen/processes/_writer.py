"""Streaming of `sample_backward` records into netCDF: one record per saved state, synced, renamed at the end.

Records go to `<path>.partial` through `netCDF4.Dataset` on an unlimited `time` dimension, with `sync()` after
each record, so a run that dies leaves a readable partial file (attr `complete` = 0). `finish` writes the
final attributes (`complete` = 1) and renames the file onto `path` atomically (`os.replace`).
"""

from __future__ import annotations

import os
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

from sdegen.trajectory import netcdf_attrs


class StreamingWriter:
    """Append one-time-record Datasets (same variables each time) to `<path>.partial`."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(self.path.name + ".partial")
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
        """Write the final attributes, close and rename onto `path`."""
        if self._nc is None:
            raise RuntimeError("nothing was written")
        self._nc.setncatts(netcdf_attrs({**attrs, "complete": 1}))
        self._nc.close()
        self._nc = None
        os.replace(self.partial, path)

    def abort(self) -> None:
        """Close the partial file (kept for inspection, `complete` = 0)."""
        if self._nc is not None:
            self._nc.close()
            self._nc = None
