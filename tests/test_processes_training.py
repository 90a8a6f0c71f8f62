"""Bridge recipes train through the `sdegen train` loop: config, checkpoints, resume, EMA model file, sampling."""

from __future__ import annotations

import json

import pytest
import torch

from sdegen import processes as P
from sdegen.config import ConfigError, load_config
from sdegen.processes.trainer import load_bridge_model
from sdegen.training import train


def _cfg(tmp_path, name: str, steps: int, *extra: str):
    return load_config(
        name,
        [f"out_dir={tmp_path / 'run'}", f"steps={steps}", "checkpoint_every=2", "val_every=2", "log_every=1",
         "data.val_size=32", "batch_size=16", "data.num_samples=200", *extra],
    )  # fmt: skip


def test_circle_recipe_trains_resumes_and_samples(tmp_path):
    first = train(_cfg(tmp_path, "circle_bridge", 4), resume=False, progress=False)
    assert first.step == 4
    resumed = train(_cfg(tmp_path, "circle_bridge", 6), progress=False)
    assert resumed.step == 6
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6] and all(
        "val_loss" in r for r in lines if r["step"] % 2 == 0
    )
    process, net, cfg = load_bridge_model(resumed.model)
    assert isinstance(process, P.WrappedBrownian) and cfg.process.name == "circle_mixture"
    x_T = process.sample_equilibrium((8,), torch.Generator().manual_seed(0))
    with torch.no_grad():
        ds = P.sample_backward(process, net, x_T, P.time_grid("log", cfg.process.t_min, cfg.process.t_max, 5), seed=0)
    assert ds["x"].attrs["kind"] == "angle" and ds.attrs["nfe"] == 5


@pytest.mark.slow
def test_joint_recipe_with_self_conditioning_trains(tmp_path):
    res = train(_cfg(tmp_path, "mnist_label_bridge", 2, "data.name=mnist-subset"), resume=False, progress=False)
    process, net, cfg = load_bridge_model(res.model)
    assert isinstance(process, P.Joint) and cfg.process.self_condition
    x_T = process.sample_equilibrium(((2, 1, 28, 28), (2,)), torch.Generator().manual_seed(0))
    with torch.no_grad():
        ds = P.sample_backward(process, net, x_T, P.time_grid("log", 1e-3, 8.0, 3), seed=0, self_condition=True)
    assert ds["x_1"].dtype.kind == "i" and ds["x0_hat_1"].shape == (3, 2, 10)


def test_bad_recipe_configs(tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe"):
        load_config("circle_bridge", ["process.name=torus"])
    with pytest.raises(ConfigError, match="t_min"):
        load_config("circle_bridge", ["process.t_min=2.0", "process.t_max=1.0"])
    with pytest.raises(ValueError, match="self-conditioning"):
        train(_cfg(tmp_path, "circle_bridge", 2, "process.self_condition=true"), resume=False, progress=False)
