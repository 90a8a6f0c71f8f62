"""Fault injection: nothing is lost and every error is named.

For sampling (API and CLI), likelihood and training, each fault must leave every earlier file intact, a
readable partial file where one is promised (`<out>.partial`), and a one-line error naming the path and the
cause, with the exit code of its kind (`sdegen._io.EXIT_*`):

* a kill at a random point (SIGKILL of a subprocess, several seeds);
* a failure injected mid-write (`OSError(ENOSPC)` raised from the writer);
* two writers on one path;
* a read-only target (a sysfs path, which refuses even root, and an injected EROFS);
* training divergence, which must stop before any NaN weights are written.

Then the smaller items of the same issue, one test each.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import torch

import sdegen
from sdegen import _io
from sdegen._io import (
    EXIT_BUSY,
    EXIT_DIVERGED,
    EXIT_NO_SPACE,
    EXIT_NOT_WRITABLE,
    EXIT_USAGE,
    FileLock,
    FileLockedError,
)
from sdegen.checkpoint import CheckpointError, read_checkpoint
from sdegen.cli import main
from sdegen.results import ResultWriter
from sdegen.training import RunDirectoryError, Trainer, TrainingDivergedError, train
from sdegen.trajectory import IncompleteTrajectoryWarning, TrajectoryError, TrajectoryWriter

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist"
READ_ONLY = Path("/sys/sdegen-test")  # sysfs refuses new files, even to root
OLD = b"an earlier result that must survive\n"
ATTRS = {"sdegen_version": "test", "sde": "vp", "solver": "euler", "steps": 1, "nfe": 0, "seed": 0, "t_min": 1e-3}


def _sysfs_refuses() -> bool:
    try:
        _io.check_output_file(READ_ONLY / "x.nc")
    except OSError:
        return True
    return False


needs_read_only = pytest.mark.skipif(not _sysfs_refuses(), reason="needs /sys, which refuses new files")
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason="needs the MNIST test split in ../shared/data/mnist")


def _score(x, t):  # the exact score of N(0, I) data under the VP SDE: -x (cheap and finite)
    return -x


def _sde_and_score():
    return sdegen.VPSDE(), _score


def _earlier(path: Path) -> Path:
    path.write_bytes(OLD)
    return path


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.startswith("sdegen ")]
    assert len(lines) == 1, text
    return lines[0]


def _readable_partial(path: Path, at_least: int = 1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteTrajectoryWarning)
        ds = sdegen.open_trajectory(path)
    assert ds.attrs["complete"] == 0 and ds.sizes["time"] >= at_least
    assert np.all(np.diff(ds["time"].values) < 0)  # saved states from T downwards
    return ds


# -- a kill at a random point --------------------------------------------------------------------------------
def _kill_when(proc: subprocess.Popen, ready: Path, seed: int, spread: float) -> None:
    """SIGKILL `proc` a random time (seeded) after `ready` appears."""
    deadline = time.time() + 120
    while not ready.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0.3, spread))  # >= 0.3 s: past the first record
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _spawn(code: str, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=stdout)


API_CHILD = """
import time, sdegen
def score(x, t):
    time.sleep(0.0005)
    return -x
sdegen.sample(sdegen.VPSDE(), score, (16, 2), steps=200000, save_every=500, seed={seed}, out={out!r})
"""


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_sample_api_killed_at_a_random_point(tmp_path, seed):
    out = _earlier(tmp_path / "x.nc")
    proc = _spawn(API_CHILD.format(seed=seed, out=str(out)))
    partial = tmp_path / "x.nc.partial"
    try:
        deadline = time.time() + 120
        while not partial.exists() and time.time() < deadline:
            time.sleep(0.02)
        # a second writer, in another process, is refused while the first runs
        with pytest.raises(FileLockedError, match=f"pid {proc.pid}"):
            TrajectoryWriter(out, (16, 2), attrs={})
        with pytest.raises(TrajectoryError, match="being written"):
            sdegen.open_trajectory(partial)
    finally:
        _kill_when(proc, partial, seed, 1.2)
    assert out.read_bytes() == OLD  # the earlier file is untouched
    ds = _readable_partial(partial)
    assert ds.attrs["seed"] == seed
    # the next run of the same path completes and replaces the target; nothing is left beside it
    sdegen.sample(sdegen.VPSDE(), _score, (16, 2), steps=4, seed=seed, out=out)
    assert sdegen.open_trajectory(out).attrs["complete"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nc"]


@pytest.mark.parametrize("seed", [3, pytest.param(4, marks=pytest.mark.slow)])
def test_sample_cli_streams_and_a_kill_leaves_the_partial_file(tmp_path, seed):
    out = _earlier(tmp_path / "x.nc")
    code = (
        f"import sys; from sdegen.cli import main; sys.exit(main(['sample', 'toy', '--steps', '60000', "
        f"'--num-samples', '16', '--seed', '{seed}', '--out', {str(out)!r}]))"
    )
    proc = _spawn(code)
    _kill_when(proc, tmp_path / "x.nc.partial", seed, 1.5)
    assert out.read_bytes() == OLD
    ds = _readable_partial(tmp_path / "x.nc.partial")
    assert ds.attrs["seed"] == seed and ds.attrs["guidance"] == 0.0


@pytest.mark.slow
@needs_mnist
def test_likelihood_cli_killed_keeps_the_rows_so_far(tmp_path):
    out = _earlier(tmp_path / "ll.nc")
    code = (
        f"import sys; from sdegen.cli import main; sys.exit(main(['likelihood', 'mnist-likelihood-fast', "
        f"'--data', {str(MNIST)!r}, '--num', '40', '--batch-size', '1', '--rtol', '1e-2', '--atol', '1e-2', "
        f"'--out', {str(out)!r}]))"
    )
    proc = _spawn(code, stdout=subprocess.PIPE)
    proc.stdout.readline()  # "images 0..0: ... bits/dim": printed once the row is on disk
    _kill_when(proc, tmp_path / "ll.nc.partial", 5, 0.6)
    assert out.read_bytes() == OLD
    with netCDF4.Dataset(tmp_path / "ll.nc.partial") as nc:
        assert nc.getncattr("complete") == 0 and len(nc.dimensions["image"]) >= 1
        assert np.all(np.isfinite(nc["bpd"][:]))


TRAIN_CHILD = """
import sys; sys.path.insert(0, {tests!r}); from _tiny import tiny_config; from sdegen.training import train
train(tiny_config({out!r}, 'steps=100000', 'checkpoint_every=10', 'val_every=0', 'log_every=3'), progress=False)
"""


@pytest.mark.parametrize("seed", [6, pytest.param(7, marks=pytest.mark.slow)])
def test_training_killed_at_a_random_point_resumes(tmp_path, seed):
    run = tmp_path / "run"
    proc = _spawn(TRAIN_CHILD.format(tests=str(REPO / "tests"), out=str(run)))
    try:
        deadline = time.time() + 120
        while not (run / "checkpoint.pt").exists() and time.time() < deadline:
            time.sleep(0.02)
        with pytest.raises(FileLockedError, match=f"run directory.*pid {proc.pid}"):  # a second training
            train(tiny_config(run, "steps=100000"), progress=False)
    finally:
        _kill_when(proc, run / "checkpoint.pt", seed, 0.5)
    step = read_checkpoint(run / "checkpoint.pt").state["step"]  # intact: atomic writes
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 99999, "lo')  # what a kill in the middle of a metrics line leaves
    result = train(
        tiny_config(run, f"steps={step + 5}", "checkpoint_every=10", "val_every=0", "log_every=3"), progress=False
    )
    assert result.step == step + 5
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == step + 5 and all(x["step"] <= step + 5 for x in lines)
    assert not list(run.glob(".*.tmp")) and not (run / "train.lock").exists()


# -- a failure injected mid-write: no space left on device ---------------------------------------------------
def _enospc_on_call(n: int):
    calls = {"n": 0}

    def write(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(self, *args, **kwargs)

    original = TrajectoryWriter._write_record
    return write


def test_sample_api_disk_full_mid_write(tmp_path, monkeypatch):
    out = _earlier(tmp_path / "x.nc")
    monkeypatch.setattr(TrajectoryWriter, "_write_record", _enospc_on_call(3))
    sde, score = _sde_and_score()
    with pytest.raises(OSError) as info:
        sdegen.sample(sde, score, (8, 2), steps=20, save_every=2, seed=0, out=out)
    err = info.value
    assert err.errno == errno.ENOSPC and err.filename == str(out)
    assert "No space left on device" in str(err) and "x.nc.partial" in str(err)
    assert out.read_bytes() == OLD
    assert _readable_partial(tmp_path / "x.nc.partial", 2).sizes["time"] == 2  # the two records before the fault
    assert not (tmp_path / "x.nc.lock").exists()


def test_sample_cli_disk_full_is_one_line_with_its_exit_code(tmp_path, monkeypatch, capsys):
    out = _earlier(tmp_path / "x.nc")
    monkeypatch.setattr(TrajectoryWriter, "_write_record", _enospc_on_call(2))
    code = main(["sample", "toy", "--steps", "10", "--num-samples", "4", "--save-every", "1", "--out", str(out)])
    assert code == EXIT_NO_SPACE
    line = _one_line(capsys.readouterr().err)
    assert f"{out}: No space left on device" in line and "x.nc.partial" in line
    assert out.read_bytes() == OLD


def test_likelihood_results_disk_full_mid_write(tmp_path, monkeypatch):
    out = _earlier(tmp_path / "ll.nc")
    writer = ResultWriter(out, "image", {"bpd": "f8"}, attrs={"model": "test"})
    writer.append(bpd=np.array([1.5, 1.6]))

    def full(self, *args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ResultWriter, "_write_rows", full)
    with pytest.raises(OSError, match="No space left on device.*ll.nc.partial") as info:
        writer.append(bpd=np.array([1.7]))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(out)
    writer.abort(info.value)
    assert out.read_bytes() == OLD
    with netCDF4.Dataset(tmp_path / "ll.nc.partial") as nc:
        assert list(nc["bpd"][:]) == [1.5, 1.6] and nc.getncattr("complete") == 0


def _full_disk_on_checkpoint(monkeypatch, after: int) -> None:
    import sdegen.checkpoint as ck

    calls = {"n": 0}
    original = ck.atomic_torch_save

    def save(obj, path):
        calls["n"] += 1
        if calls["n"] <= after:
            return original(obj, path)
        with _io.atomic_path(path) as tmp:  # half a file, then the disk is full
            tmp.write_bytes(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ck, "atomic_torch_save", save)


def test_training_disk_full_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    train(tiny_config(tmp_path, "steps=4"), progress=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    _full_disk_on_checkpoint(monkeypatch, after=0)
    code = main(
        [
            "train",
            "toy",
            "--set",
            "net.mlp.hidden=16",
            "--set",
            "net.mlp.depth=1",
            "--set",
            "batch_size=32",
            "--set",
            "data.num_samples=400",
            "--set",
            "data.val_size=64",
            "--set",
            "optim.warmup_steps=3",
            "--set",
            "log_every=2",
            "--set",
            "val_every=4",
            "--set",
            "checkpoint_every=4",
            "--set",
            "device=cpu",
            "--set",
            f"out_dir={tmp_path}",
            "--set",
            "steps=8",
        ]
    )
    assert code == EXIT_NO_SPACE
    assert f"{tmp_path / 'checkpoint.pt'}: No space left on device" in _one_line(capsys.readouterr().err)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "train.lock").exists()


# -- two writers on one path ---------------------------------------------------------------------------------
def test_two_writers_on_one_trajectory_path(tmp_path, capsys):
    out = tmp_path / "x.nc"
    first = TrajectoryWriter(out, (4, 2), attrs={**ATTRS, "solver": "first"})
    first.append(1.0, np.zeros((4, 2), np.float32), 1.0, 0.0)
    calls = []

    def score(x, t):
        calls.append(1)
        return -x

    with pytest.raises(FileLockedError, match=f"trajectory {out} is in use by another process \\(pid {os.getpid()}"):
        sdegen.sample(sdegen.VPSDE(), score, (4, 2), steps=5, seed=0, out=out)
    assert not calls  # refused before any work
    assert main(["sample", "toy", "--steps", "5", "--num-samples", "4", "--out", str(out)]) == EXIT_BUSY
    assert "in use by another process" in _one_line(capsys.readouterr().err)
    first.close({"nfe": 1}, complete=True)  # the first writer is undisturbed
    ds = sdegen.open_trajectory(out)
    assert ds.attrs["solver"] == "first" and ds.sizes["time"] == 1


def test_two_writers_on_one_results_path(tmp_path):
    out = tmp_path / "ll.nc"
    with FileLock(tmp_path / "ll.nc.lock", "results file"):
        with pytest.raises(FileLockedError, match="ll.nc"):
            ResultWriter(out, "image", {"bpd": "f8"}, attrs={})
    assert not out.exists()


def test_two_trainings_on_one_run_directory(tmp_path, capsys):
    with FileLock(tmp_path / "train.lock", f"run directory {tmp_path}"):
        with pytest.raises(FileLockedError, match="run directory"):
            train(tiny_config(tmp_path, "steps=2"), progress=False)
        assert main(["train", "toy", "--set", f"out_dir={tmp_path}", "--set", "steps=2"]) == EXIT_BUSY
    assert "in use by another process" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "metrics.jsonl").exists()


# -- read-only targets ---------------------------------------------------------------------------------------
def _no_work(monkeypatch):
    """Make any sampling or likelihood computation fail loudly: the checks must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the output path was checked")

    monkeypatch.setattr(sdegen, "sample", forbidden)
    monkeypatch.setattr(sdegen, "bits_per_dim", forbidden)


@needs_read_only
@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "toy", "--steps", "5", "--num-samples", "4", "--out", "{ro}/x.nc"],
        ["likelihood", "toy", "--data", ".", "--out", "{ro}/ll.nc"],
        ["plot", "{nc}", "--out", "{ro}/fig.png"],
        ["demo", "--out", "{ro}/demo"],
        ["train", "toy", "--set", "out_dir={ro}/run", "--set", "steps=2"],
    ],
)
def test_read_only_targets_fail_before_work_in_one_line(argv, tmp_path, monkeypatch, capsys):
    nc = tmp_path / "t.nc"
    sdegen.sample(sdegen.VPSDE(), _score, (4, 2), steps=2, seed=0, out=nc)
    _no_work(monkeypatch)
    argv = [a.format(ro=READ_ONLY, nc=nc) for a in argv]
    assert main(argv) == EXIT_NOT_WRITABLE
    line = _one_line(capsys.readouterr().err)
    assert str(READ_ONLY) in line and ("Permission denied" in line or "not permitted" in line), line


def test_read_only_file_system_is_named(tmp_path, monkeypatch, capsys):
    def erofs(directory):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(directory))

    monkeypatch.setattr(_io, "_probe", erofs)
    _no_work(monkeypatch)
    out = tmp_path / "x.nc"
    assert main(["sample", "toy", "--steps", "5", "--num-samples", "4", "--out", str(out)]) == EXIT_NOT_WRITABLE
    assert f"{out}: Read-only file system" in _one_line(capsys.readouterr().err)
    with pytest.raises(OSError, match="Read-only file system") as info:
        train(tiny_config(tmp_path / "run", "steps=2"), progress=False)
    assert info.value.errno == errno.EROFS and info.value.filename == str(tmp_path / "run")


@needs_read_only
def test_api_sample_to_a_read_only_place_fails_before_work():
    calls = []

    def score(x, t):
        calls.append(1)
        return -x

    with pytest.raises(PermissionError, match=str(READ_ONLY)):
        sdegen.sample(sdegen.VPSDE(), score, (4, 2), steps=5, seed=0, out=READ_ONLY / "x.nc")
    assert not calls


# -- training divergence -------------------------------------------------------------------------------------
def test_divergence_stops_before_writing_nan_weights(tmp_path, capsys):
    code = main(
        [
            "train",
            "toy",
            "--set",
            "steps=2",
            "--set",
            "log_every=1",
            "--set",
            "optim.lr=1e30",
            "--set",
            "net.mlp.hidden=16",
            "--set",
            "net.mlp.depth=1",
            "--set",
            "data.num_samples=400",
            "--set",
            "data.val_size=64",
            "--set",
            "batch_size=32",
            "--set",
            f"out_dir={tmp_path}",
        ]
    )
    assert code == EXIT_DIVERGED
    line = _one_line(capsys.readouterr().err)
    assert "diverged" in line and "no checkpoint was written" in line
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "model.pt").exists()


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original = Trainer.loss

    def nan_after_step_4(self, batch, model=None):
        loss = original(self, batch, model)
        return loss * float("nan") if self.step >= 4 and model is None else loss

    monkeypatch.setattr(Trainer, "loss", nan_after_step_4)
    kept = r"11 steps in a row after step 4.*checkpoint.pt \(step 4\) is kept"
    with pytest.raises(TrainingDivergedError, match=kept):
        train(tiny_config(tmp_path, "steps=12"), progress=False)
    ck = read_checkpoint(tmp_path / "checkpoint.pt")
    assert ck.state["step"] == 4
    assert all(torch.isfinite(v).all() for v in ck.state["model"].values())
    assert not (tmp_path / "model.pt").exists()


def test_a_few_non_finite_steps_are_skipped_and_counted(tmp_path, monkeypatch):
    original = Trainer.loss
    bad = {"left": 2}

    def two_nan_steps(self, batch, model=None):
        loss = original(self, batch, model)
        if self.step == 3 and model is None and bad["left"]:
            bad["left"] -= 1
            return loss * float("inf")
        return loss

    monkeypatch.setattr(Trainer, "loss", two_nan_steps)
    result = train(tiny_config(tmp_path, "steps=6", "max_skipped_steps=2"), progress=False)
    assert result.step == 6 and np.isfinite(result.loss)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["skipped_steps"] == 2


def test_non_finite_weights_are_never_saved(tmp_path):
    tr = Trainer(tiny_config(tmp_path, "steps=2"), verbose=False)
    tr.save(tmp_path / "checkpoint.pt")
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with torch.no_grad():
        tr._params[0][0] = float("nan")
    with pytest.raises(TrainingDivergedError, match="model weights hold NaN"):
        tr.save(tmp_path / "checkpoint.pt")
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


# -- run directories -----------------------------------------------------------------------------------------
def test_run_directory_without_checkpoint_is_refused_unless_forced(tmp_path, capsys):
    train(tiny_config(tmp_path, "steps=2"), progress=False)
    (tmp_path / "checkpoint.pt").unlink()
    model_before = (tmp_path / "model.pt").read_bytes()
    with pytest.raises(RunDirectoryError, match="no checkpoint.pt"):
        train(tiny_config(tmp_path, "steps=2"), progress=False)
    assert main(["train", "toy", "--set", f"out_dir={tmp_path}", "--set", "steps=2"]) == EXIT_BUSY
    assert "--force" in _one_line(capsys.readouterr().err)
    assert (tmp_path / "model.pt").read_bytes() == model_before
    assert train(tiny_config(tmp_path, "steps=2"), progress=False, force=True).step == 2


def test_no_resume_over_a_finished_run_is_refused_unless_forced(tmp_path, capsys):
    train(tiny_config(tmp_path, "steps=2"), progress=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    base = [
        "train",
        "toy",
        "--set",
        f"out_dir={tmp_path}",
        "--set",
        "steps=2",
        "--set",
        "net.mlp.hidden=16",
        "--set",
        "net.mlp.depth=1",
        "--set",
        "data.num_samples=400",
        "--set",
        "batch_size=32",
        "--set",
        "data.val_size=64",
    ]
    assert main([*base, "--no-resume"]) == EXIT_BUSY
    assert "would overwrite" in _one_line(capsys.readouterr().err)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert main([*base, "--no-resume", "--force"]) == 0


def test_out_dir_that_is_a_file_is_refused_before_work(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["train", "toy", "--set", f"out_dir={tmp_path / 'file'}"]) == EXIT_NOT_WRITABLE
    assert "is not a directory" in _one_line(capsys.readouterr().err)


def test_model_file_as_checkpoint_and_corrupt_metrics_are_named(tmp_path):
    train(tiny_config(tmp_path, "steps=2"), progress=False)
    (tmp_path / "checkpoint.pt").write_bytes((tmp_path / "model.pt").read_bytes())
    with pytest.raises(CheckpointError, match="checkpoint.pt: is a model file"):
        train(tiny_config(tmp_path, "steps=4"), progress=False)
    train(tiny_config(tmp_path / "b", "steps=2"), progress=False)
    metrics = tmp_path / "b" / "metrics.jsonl"
    metrics.write_text("not json\n" + metrics.read_text())
    with pytest.raises(ValueError, match="metrics.jsonl: line 1 is not a JSON record"):
        train(tiny_config(tmp_path / "b", "steps=4"), progress=False)


# -- the smaller items ---------------------------------------------------------------------------------------
def test_stale_temporaries_of_dead_writers_are_cleaned(tmp_path):
    target = tmp_path / "checkpoint.pt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".checkpoint.pt.{dead.pid}.deadbeef.tmp.pt"
    live = tmp_path / f".checkpoint.pt.{os.getpid()}.cafecafe.tmp.pt"  # a writer still at work: kept
    legacy_old = tmp_path / ".checkpoint.pt.k2j4h5g6.tmp"  # mkstemp names of older versions: no pid
    legacy_new = tmp_path / ".checkpoint.pt.a1b2c3d4.tmp"
    for p in (stale, live, legacy_old, legacy_new):
        p.write_bytes(b"x")
    os.utime(legacy_old, (time.time() - 7200, time.time() - 7200))
    sdegen.checkpoint.save_checkpoint(target, {"w": torch.ones(2)}, "{}")
    assert not stale.exists() and not legacy_old.exists()
    assert live.exists() and legacy_new.exists()  # perhaps still being written


def test_random_bytes_are_not_a_checkpoint_and_no_advice_to_unpickle(tmp_path):
    bad = tmp_path / "random.pt"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(CheckpointError, match="random.pt: not an sdegen checkpoint") as info:
        read_checkpoint(bad)
    assert "weights_only=False" not in str(info.value)
    import pickle
    import zipfile

    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as z:  # a torch-like zip whose pickle would run code
        z.writestr("evil/data.pkl", pickle.dumps(print))
    with pytest.raises(CheckpointError, match="evil.pt") as info:
        read_checkpoint(evil)
    assert "weights_only=False" not in str(info.value)


def test_open_trajectory_warns_on_a_partial_file(tmp_path):
    w = TrajectoryWriter(tmp_path / "x.nc", (2, 2), attrs=ATTRS)
    w.append(1.0, np.zeros((2, 2), np.float32), 1.0, 0.0)
    partial = w.close(complete=False)
    with pytest.warns(IncompleteTrajectoryWarning, match="did not complete: 1 saved state"):
        sdegen.open_trajectory(partial)
    with pytest.raises(FileNotFoundError, match="x.nc.partial"):  # the missing target points to the partial file
        sdegen.open_trajectory(tmp_path / "x.nc")


@pytest.mark.parametrize("seed", [2**63, 2**64, -1, 1.5, True])
def test_seeds_outside_0_to_2_63_are_refused_by_the_api(seed):
    sde = sdegen.VPSDE()
    with pytest.raises((ValueError, TypeError), match="seed"):
        sdegen.sample(sde, _score, (2, 2), steps=2, seed=seed)
    with pytest.raises((ValueError, TypeError), match="seed"):
        sdegen.log_likelihood(sde, _score, torch.zeros(2, 2), seed=seed)


def test_seed_2_63_minus_1_is_accepted_and_recorded():
    ds = sdegen.sample(sdegen.VPSDE(), _score, (2, 2), steps=2, seed=2**63 - 1)
    assert ds.attrs["seed"] == 2**63 - 1


def test_cli_seed_out_of_range_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main(["sample", "toy", "--seed", "18446744073709551616", "--out", "x.nc"])
    assert info.value.code == EXIT_USAGE and "2**63" in capsys.readouterr().err


def test_log_likelihood_of_an_empty_batch_is_named():
    with pytest.raises(ValueError, match="x is empty"):
        sdegen.log_likelihood(sdegen.VPSDE(), _score, torch.zeros(0, 2))


def test_option_with_a_bad_value_names_the_option(tmp_path, capsys):
    code = main(
        [
            "sample",
            "toy",
            "--solver",
            "ode",
            "--steps",
            "5",
            "--num-samples",
            "4",
            "--option",
            "rtol=abc",
            "--out",
            str(tmp_path / "x.nc"),
        ]
    )
    assert code == EXIT_USAGE
    assert "rtol must be a finite number > 0, got 'abc'" in _one_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # a partial file without any state is not kept


def test_a_failed_stream_without_records_leaves_nothing(tmp_path):
    w = TrajectoryWriter(tmp_path / "x.nc", (2, 2), attrs=ATTRS)
    err = ValueError("failed before the first state")
    assert w.abort(err) is None and not getattr(err, "__notes__", None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("out", ["", "{tmp}"])
def test_empty_or_directory_out_is_refused_before_work(out, tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    code = main(["sample", "toy", "--steps", "5", "--out", out.format(tmp=tmp_path)])
    assert code == EXIT_NOT_WRITABLE
    assert ("empty --out path" if not out else "is a directory") in _one_line(capsys.readouterr().err)


def test_likelihood_of_a_model_without_image_shape_fails_before_work(monkeypatch, capsys, tmp_path):
    _no_work(monkeypatch)
    assert main(["likelihood", "toy", "--data", str(tmp_path), "--out", str(tmp_path / "ll.nc")]) == EXIT_USAGE
    assert "28x28 images" in _one_line(capsys.readouterr().err)


def test_dry_run_into_a_closed_pipe_exits_quietly():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        f"{sys.executable} -m sdegen.cli train toy --dry-run | head -c 1 > /dev/null; echo ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() in ("0", str(_io.EXIT_BROKEN_PIPE))


def test_resumed_run_logs_the_loss_of_a_full_window(tmp_path, monkeypatch):
    full, split = tmp_path / "full", tmp_path / "split"
    extra = ("steps=8", "log_every=4", "checkpoint_every=3", "val_every=0")
    train(tiny_config(full, *extra), progress=False)
    original = Trainer.train_step

    def killed_at_7(self):
        if self.step == 7:
            raise KeyboardInterrupt  # after the checkpoint at step 6, two steps into the window 5..8
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", killed_at_7)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(split, *extra), progress=False)
    monkeypatch.setattr(Trainer, "train_step", original)
    train(tiny_config(split, *extra), progress=False)

    def losses(path):
        return [(x["step"], x["loss"]) for x in map(json.loads, (path / "metrics.jsonl").read_text().splitlines())]

    assert losses(full) == losses(split)  # step 8 averages steps 5..8 in both, not 7..8 after the resume


def test_nan_in_init_is_named():
    with pytest.raises(ValueError, match="init contains"):
        sdegen.sample(sdegen.VPSDE(), _score, (2, 2), steps=2, seed=0, init=torch.full((2, 2), float("nan")))


def test_discrete_betas_of_zero_steps_is_named():
    with pytest.raises(ValueError, match="num_steps"):
        sdegen.VPSDE().discrete_betas(0)


def test_labels_must_match_the_labels_the_score_is_conditioned_on():
    model = sdegen.load_model("mnist")
    y = torch.tensor([1, 2])
    score = model.score_model.score_fn(y)
    with pytest.raises(ValueError, match="conditioned on"):
        sdegen.sample(model.sde, score, (2, 1, 28, 28), steps=1, seed=0, labels=[2, 1])
    ds = sdegen.sample(model.sde, score, (2, 1, 28, 28), steps=1, seed=0, labels=[1, 2])
    assert ds.label.values.tolist() == [1, 2]
