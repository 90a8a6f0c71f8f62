"""Training: configs (typed overrides, clear errors), the loop's outputs, exact resume, batches."""

import dataclasses
import inspect
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _tiny import TINY, tiny_config

from sdegen.checkpoint import read_checkpoint, save_checkpoint
from sdegen.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    config_to_json,
    load_config,
    make_score_model,
    shipped_configs,
)
from sdegen.nets import NETS
from sdegen.training import RunDirectoryError, Trainer, learning_rate, train

REPO = Path(__file__).resolve().parents[1]


def test_config_overrides_are_typed():
    cfg = load_config(
        "toy",
        [
            "optim.lr=3e-4",
            "net.unet.channel_mult=1,2",
            "data.range=[-1,1]",
            "data.conditional=true",
            "out_dir=runs/x y",
            "steps=7",
        ],
    )
    assert cfg.optim.lr == 3e-4 and cfg.net.unet.channel_mult == (1, 2) and cfg.data.range == (-1.0, 1.0)
    assert cfg.data.conditional is True and cfg.out_dir == "runs/x y" and cfg.steps == 7
    assert config_from_dict(json.loads(config_to_json(cfg))) == cfg  # JSON round trip


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrate=1", "unknown config key 'optim.lrate'.*valid keys"),
        ("nope=1", "unknown config key 'nope'"),
        ("optim.lr=-1", "optim.lr: must be a finite number > 0"),
        ("steps=1.5", "steps: expected an integer"),
        ("steps=0", "steps: must be > 0"),
        ("data.conditional=yes", "expected true or false"),
        ("net.unet.channel_mult=[1,2.5]", "expected an integer"),
        ("data.range=[1,2,3]", "expected 2 values"),
        ("sde.name=ode", "unknown SDE"),
        ("loss.name=l1", "unknown loss"),
        ("optim=3", "expected an object"),
        ("steps", "KEY=VALUE"),
        ("steps.x=1", "not a section"),
        ("score.input_frequencies=[256,-1]", "score.input_frequencies: must be finite numbers > 0"),
        ("optim.schedule=linear", "optim.schedule: unknown 'linear'"),
        ("optim.final_lr_ratio=2", "optim.final_lr_ratio: must lie in"),
    ],
)
def test_bad_overrides_raise_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("toy", [override])


def test_learning_rate_schedules_warm_up_then_hold_or_follow_the_cosine():
    steps, warm, lr = 1000, 100, 1e-3
    const = load_config("toy", [f"optim.lr={lr}", f"optim.warmup_steps={warm}"]).optim
    cos = load_config("toy", [f"optim.lr={lr}", f"optim.warmup_steps={warm}", "optim.schedule=cosine",
                              "optim.final_lr_ratio=0.1"]).optim  # fmt: skip
    for step in (0, 49, 99):  # the same linear warm-up for both
        assert learning_rate(const, step, steps) == learning_rate(cos, step, steps) == lr * (step + 1) / warm
    assert all(learning_rate(const, k, steps) == lr for k in (100, 500, 999))
    mid = warm - 1 + (steps - warm) // 2  # p = 1/2: halfway between lr and lr_end
    assert math.isclose(learning_rate(cos, mid, steps), 0.1 * lr + 0.9 * lr / 2, rel_tol=1e-12)
    assert math.isclose(learning_rate(cos, steps - 1, steps), 0.1 * lr, rel_tol=1e-12)  # the last step: lr_end
    decay = [learning_rate(cos, k, steps) for k in range(warm, steps)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))  # strictly decreasing after warm-up


def test_bad_config_files(tmp_path):
    (tmp_path / "a.json").write_text('{"optim": {"lr": 1e-3, "momentum": 0.9}}')
    with pytest.raises(ConfigError, match=r"a\.json.*'optim\.momentum'"):
        load_config(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"steps": 10,}')
    with pytest.raises(ConfigError, match=r"b\.json: invalid JSON"):
        load_config(tmp_path / "b.json")
    with pytest.raises(ConfigError, match="shipped recipe"):
        load_config(tmp_path / "missing.json")


def test_shipped_configs_build_their_networks():
    assert {"mnist", "mnist_eps", "mnist_likelihood", "toy"} <= set(shipped_configs())
    for name in shipped_configs():
        cfg = load_config(name)
        shape = (2,) if cfg.net.name == "mlp" else (1, 28, 28)
        model = make_score_model(cfg, shape, None)
        assert model(torch.zeros(1, *shape), 0.5).shape == (1, *shape)
    with pytest.raises(ConfigError, match="input_frequencies.*the mlp net takes no extra inputs"):
        make_score_model(load_config("toy", ["score.input_frequencies=[256]"]), (2,), None)
    # Each network section lists only constructor arguments of its class.
    for name, cls in NETS.items():
        fields = {f.name for f in dataclasses.fields(getattr(TrainConfig().net, name))}
        assert fields <= set(inspect.signature(cls).parameters), name


def test_training_writes_outputs_and_leaves_global_rng_alone(tmp_path):
    rng = torch.random.get_rng_state()
    result = train(tiny_config(tmp_path, "steps=6"), resume=False, progress=False)
    assert torch.equal(rng, torch.random.get_rng_state())
    assert result.step == 6 and math.isfinite(result.loss) and math.isfinite(result.val_loss)
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.pt", "model.pt", "metrics.jsonl", "config.json"}
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4, 6] and "val_loss" in lines[1] and "val_loss" not in lines[0]
    assert all(x["images_per_s"] > 0 and x["lr"] > 0 for x in lines)
    assert load_config(tmp_path / "config.json") == tiny_config(tmp_path, "steps=6")


def _state(path):
    return read_checkpoint(path).state


def _assert_same_state(a, b):
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for i, st in a["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, b["optimizer"]["state"][i][k])
    for k in ("step", "pos"):
        assert a[k] == b[k]
    for k in ("perm", "data_gen", "noise_gen"):
        assert torch.equal(a[k], b[k])


def test_resume_continues_bitwise_like_an_uninterrupted_run(tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    train(tiny_config(full, "steps=14"), resume=False, progress=False)
    train(tiny_config(split, "steps=6"), resume=False, progress=False)  # "killed" after the step-6 checkpoint
    train(tiny_config(split, "steps=14"), progress=False)  # resumes at 6
    a, b = _state(full / "checkpoint.pt"), _state(split / "checkpoint.pt")
    assert a["step"] == 14 and a["pos"] > 0
    _assert_same_state(a, b)

    def strip(p):  # metric lines without wall-clock throughput and validation (the short run validates at its end)
        drop = ("images_per_s", "val_loss")
        return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in p.read_text().splitlines()]

    assert strip(full / "metrics.jsonl") == strip(split / "metrics.jsonl")
    # A fresh run (resume=False) over a run is refused; with force=True it starts over.
    with pytest.raises(RunDirectoryError, match="--force"):
        train(tiny_config(split, "steps=2"), resume=False, progress=False)
    assert train(tiny_config(split, "steps=2"), resume=False, progress=False, force=True).step == 2


def test_resume_refuses_a_different_recipe(tmp_path):
    train(tiny_config(tmp_path, "steps=2"), resume=False, progress=False)
    with pytest.raises(ValueError, match=r"cannot resume.*optim\.lr"):
        train(tiny_config(tmp_path, "steps=4", "optim.lr=1e-2"), progress=False)


def test_resume_ignores_where_init_from_pointed(tmp_path):
    base = tmp_path / "base"
    train(tiny_config(base, "steps=2"), resume=False, progress=False)
    run = tmp_path / "run"
    train(tiny_config(run, "steps=2", f"init_from={base}/checkpoint.pt"), resume=False, progress=False)
    moved = tmp_path / "moved.pt"
    (base / "checkpoint.pt").rename(moved)  # the starting model was moved: the run still resumes from its own state
    assert train(tiny_config(run, "steps=4", f"init_from={moved}"), progress=False).step == 4


def test_resume_reads_a_checkpoint_written_before_a_config_field_existed(tmp_path):
    train(tiny_config(tmp_path, "steps=2"), resume=False, progress=False)
    ck = read_checkpoint(tmp_path / "checkpoint.pt")
    old = json.loads(ck.config_json)
    del old["init_from"]  # as written by a version without the field
    save_checkpoint(tmp_path / "checkpoint.pt", ck.state, json.dumps(old), kind="training")
    assert train(tiny_config(tmp_path, "steps=4"), progress=False).step == 4


def test_init_from_starts_a_fresh_run_from_another_models_ema_weights(tmp_path):
    base = tmp_path / "base"
    train(tiny_config(base, "steps=4"), resume=False, progress=False)
    ema = _state(base / "checkpoint.pt")["ema"]
    # A fine-tuning recipe (another loss t_min and lr) starts from base's EMA weights: step 0 holds them exactly.
    tuned = tiny_config(tmp_path / "tuned", "steps=4", "loss.t_min=0.01", "optim.lr=1e-4", f"init_from={base}/model.pt")
    tr = Trainer(tuned)
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, ema[k]) and torch.equal(tr.ema.state_dict()[k], ema[k]), k
    assert train(tuned, resume=False, progress=False).step == 4
    # A model of another network, SDE or parametrisation is refused, naming the difference.
    changes = [("net.mlp.hidden=8", "net.mlp.hidden"), ("sde.name=ve", "sde.name"), ("score.kind=x0", "score.kind")]
    for change, key in changes:
        cfg = tiny_config(tmp_path / "bad", change, f"init_from={base}/model.pt")
        with pytest.raises(ValueError, match=rf"init_from .*{key}"):
            Trainer(cfg)
    with pytest.raises(FileNotFoundError):
        Trainer(tiny_config(tmp_path / "bad", f"init_from={tmp_path}/missing.pt"))


def test_batches_cover_each_epoch_and_drop_labels_at_the_configured_rate():
    cfg = load_config("toy", [*TINY, "data.name=gaussian_mixture", "data.conditional=true", "loss.label_dropout=0.25"])
    tr = Trainer(cfg, verbose=False)
    per_epoch = len(tr.data) // cfg.batch_size
    seen = torch.cat([tr.next_batch()["x0"] for _ in range(per_epoch)])
    assert len(torch.unique(seen, dim=0)) == per_epoch * cfg.batch_size  # no repeats within an epoch
    labels = torch.cat([tr.next_batch()["labels"] for _ in range(200)])
    null = (labels == tr.num_classes).float().mean().item()
    assert abs(null - 0.25) < 4 * math.sqrt(0.25 * 0.75 / len(labels))


def test_image_training_path_conditional_dequantised_bf16(tmp_path):
    cfg = load_config(
        "mnist_eps",
        [
            "net.name=unet",
            "data.name=digits8",
            "data.val_size=32",
            "data.conditional=true",
            "data.dequantize=true",
            "net.unet.model_channels=8",
            "net.unet.channel_mult=1,2",
            "net.unet.num_res_blocks=1",
            "net.unet.attention_resolutions=4",
            "net.unet.num_heads=1",
            "batch_size=8",
            "steps=2",
            "log_every=1",
            "val_every=2",
            "precision=bf16",
            "device=cpu",
            f"out_dir={tmp_path}",
        ],
    )
    result = train(cfg, resume=False, progress=False)
    assert math.isfinite(result.loss) and math.isfinite(result.val_loss)
    st = _state(tmp_path / "model.pt")
    assert st["data_shape"] == [1, 8, 8] and st["num_classes"] == 10 and st["data_range"] == [0.0, 1.0]


def test_dry_run_json_is_the_resolved_config():
    cfg = load_config("mnist", ["steps=5", "net.unet.channel_mult=1,2,4"])
    d = json.loads(config_to_json(cfg))
    assert d == config_to_dict(cfg) and d["steps"] == 5 and d["net"]["unet"]["channel_mult"] == [1, 2, 4]
    assert config_from_dict(d) == cfg


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path):
    """A real kill: SIGKILL a training process after its first checkpoint, resume, compare bitwise."""
    killed, full = tmp_path / "killed", tmp_path / "full"
    code = (
        "import sys; sys.path.insert(0, {tests!r}); from _tiny import tiny_config; from sdegen.training import train; "
        "train(tiny_config({out!r}, 'steps=100000', 'checkpoint_every=20', 'val_every=0'), progress=False)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code.format(tests=str(REPO / "tests"), out=str(killed))], cwd=REPO, env=env
    )
    try:
        deadline = time.time() + 120
        while not (killed / "checkpoint.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    step = read_checkpoint(killed / "checkpoint.pt").state["step"]
    target = f"steps={step + 13}"
    train(tiny_config(killed, target, "checkpoint_every=20", "val_every=0"), progress=False)
    train(tiny_config(full, target, "checkpoint_every=20", "val_every=0"), resume=False, progress=False)
    _assert_same_state(_state(full / "checkpoint.pt"), _state(killed / "checkpoint.pt"))
