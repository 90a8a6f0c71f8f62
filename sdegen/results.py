"""Results files: per-item rows streamed to netCDF as they are computed, and whole result files saved atomically.

`save_results` (a Dataset → netCDF) and `save_text` (a Markdown table, a JSON summary) are what studies and
commands write their results with: the one atomic writer of `sdegen._io` (temporary file, fsync, rename).

`ResultWriter` appends rows along an unlimited dimension of `<path>.partial` (synced after each batch) under
the lock `<path>.lock`, and renames the file onto `path` when the run completes (`sdegen._io.PartialFile`):
a failed or killed run leaves `path` untouched and the rows computed so far readable in the partial file
(attr `complete` = 0). Every variable carries a fletcher32 checksum, as trajectories do.
"""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np

from sdegen._io import PartialFile, atomic_path, atomic_write_text, explain_write_error
from sdegen.trajectory import netcdf_attrs, save_netcdf

__all__ = ["ResultWriter", "save_results", "save_text"]


def save_results(ds, path, compression: bool = False) -> Path:
    """Write a results Dataset to netCDF atomically, with checksums (`sdegen.trajectory.save_netcdf`)."""
    return save_netcdf(ds, path, compression)


def save_text(path, text: str) -> Path:
    """Write a text result (a Markdown table, JSON) atomically; returns the path."""
    atomic_write_text(path, text)
    return Path(path)


_NC_TYPES = {"f8": "f8", "f4": "f4", "i8": "i8"}


def save_figure(fig, path, **kwargs) -> Path:
    """Save a matplotlib figure atomically (the temporary keeps the suffix that selects the format)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)
    return Path(path)


class ResultWriter:
    """Stream rows of per-item results into `<path>.partial`; `close(complete=True)` moves it onto `path`.

    Args:
        path: the target netCDF file (untouched until the run completes).
        dim: the row dimension, e.g. "image"; its coordinate counts rows from 0.
        variables: name → netCDF type ("f8", "f4" or "i8") of each column.
        attrs: dataset attributes; `complete` = 0 is added (1 once complete).

    Raises:
        OSError: `path` is a directory or not writable, naming it and the cause.
        sdegen._io.FileLockedError: another process writes `path`.
    """

    def __init__(self, path, dim: str, variables: dict[str, str], *, attrs: dict):
        self._file = PartialFile(path, "results file")
        self.path, self.partial, self.dim = self._file.path, self._file.partial, dim
        self._columns = dict(variables)
        self.rows = 0
        try:
            self._nc = netCDF4.Dataset(self.partial, "w", format="NETCDF4")
            self._nc.createDimension(dim, None)
            self._nc.createVariable(dim, "i8", (dim,), fletcher32=True, fill_value=False)
            for name, kind in self._columns.items():
                self._nc.createVariable(name, _NC_TYPES[kind], (dim,), fletcher32=True)
            self._nc.setncatts(netcdf_attrs({**attrs, "complete": 0}))
            self._nc.sync()
        except (OSError, RuntimeError) as err:
            self._file.abort()
            raise explain_write_error(err, self.path) from err

    def append(self, **columns) -> None:
        """Append rows: one array per variable, all of the same length; synced to disk."""
        lengths = {len(np.atleast_1d(v)) for v in columns.values()}
        if set(columns) != set(self._columns) or len(lengths) != 1:
            raise ValueError(f"append needs equally long columns {sorted(self._columns)}, got {sorted(columns)}")
        n = lengths.pop()
        try:
            self._write_rows(columns, n)
        except (OSError, RuntimeError) as err:
            e = explain_write_error(err, self.path)
            raise OSError(e.errno, f"{e.strerror}; the rows so far are in {self.partial}", e.filename) from err
        self.rows += n

    def _write_rows(self, columns: dict, n: int) -> None:
        start = len(self._nc.dimensions[self.dim])
        self._nc[self.dim][start : start + n] = np.arange(start, start + n)
        for name, values in columns.items():
            self._nc[name][start : start + n] = np.atleast_1d(values)
        self._nc.sync()

    def close(self, attrs: dict | None = None, complete: bool = False) -> Path | None:
        """Write final attributes and close; complete=True moves the file onto `path`. Returns the file.

        complete=False keeps the partial file (returned), or removes it if it holds no row (returns None).
        """
        if self._nc is None:
            return self.path if complete else (self.partial if self.partial.exists() else None)
        try:
            try:
                self._nc.setncatts(netcdf_attrs({**(attrs or {}), "complete": int(complete)}))
            finally:
                nc, self._nc = self._nc, None
                nc.close()
        except BaseException as err:
            self._file.abort()
            if isinstance(err, OSError | RuntimeError):
                raise explain_write_error(err, self.path) from err
            raise
        return self._file.commit() if complete else self._file.abort(discard=self.rows == 0)

    def abort(self, error: BaseException | None = None) -> Path | None:
        """Close without completing (`path` untouched); note the partial file on `error`. Returns it (or None)."""
        partial = self.close(complete=False)
        if error is not None and partial is not None:
            error.add_note(f"the rows computed before the failure are in {partial}")
        return partial
