"""Runs split over processes: which samples a rank owns, its shard file, and opening shards as one run.

Under `torchrun --nproc-per-node N` (an initialised `torch.distributed` process group), `sdegen.sample` gives
rank r the contiguous block of global sample indices [⌊rM/N⌋, ⌊(r+1)M/N⌋) of an M-sample run and streams it
to `<stem>-0000r-of-0000N<suffix>` (five digits each), whose `sample` coordinate holds the global indices.
Sample i draws its prior, noise and Lévy-area streams from (seed, i) (`sdegen.samplers._noise.sample_offset`),
so for fixed-step solvers with per-sample noise the union of the shards is the single-process run bit for
bit. Solvers that couple the samples of a batch are not split-invariant (`NOT_SPLIT_INVARIANT`); they warn.

Every shard carries the attrs `shard_rank`, `shard_world`, `sample_offset` and `num_samples_total`.
`open_shards` checks that the files belong to one run (same `RUN_ATTRS` and save times), that their sample
indices do not overlap and that none is missing, then opens them lazily as one Dataset sorted by sample
(xarray's multi-file open, dask-backed): nothing is read but the headers until values are asked for.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

SHARD_ATTRS = ("shard_rank", "shard_world", "sample_offset", "num_samples_total")
# Attrs that identify a run: shards whose values differ come from different runs (sde_* parameters too).
RUN_ATTRS = (
    "sdegen_version", "solver", "steps", "seed", "t_min", "T", "score_source", "solver_options", "save_every",
    "denoise", "init", "dtype", "data_range", "guidance", "label_spec", "shard_world", "num_samples_total",
)  # fmt: skip
_SHARD_NAME = re.compile(r"-(\d{5})-of-(\d{5})$")


@dataclass(frozen=True)
class Block:
    """The samples [start, stop) of a `total`-sample run that rank `rank` of `world_size` computes."""

    rank: int
    world_size: int
    start: int
    stop: int
    total: int

    def __post_init__(self):
        if not (0 <= self.rank < self.world_size and 0 <= self.start < self.stop <= self.total):
            raise ValueError(f"invalid block {self}")

    @property
    def size(self) -> int:
        return self.stop - self.start

    def attrs(self) -> dict:
        return {"shard_rank": self.rank, "shard_world": self.world_size, "sample_offset": self.start,
                "num_samples_total": self.total}  # fmt: skip


def split_range(total: int, rank: int, world_size: int, what: str = "samples") -> Block:
    """Rank `rank`'s contiguous block of `total` samples (sizes differ by at most one).

    Raises:
        ValueError: fewer samples than ranks (a rank would get none), or a rank outside [0, world_size).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} must lie in [0, world_size={world_size})")
    if total < world_size:
        raise ValueError(f"{total} {what} cannot be split over {world_size} ranks: every rank needs one")
    return Block(rank, world_size, total * rank // world_size, total * (rank + 1) // world_size, total)


def process_group() -> tuple[int, int] | None:
    """(rank, world size) of the initialised default process group with more than one rank, else None."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return None


def shard_path(path, rank: int, world_size: int) -> Path:
    """`run.nc` → `run-0000r-of-0000N.nc` (five digits each)."""
    path = Path(path)
    return path.with_name(f"{path.stem}-{rank:05d}-of-{world_size:05d}{path.suffix}")


def shard_paths(path, world_size: int) -> list[Path]:
    """All shard files of a `world_size`-rank run written to `path`."""
    return [shard_path(path, r, world_size) for r in range(world_size)]


def expand_paths(paths) -> list[Path]:
    """A glob pattern, a path or a list of paths as a list of existing files.

    Raises:
        FileNotFoundError: a pattern matching no file, or a listed file that does not exist.
    """
    if isinstance(paths, str | os.PathLike):
        text = str(paths)
        if Path(text).is_file() or not glob.has_magic(text):
            paths = [text]
        else:
            found = sorted(glob.glob(text))
            if not found:
                partial = sorted(glob.glob(text + ".partial"))
                hint = f" (partial files of unfinished runs: {[str(p) for p in partial]})" if partial else ""
                raise FileNotFoundError(f"no trajectory file matches the pattern {text!r}{hint}")
            paths = found
    out = [Path(p) for p in paths]
    if not out:
        raise FileNotFoundError("no trajectory files given (an empty list)")
    missing = [str(p) for p in out if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no trajectory file at {', '.join(missing)}")
    return out


def _header(path: Path) -> dict:
    from sdegen.trajectory import TrajectoryError

    try:
        with netCDF4.Dataset(path, "r") as nc:
            attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
            sample = np.asarray(nc["sample"][:], dtype=np.int64)
            time = np.asarray(nc["time"][:], dtype=np.float64)
    except (OSError, RuntimeError, IndexError, KeyError) as err:
        raise TrajectoryError(f"{path} is corrupt or not an sdegen trajectory (read failed: {err})") from err
    return {"attrs": attrs, "sample": sample, "time": time}


def _identity(attrs: dict) -> dict:
    return {k: v for k, v in attrs.items() if k in RUN_ATTRS or (k.startswith("sde") and k != "sdegen_version")}


def _same(a, b) -> bool:
    try:
        return bool(np.array_equal(a, b))
    except Exception:
        return a == b


def _check_one_run(paths: list[Path], headers: list[dict]) -> None:
    from sdegen.trajectory import TrajectoryError

    ref = _identity(headers[0]["attrs"])
    for path, h in zip(paths[1:], headers[1:], strict=True):
        other = _identity(h["attrs"])
        diff = sorted(k for k in set(ref) | set(other) if not _same(ref.get(k), other.get(k)))
        if diff:
            shown = ", ".join(f"{k}: {ref.get(k)!r} vs {other.get(k)!r}" for k in diff[:4])
            raise TrajectoryError(f"{paths[0]} and {path} are shards of different runs ({shown})")
        if not _same(h["time"], headers[0]["time"]):
            raise TrajectoryError(f"{paths[0]} and {path} hold different save times: shards of different runs")
    incomplete = [str(p) for p, h in zip(paths, headers, strict=True) if int(h["attrs"].get("complete", 1)) == 0]
    if incomplete:
        raise TrajectoryError(f"incomplete shard(s) {incomplete}: rerun the missing ranks (`--resume`)")


def _check_coverage(paths: list[Path], headers: list[dict]) -> list[int]:
    """Order of the shards by sample; raises on overlapping indices or missing shards (named)."""
    from sdegen.trajectory import TrajectoryError

    order = sorted(range(len(paths)), key=lambda i: int(headers[i]["sample"][0]) if len(headers[i]["sample"]) else 0)
    seen: dict[int, Path] = {}
    for i in order:
        for j in headers[i]["sample"].tolist():
            if j in seen:
                raise TrajectoryError(f"sample index {j} is in both {seen[j]} and {paths[i]}: overlapping shards")
            seen[j] = paths[i]
    attrs = headers[0]["attrs"]
    if "num_samples_total" in attrs:
        total, world = int(attrs["num_samples_total"]), int(attrs["shard_world"])
        have = {int(h["attrs"]["shard_rank"]) for h in headers}
        lacking = [r for r in range(world) if r not in have]
        if lacking:
            names = [shard_path(_run_path(paths[0]), r, world).name for r in lacking]
            raise TrajectoryError(
                f"missing shard(s) {names} of a {world}-rank run of {total} samples (given {len(paths)} file(s))"
            )
        if len(seen) != total:
            raise TrajectoryError(f"the shards hold {len(seen)} of the run's {total} samples")
    return order


def _run_path(shard: Path) -> Path:
    """`run-00001-of-00002.nc` → `run.nc`."""
    return shard.with_name(_SHARD_NAME.sub("", shard.stem) + shard.suffix)


def open_shards(paths, chunks=None) -> xr.Dataset:
    """Open the shard files of one run lazily as one trajectory Dataset sorted by (global) sample.

    Args:
        paths: a glob pattern ("run-*.nc"), a path, or a list of paths.
        chunks: dask chunks per dimension (e.g. {"time": 1}); None: the files' own chunks.

    Returns:
        A dask-backed Dataset over all shards; attrs of the first shard without the per-shard ones.

    Raises:
        FileNotFoundError: a pattern matching nothing, a listed file missing.
        TrajectoryError: shards of different runs (naming the differing attrs), overlapping sample indices,
            missing or incomplete shards (named), a corrupt or foreign file.
    """
    from sdegen.trajectory import check_trajectory

    files = expand_paths(paths)
    headers = [_header(p) for p in files]
    _check_one_run(files, headers)
    order = _check_coverage(files, headers)
    files = [files[i] for i in order]
    if len(files) == 1:
        return open_lazy(files[0], chunks)
    ds = xr.open_mfdataset(
        files, engine="netcdf4", combine="nested", concat_dim="sample", data_vars="minimal", coords="minimal",
        compat="override", join="override", chunks={} if chunks is None else chunks, combine_attrs="override",
    )  # fmt: skip
    ds.attrs = {k: v for k, v in ds.attrs.items() if k not in ("shard_rank", "sample_offset")}
    ds.attrs["nfe"] = int(headers[order[0]]["attrs"]["nfe"])
    ds.attrs["shard_files"] = len(files)
    check_trajectory(ds, str(paths))
    return ds


def open_lazy(path, chunks=None) -> xr.Dataset:
    """Open one trajectory file lazily (dask-backed; the file stays open until `ds.close()`).

    Raises:
        FileNotFoundError / TrajectoryError: as `sdegen.open_trajectory`.
    """
    from sdegen.trajectory import IncompleteTrajectoryWarning, TrajectoryError, check_trajectory

    path = expand_paths(path)[0]
    try:
        ds = xr.open_dataset(path, engine="netcdf4", chunks={} if chunks is None else chunks)
    except (OSError, RuntimeError, ValueError) as err:
        raise TrajectoryError(f"{path} is corrupt or not a netCDF file (read failed: {err})") from err
    check_trajectory(ds, str(path))
    if int(ds.attrs.get("complete", 1)) == 0:
        warnings.warn(f"{path} is the partial file of a run that did not complete", IncompleteTrajectoryWarning,
                      stacklevel=2)  # fmt: skip
    return ds


def completed(path, attrs: dict) -> bool:
    """Whether `path` is a complete trajectory of the run described by `attrs` (for `resume`).

    Raises:
        TrajectoryError: `path` exists, is complete, but belongs to a different run (it is not overwritten).
    """
    from sdegen.trajectory import TrajectoryError, netcdf_attrs

    path = Path(path)
    if not path.is_file():
        return False
    try:
        header = _header(path)
    except TrajectoryError:
        return False  # unreadable: compute it again
    if int(header["attrs"].get("complete", 0)) != 1:
        return False
    have, want = _identity(header["attrs"]), _identity(netcdf_attrs(attrs))
    diff = sorted(k for k in want if k not in ("sdegen_version",) and not _same(have.get(k), want[k]))
    if diff:
        raise TrajectoryError(f"--resume: {path} is a complete file of a different run (differs in {diff})")
    return True


def results_complete(path, attrs: dict) -> bool:
    """Whether `path` is a complete per-item results file of the run described by `attrs` (for `--resume`).

    Raises:
        ValueError: `path` is complete but was made with other settings (named).
    """
    from sdegen.trajectory import netcdf_attrs

    path = Path(path)
    if not path.is_file():
        return False
    try:
        with netCDF4.Dataset(path, "r") as nc:
            have = {k: nc.getncattr(k) for k in nc.ncattrs()}
    except OSError:
        return False
    if int(have.get("complete", 0)) != 1:
        return False
    want = netcdf_attrs(attrs)
    diff = sorted(k for k in want if k not in ("sdegen_version",) and not _same(have.get(k), want[k]))
    if diff:
        raise ValueError(f"--resume: {path} is a complete result of a different run (differs in {diff})")
    return True


def merge_results(path, world_size: int, dim: str = "image") -> Path | None:
    """Merge the complete per-rank result shards of `path` into `path` (atomic); None while one is missing.

    Rows are ordered by their global `index` column, which becomes the `dim` coordinate; the summary attrs
    (`bpd_mean`, `bpd_stderr`, `nfe_total`, `seconds_per_image`) are recomputed over all rows.

    Raises:
        ValueError: overlapping rows, or rows missing from complete shards.
    """
    from sdegen.trajectory import save_netcdf

    files = shard_paths(path, world_size)
    parts = []
    for f in files:
        if not f.is_file():
            return None
        with xr.open_dataset(f, engine="netcdf4") as ds:
            if int(ds.attrs.get("complete", 0)) != 1:
                return None
            parts.append(ds.load())
    merged = xr.concat(parts, dim, combine_attrs="override").drop_vars(dim)
    index = merged["index"].values
    if len(np.unique(index)) != len(index):
        raise ValueError(f"the result shards of {path} overlap")
    merged = merged.assign_coords({dim: index}).sortby(dim)
    num = int(parts[0].attrs.get("num", len(index)))
    if len(index) != num or index.min() != 0 or index.max() != num - 1:
        raise ValueError(f"the result shards of {path} hold {len(index)} of {num} rows")
    attrs = {k: v for k, v in parts[0].attrs.items() if k != "shard_rank"}
    if "bpd" in merged:
        bpd = merged["bpd"].values
        stderr = float(bpd.std(ddof=1) / np.sqrt(num)) if num > 1 else float("nan")
        attrs.update(bpd_mean=float(bpd.mean()), bpd_stderr=stderr)
    if "nfe_total" in attrs:
        attrs["nfe_total"] = int(sum(int(p.attrs["nfe_total"]) for p in parts))
    if "seconds_per_image" in attrs:
        attrs["seconds_per_image"] = float(sum(p.attrs["seconds_per_image"] * p.sizes[dim] for p in parts) / num)
    merged.attrs = {**attrs, "complete": 1, "shard_world": world_size}
    return save_netcdf(merged.drop_vars("index"), path)
