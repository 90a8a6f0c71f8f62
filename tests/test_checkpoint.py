"""Checkpoints: checksummed round trips, atomic writes, corrupt and mismatched files, load_model/export_ema."""

import json
import os

import pytest
import torch
from _tiny import tiny_config

from sdegen._io import atomic_torch_save
from sdegen.checkpoint import CheckpointError, export_ema, read_checkpoint, save_checkpoint
from sdegen.config import config_to_json, load_config
from sdegen.model import Model, load_model
from sdegen.training import train


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("boom")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(tiny_config(out, "steps=6"), resume=False, progress=False)
    return out


def test_nested_state_round_trip_keeps_types(tmp_path):
    state = {
        "a": torch.arange(5),
        "opt": {0: {"m": torch.ones(2, dtype=torch.bfloat16)}, 1: {}},
        "groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "flag": True, "none": None}],
        "name": "x",
    }
    digest = save_checkpoint(tmp_path / "c.pt", state, '{"k": 1}')
    ck = read_checkpoint(tmp_path / "c.pt")
    assert ck.sha256 == digest and ck.kind == "training" and ck.config_json == '{"k": 1}'
    assert torch.equal(ck.state["a"], state["a"]) and ck.state["opt"][0]["m"].dtype == torch.bfloat16
    assert set(ck.state["opt"]) == {0, 1}  # int keys survive (optimizer state is keyed by int)
    assert ck.state["groups"][0] == {"lr": 1e-3, "betas": [0.9, 0.999], "flag": True, "none": None}
    raw = torch.load(tmp_path / "c.pt", weights_only=True)  # loadable without unpickling code
    assert raw["sha256"] == digest


def test_atomic_save_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"w": torch.ones(3)}, "{}")
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"w": torch.zeros(1000), "bad": _Unpicklable()}, path)  # torch.save fails mid-way
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.pt"]  # no temporary file left behind


def test_flipped_bytes_are_detected(run, tmp_path):
    original = (run / "checkpoint.pt").read_bytes()
    good = read_checkpoint(run / "checkpoint.pt")
    bad = tmp_path / "flipped.pt"
    detected = 0
    positions = [len(original) // 2] + list(range(0, len(original), len(original) // 40))
    for pos in positions:
        data = bytearray(original)
        data[pos] ^= 0xFF
        bad.write_bytes(bytes(data))
        try:
            ck = read_checkpoint(bad)
        except CheckpointError as e:
            assert str(bad) in str(e)
            detected += 1
            continue
        # A flip in zip padding or unused header bytes may leave the content intact: then it must be identical.
        assert ck.sha256 == good.sha256
        assert all(torch.equal(ck.state["model"][k], v) for k, v in good.state["model"].items())
    assert detected > len(positions) // 2  # the rest hit zip padding: verified identical above
    data = bytearray(original)
    data[len(original) // 2] ^= 0x01  # a single bit in the middle (tensor data) is always caught
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch|damaged"):
        read_checkpoint(bad)


def test_truncated_and_foreign_files(run, tmp_path):
    (tmp_path / "cut.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.pt"):
        read_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an sdegen checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        read_checkpoint(tmp_path / "nope.pt")


def test_mismatched_config_and_weights_raise_naming_the_file(run, tmp_path):
    ck = read_checkpoint(run / "checkpoint.pt")
    wrong = load_config("toy", ["net.mlp.hidden=24", "net.mlp.depth=1"])
    save_checkpoint(tmp_path / "wrong.pt", ck.state, config_to_json(wrong))
    with pytest.raises(CheckpointError, match="wrong.pt.*do not match"):
        load_model(tmp_path / "wrong.pt")
    bad_cfg = json.loads(ck.config_json)
    bad_cfg["optim"]["lr"] = -1
    save_checkpoint(tmp_path / "badcfg.pt", ck.state, json.dumps(bad_cfg))
    with pytest.raises(CheckpointError, match="badcfg.pt.*config is invalid"):
        load_model(tmp_path / "badcfg.pt")


def test_load_model_and_export_ema(run, tmp_path):
    rng = torch.random.get_rng_state()
    m = load_model(run / "checkpoint.pt")
    assert torch.equal(rng, torch.random.get_rng_state())  # loading leaves the global RNG alone
    assert isinstance(m, Model) and m.data_shape == (2,) and m.data_range is None and m.num_classes is None
    assert m.step == 6 and m.sde.name == "vp" and len(m.sha256) == 64
    small = tmp_path / "model.pt"
    digest = export_ema(run / "checkpoint.pt", small)
    assert small.stat().st_size < 0.5 * (run / "checkpoint.pt").stat().st_size
    m2 = load_model(small)
    assert m2.sha256 == digest
    ck = read_checkpoint(run / "checkpoint.pt")
    for k, v in m2.score_model.state_dict().items():
        assert torch.equal(v, ck.state["ema"][k])  # the EMA weights, not the raw ones
    x = torch.randn(4, 2)
    s = m2.score_fn()(x, torch.full((4,), 0.5))
    assert s.shape == x.shape and not s.requires_grad
    assert m2.denoise(x, 0.5).shape == x.shape
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        export_ema(small, tmp_path / "again.pt")


def test_unknown_model_name_lists_shipped_models():
    with pytest.raises(FileNotFoundError, match="shipped"):
        load_model("no-such-model")


def test_kinds_are_read_cheaply_and_checked(run, tmp_path):
    from sdegen.checkpoint import checkpoint_kind

    assert checkpoint_kind(run / "checkpoint.pt") == "training" and checkpoint_kind(run / "model.pt") == "model"
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert checkpoint_kind(tmp_path / "junk.pt") is None
    with pytest.raises(CheckpointError, match="model.pt: is a model file.*expected kind training"):
        read_checkpoint(run / "model.pt", kind="training")
    with pytest.raises(CheckpointError, match="is a directory"):
        read_checkpoint(tmp_path)


def test_model_lives_in_sdegen_model_and_the_old_names_still_import():
    import sdegen.checkpoint
    import sdegen.model

    assert sdegen.checkpoint.load_model is sdegen.model.load_model and sdegen.checkpoint.Model is sdegen.model.Model
    assert "lenet" not in sdegen.model.shipped_models() and "toy" in sdegen.model.shipped_models()
    with pytest.raises(AttributeError):
        sdegen.checkpoint.no_such_name  # noqa: B018


def test_checkpoint_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(1)}, "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o640
