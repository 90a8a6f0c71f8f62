"""Runs split over ranks: two gloo ranks (CPU) against one process, exact answers.

Sample i draws its prior and noise from (seed, i) only, so for fixed-step solvers with per-sample noise the
union of the shards equals the single-process run bit for bit (tolerance 0), with the same NFE per sample.
The likelihood over ranks solves exactly the batches one process would, with per-image noise, so the
per-image bits/dim are identical too.
"""

import os
import signal
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import sdegen
from sdegen import analytic
from sdegen.shards import shard_path, split_range
from sdegen.trajectory import TrajectoryError

WORLD = 2
NUM, STEPS, SEED = 7, 12, 5  # 7 samples: an uneven split (3 + 4)
SOLVERS = ("euler", "ddim", "dpmpp_2m")
MIX = analytic.gaussian_mixture_2d()
MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
LIKELIHOOD_ARGS = ["--data", str(MNIST), "--num", "4", "--batch-size", "2", "--rtol", "1e-2", "--atol", "1e-2",
                   "--probes", "2", "--seed", "11"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(solver, out, **kw):
    sde = sdegen.VPSDE()
    return sdegen.sample(sde, MIX.score_fn(sde), (NUM, 2), solver=solver, steps=STEPS, seed=SEED, save_every=3,
                         out=out, **kw)  # fmt: skip


class _KillAfterRankZero:
    """Rank 1's score: after a few evaluations, wait for rank 0's finished shard, then SIGKILL this process."""

    def __init__(self, score, shard0: Path):
        self.score, self.shard0, self.calls = score, shard0, 0

    def __call__(self, x, t):
        self.calls += 1
        if self.calls == 4:
            deadline = time.monotonic() + 120
            while not self.shard0.is_file() and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)
        return self.score(x, t)


def _worker(rank, port, tmp, mode):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    tmp = Path(tmp)
    try:
        if mode == "likelihood":
            from sdegen.cli import main

            assert main(["likelihood", "mnist-likelihood-fast", "--out", str(tmp / "ll.nc"), *LIKELIHOOD_ARGS]) == 0
            return
        if mode == "solvers":
            for solver in SOLVERS:
                _run(solver, tmp / f"{solver}.nc")
            return
        sde = sdegen.VPSDE()
        calls = {"n": 0}

        def counted(x, t):
            calls["n"] += 1
            return MIX.score_fn(sde)(x, t)

        score = counted
        if mode == "kill" and rank == 1:
            score = _KillAfterRankZero(counted, shard_path(tmp / "run.nc", 0, WORLD))
        sdegen.sample(sde, score, (NUM, 2), solver="euler", steps=STEPS, seed=SEED, save_every=3, out=tmp / "run.nc",
                      resume=mode == "resume")  # fmt: skip
        (tmp / f"calls-{mode}-{rank}.txt").write_text(str(calls["n"]))
    finally:
        dist.destroy_process_group()


def _spawn(tmp, mode):
    mp.spawn(_worker, args=(_free_port(), str(tmp), mode), nprocs=WORLD, join=True)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shards")
    _spawn(tmp, "solvers")
    return tmp


@pytest.mark.parametrize("solver", SOLVERS)
def test_two_ranks_equal_one_process_bit_for_bit(sharded, solver, tmp_path):
    single = _run(solver, tmp_path / "single.nc")
    names = sorted(p.name for p in sharded.glob(f"{solver}-*.nc"))
    assert names == [f"{solver}-00000-of-00002.nc", f"{solver}-00001-of-00002.nc"]
    ds = sdegen.open_trajectory(str(sharded / f"{solver}-*.nc"))
    assert ds["x"].chunks is not None  # lazy, dask-backed
    np.testing.assert_array_equal(ds["sample"].values, np.arange(NUM))
    np.testing.assert_array_equal(ds["time"].values, single["time"].values)
    np.testing.assert_array_equal(ds["x"].values, single["x"].values)  # bit for bit
    for r in range(WORLD):  # every shard made the single run's NFE: the same evaluations per sample
        shard = sdegen.open_trajectory(shard_path(sharded / f"{solver}.nc", r, WORLD))
        block = split_range(NUM, r, WORLD)
        np.testing.assert_array_equal(shard["sample"].values, np.arange(block.start, block.stop))
        assert shard.attrs["nfe"] == single.attrs["nfe"]


def test_simulated_ranks_equal_one_process(tmp_path):
    """split=(r, N) runs rank r's block without a process group (job arrays, notebooks)."""
    single = _run("euler", None)
    parts = [_run("euler", tmp_path / "run.nc", split=(r, 3)) for r in range(3)]
    np.testing.assert_array_equal(np.concatenate([p["x"].values for p in parts], axis=1), single["x"].values)
    ds = sdegen.open_trajectory([shard_path(tmp_path / "run.nc", r, 3) for r in (2, 0, 1)])  # any order
    np.testing.assert_array_equal(ds["x"].values, single["x"].values)


def test_killed_rank_leaves_other_shard_and_resume_completes_only_it(tmp_path):
    with pytest.raises(mp.ProcessExitedException):
        _spawn(tmp_path, "kill")
    shard0, shard1 = (shard_path(tmp_path / "run.nc", r, WORLD) for r in range(WORLD))
    assert shard0.is_file() and not shard1.is_file()
    assert sdegen.open_trajectory(shard0).attrs["complete"] == 1  # complete and readable
    assert shard1.with_name(shard1.name + ".partial").is_file()  # rank 1's records so far
    with pytest.raises(TrajectoryError, match="missing shard.*run-00001-of-00002.nc"):
        sdegen.open_trajectory(str(tmp_path / "run-*.nc"))
    _spawn(tmp_path, "resume")
    assert (tmp_path / "calls-resume-0.txt").read_text() == "0"  # rank 0 skipped: its shard was complete
    assert int((tmp_path / "calls-resume-1.txt").read_text()) == STEPS  # rank 1 computed its block
    np.testing.assert_array_equal(
        sdegen.open_trajectory(str(tmp_path / "run-*.nc"))["x"].values, _run("euler", None)["x"].values
    )


def test_bad_shard_inputs_raise_clear_errors(sharded, tmp_path):
    with pytest.raises(FileNotFoundError, match="no trajectory file matches the pattern"):
        sdegen.open_trajectory(str(tmp_path / "nothing-*.nc"))
    mixed = [shard_path(sharded / "euler.nc", 0, WORLD), shard_path(sharded / "ddim.nc", 1, WORLD)]
    with pytest.raises(TrajectoryError, match="different runs.*solver: 'euler' vs 'ddim'"):
        sdegen.open_trajectory(mixed)
    copy = tmp_path / "copy.nc"
    copy.write_bytes(mixed[0].read_bytes())
    with pytest.raises(TrajectoryError, match="sample index 0 is in both"):
        sdegen.open_trajectory([mixed[0], copy])
    with pytest.raises(ValueError, match="7 samples cannot be split over 8 ranks"):
        _run("euler", None, split=(0, 8))


def test_non_split_invariant_solver_warns(tmp_path):
    with pytest.warns(UserWarning, match="not split-invariant.*batch"):
        sdegen.sample(sdegen.VESDE(), MIX.score_fn(sdegen.VESDE()), (4, 2), solver="pc", steps=3, seed=0,
                      split=(0, 2))  # fmt: skip


def test_lazy_open_and_moments_match_eager(tmp_path):
    for chunking in ("time", "sample"):
        path = tmp_path / f"{chunking}.nc"
        eager = _run("euler", path, chunking=chunking, compression=1)
        lazy = sdegen.open_trajectory(path, chunks={})
        assert lazy["x"].chunks is not None
        mom = sdegen.trajectory.marginal_moments(lazy)
        assert mom["mean"].chunks is not None  # nothing computed yet
        ref = sdegen.trajectory.marginal_moments(eager)
        np.testing.assert_allclose(mom["mean"].values, ref["mean"].values, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(mom["std"].values, ref["std"].values, rtol=1e-6, atol=1e-7)
        cmp = sdegen.trajectory.compare_marginals(lazy, MIX).compute()
        np.testing.assert_allclose(cmp["z_mean"].values, sdegen.trajectory.compare_marginals(eager, MIX)["z_mean"],
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
        lazy.close()


@pytest.mark.skipif(not MNIST.is_dir(), reason="needs the MNIST test split in ../shared/data/mnist")
def test_likelihood_over_two_ranks_equals_one_process(tmp_path):
    """Whole batches per rank and per-image noise: per-image bits/dim identical to one process."""
    import xarray as xr

    from sdegen.cli import main

    _spawn(tmp_path, "likelihood")
    assert main(["likelihood", "mnist-likelihood-fast", "--out", str(tmp_path / "single.nc"), *LIKELIHOOD_ARGS]) == 0
    with xr.open_dataset(tmp_path / "ll.nc") as merged, xr.open_dataset(tmp_path / "single.nc") as single:
        assert merged.attrs["complete"] == 1 and merged.attrs["shard_world"] == WORLD
        np.testing.assert_array_equal(merged["image"].values, np.arange(4))
        np.testing.assert_array_equal(merged["bpd"].values, single["bpd"].values)  # identical, not just close
        np.testing.assert_array_equal(merged["label"].values, single["label"].values)
        assert merged.attrs["bpd_mean"] == pytest.approx(single.attrs["bpd_mean"], rel=1e-12)
        assert merged.attrs["nfe_total"] == single.attrs["nfe_total"]
    assert (
        main(
            ["likelihood", "mnist-likelihood-fast", "--out", str(tmp_path / "single.nc"), "--resume", *LIKELIHOOD_ARGS]
        )
        == 0
    )  # fmt: skip  (complete: skipped)


@pytest.mark.parametrize("spec", ["drawn", "random", "balanced", "0,1,2", 3])
def test_labels_of_a_block_are_the_global_labels(spec):
    from sdegen.labels import resolve_labels

    freq = torch.tensor([1.0, 2.0, 3.0, 4.0])
    full = resolve_labels(spec, 10, 4, class_frequencies=freq, seed=9)
    for start, stop in ((0, 3), (3, 10), (7, 9)):
        part = resolve_labels(spec, stop - start, 4, class_frequencies=freq, seed=9, offset=start)
        torch.testing.assert_close(part, full[start:stop], rtol=0, atol=0)


def test_per_image_noise_does_not_depend_on_the_batch():
    """Dequantisation noise and probes of image i come from (seed, i): the same in any batch."""
    from sdegen.dequantization import per_image_noise
    from sdegen.likelihood import per_item_probes

    full = per_image_noise(4, range(6), 2, (6, 1, 3, 3))
    part = per_image_noise(4, [4, 5], 2, (2, 1, 3, 3))
    torch.testing.assert_close(part, full[:, 4:], rtol=0, atol=0)
    x = torch.zeros(6, 1, 3, 3)
    probes = per_item_probes("rademacher", 3, x, 4, range(6))
    torch.testing.assert_close(per_item_probes("rademacher", 3, x[:2], 4, [2, 3]), probes[:, 2:4], rtol=0, atol=0)
    with pytest.raises(TypeError, match="need an int seed"):
        per_item_probes("rademacher", 1, x, None, range(6))


@pytest.mark.parametrize("solver", sdegen.solvers())
def test_every_solver_is_split_invariant_or_warns(solver):
    """Blocks run as ranks (split=(r, 2)) equal one process bit for bit, except the declared batch-coupled ones."""
    from sdegen.samplers._split import not_split_invariant
    from sdegen.samplers.registry import SOLVERS

    sde, kw = sdegen.VPSDE(), {"solver": solver, "steps": 6, "seed": 2}
    single = sdegen.sample(sde, MIX.score_fn(sde), (5, 2), **kw)
    coupled = not_split_invariant(solver, {**SOLVERS[solver].options})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parts = [sdegen.sample(sde, MIX.score_fn(sde), (5, 2), split=(r, 2), **kw) for r in range(2)]
    assert any("not split-invariant" in str(w.message) for w in caught) == bool(coupled)
    if not coupled:
        np.testing.assert_array_equal(np.concatenate([p["x"].values for p in parts], axis=1), single["x"].values)
        assert [p.attrs["nfe"] for p in parts] == [single.attrs["nfe"]] * 2
