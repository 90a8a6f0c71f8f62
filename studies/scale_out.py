"""Scale out: throughput of 1 vs 2 torchrun ranks, and out-of-core per-time moments under a memory limit.

Run (from the repository root; ~8 minutes at the default size on a shared 2-core machine):

    OMP_NUM_THREADS=1 .venv/bin/python studies/scale_out.py --out studies/results/scale_out

Expected output: a Markdown table (also written to OUT/scale_out.md) with
  * sampling (`sdegen sample toy`, euler) and likelihood (`sdegen likelihood mnist-likelihood-fast`) throughput
    with 1 and 2 ranks (1 thread each) and their ratio (target >= 1.8 on 2 idle cores; the machine's load
    average is printed beside it, since other jobs share the cores);
  * the peak memory of computing per-time marginal moments of a trajectory file F times larger than the
    address-space limit given to the process (lazy, dask, one saved state per chunk: completes), against
    loading the file whole under the same limit (fails with MemoryError) and without a limit (peak RSS ~ the
    file size).
Throughput is measured inside the ranks (the time `sample` / the likelihood batches take), so process start
and imports, identical for 1 and 2 ranks, do not dilute the ratio; end-to-end wall times are shown too.
The bare baseline, measured in the same run, is the machine's own ceiling: matrix products in two independent
processes against one (no sdegen, no communication). On virtual cores that share a physical one, or a
loaded host, it is well below 2, and the ranks' ratio should be read against it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sdegen.results import save_text

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
TORCHRUN = str(Path(PY).with_name("torchrun"))
MNIST = REPO.parent / "shared" / "data" / "mnist"


def _run(cmd: list[str], cwd: Path, malloc_arenas: bool = False) -> tuple[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per rank: the ranks are the parallelism
    if malloc_arenas:  # one malloc arena: each extra thread's 64 MiB arena reservation would count in RLIMIT_AS
        env["MALLOC_ARENA_MAX"] = "1"
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr, wall


_BURN = (
    "import time, torch\n"
    "torch.set_num_threads(1)\n"
    "a = torch.randn(512, 512)\n"
    "t0, n = time.perf_counter(), 0\n"
    "while time.perf_counter() - t0 < {seconds}:\n"
    "    a @ a\n"
    "    n += 1\n"
    "print(n)\n"
)


def bare_ceiling(seconds: float = 8.0) -> float:
    """Matrix products per second of two independent processes over one: the machine's parallel ceiling."""
    code = _BURN.format(seconds=seconds)
    one = int(subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout)
    procs = [subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    two = sum(int(p.communicate()[0]) for p in procs)
    return two / one


def sampling(ranks: int, num: int, steps: int, work: Path) -> tuple[float, float]:
    """(samples/s inside the ranks, end-to-end wall s) of `sdegen sample toy` over `ranks` ranks."""
    out, wall = _run([TORCHRUN, "--nproc-per-node", str(ranks), "-m", "sdegen", "sample", "toy", "--steps",
                      str(steps), "--num-samples", str(num), "--seed", "1", "--out", str(work / f"s{ranks}.nc")],
                     work)  # fmt: skip
    seconds = [float(s) for s in re.findall(r"NFE \d+, ([\d.]+) s ->", out)]
    assert len(seconds) == ranks, out
    return num / max(seconds), wall


def likelihood(ranks: int, num: int, batch: int, work: Path) -> tuple[float, float]:
    """(images/s inside the ranks, end-to-end wall s) of `sdegen likelihood` over `ranks` ranks."""
    import xarray as xr

    path = work / f"ll{ranks}.nc"
    _, wall = _run([TORCHRUN, "--nproc-per-node", str(ranks), "-m", "sdegen", "likelihood", "mnist-likelihood-fast",
                    "--data", str(MNIST), "--num-images", str(num), "--batch-size", str(batch), "--rtol", "1e-2",
                    "--atol", "1e-2", "--out", str(path)], work)  # fmt: skip
    from sdegen.shards import shard_path

    files = [shard_path(path, r, ranks) for r in range(ranks)] if ranks > 1 else [path]
    busy = []
    for f in files:
        with xr.open_dataset(f) as ds:
            busy.append(ds.attrs["seconds_per_image"] * ds.sizes["image"])
    return num / max(busy), wall


MOMENTS_CHILD = """
import resource, sys, time, warnings
import dask
import sdegen
from sdegen.trajectory import marginal_moments
path, mode, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
def proc_status(key):  # VmHWM, not ru_maxrss: a forked child inherits its parent's ru_maxrss through exec
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
with dask.config.set(scheduler="synchronous"):  # warm-up: every import and one saved state, then the baseline
    warm = sdegen.open_trajectory(path, chunks={"time": 1})
    marginal_moments(warm.isel(time=[0])).compute()
    warm.close()
base_rss = proc_status("VmHWM")
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (proc_status("VmSize") + limit, resource.RLIM_INFINITY))
t0 = time.perf_counter()
try:
    with dask.config.set(scheduler="synchronous"):  # no worker threads: one chunk in memory at a time
        ds = sdegen.open_trajectory(path, chunks={"time": 1}) if mode == "lazy" else sdegen.open_trajectory(path)
        mom = marginal_moments(ds).compute()
    status = "ok"
except MemoryError:
    status = "MemoryError"
peak = proc_status("VmHWM")
print(status, base_rss, peak, time.perf_counter() - t0)
"""


def moments_memory(path: Path, mode: str, limit: int) -> tuple[str, float, float]:
    """(status, peak RSS above the post-import baseline in MiB, seconds) of per-time moments in a child."""
    out, _ = _run([PY, "-W", "ignore", "-c", MOMENTS_CHILD, str(path), mode, str(limit)], REPO, malloc_arenas=True)
    status, base, peak, seconds = out.split()[-4:]
    return status, (int(peak) - int(base)) / 2**20, float(seconds)


def make_big_trajectory(path: Path, num: int, saved: int) -> float:
    """Stream an MNIST-shaped trajectory (exact Gaussian score) to `path`; returns its size in MiB."""
    import torch

    import sdegen
    from sdegen import analytic

    if path.is_file():  # a complete file of an earlier run of this study (renamed into place when complete)
        return path.stat().st_size / 2**20
    sde = sdegen.VPSDE()
    dist = analytic.Gaussian(torch.full((1, 28, 28), 0.3), torch.full((1, 28, 28), 0.2))
    steps = 5 * (saved - 1)
    sdegen.sample(sde, dist.score_fn(sde), (num, 1, 28, 28), solver="euler", steps=steps, seed=0, save_every=5,
                  out=path, chunking="time")  # fmt: skip
    return path.stat().st_size / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="studies/results/scale_out", help="output directory")
    p.add_argument("--samples", type=int, default=4000, help="samples for the sampling throughput")
    p.add_argument("--steps", type=int, default=200, help="euler steps for the sampling throughput")
    p.add_argument("--images", type=int, default=8, help="test images for the likelihood throughput")
    p.add_argument("--traj-samples", type=int, default=2000, help="samples of the large trajectory (784 dims)")
    p.add_argument("--traj-saved", type=int, default=121, help="saved states of the large trajectory")
    p.add_argument("--parts", default="throughput,memory", help="comma-separated parts to run")
    args = p.parse_args()
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    if "throughput" in args.parts:
        rows += throughput(args, work)
    if "memory" in args.parts:
        rows += memory(args, work)
    table = "\n".join(rows)
    save_text(work / "scale_out.md", table + "\n")
    print(textwrap.dedent(table))


def throughput(args, work: Path) -> list[str]:
    rows = [f"load average before: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores", ""]
    rows += ["| measurement | 1 rank | 2 ranks | ratio |", "|---|---|---|---|"]
    rows.append(f"| bare baseline: 512×512 matmuls, 2 independent processes over 1 | | | {bare_ceiling():.2f} |")
    s1, w1 = sampling(1, args.samples, args.steps, work)
    s2, w2 = sampling(2, args.samples, args.steps, work)
    rows.append(f"| sampling, samples/s (toy, euler, {args.steps} steps, {args.samples} samples) | {s1:.0f} | {s2:.0f} "
                f"| {s2 / s1:.2f} |")  # fmt: skip
    rows.append(f"| sampling, end-to-end wall s (incl. start-up) | {w1:.1f} | {w2:.1f} | {w1 / w2:.2f} |")
    if MNIST.is_dir():
        l1, v1 = likelihood(1, args.images, 2, work)
        l2, v2 = likelihood(2, args.images, 2, work)
        rows.append(f"| likelihood, images/s (mnist-likelihood-fast, {args.images} images, batch 2, tol 1e-2) "
                    f"| {l1:.3f} | {l2:.3f} | {l2 / l1:.2f} |")  # fmt: skip
        rows.append(f"| likelihood, end-to-end wall s | {v1:.1f} | {v2:.1f} | {v1 / v2:.2f} |")
    rows.append(f"\nload average after: {os.getloadavg()[0]:.2f} (1 min)\n")
    print("\n".join(rows), flush=True)
    return rows


def memory(args, work: Path) -> list[str]:
    big = work / "big.nc"
    size = make_big_trajectory(big, args.traj_samples, args.traj_saved)
    limit = int(size * 2**20 / 3)  # the address space allowed beyond the post-import baseline: a third of the file
    rows = [f"trajectory file: {size:.0f} MiB ({args.traj_samples} samples x 784 dims x {args.traj_saved} saved "
             f"states); limit: {limit / 2**20:.0f} MiB of address space beyond the imports (RLIMIT_AS)", "",
             "| per-time marginal moments | limit | status | peak RSS above baseline, MiB | seconds |",
             "|---|---|---|---|---|"]  # fmt: skip
    for mode, lim in (("lazy", limit), ("eager", limit), ("eager", 0)):
        status, peak, seconds = moments_memory(big, mode, lim)
        name = "lazy (dask, chunks={'time': 1})" if mode == "lazy" else "eager (load whole)"
        rows.append(f"| {name} | {'%.0f MiB' % (lim / 2**20) if lim else 'none'} | {status} | {peak:.0f} "
                    f"| {seconds:.1f} |")  # fmt: skip
    big.unlink()
    return rows


if __name__ == "__main__":
    main()
