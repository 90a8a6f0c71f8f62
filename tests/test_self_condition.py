"""Self-conditioning (Chen, Zhang & Hinton 2022): the network input, the estimate carried between sampler
steps, training with the estimate zeroed for half the batch, exact resume, and fine-tuning from a model
without it."""

import math

import pytest
import torch
from torch import nn

import sdegen
from sdegen.config import ConfigError, load_config
from sdegen.losses import edm_loss
from sdegen.score import Parametrisation, ScoreModel
from sdegen.training import Trainer, train

SDE = sdegen.VPSDE()


class Probe(nn.Module):
    """net(x_in, c, y): predicts x0 = 0.5·(first channel) and records the self-conditioning channel it was fed."""

    def __init__(self):
        super().__init__()
        self.fed = []

    def forward(self, x_in, c, y=None):
        self.fed.append(x_in[:, 1:2].clone())
        return 0.5 * x_in[:, :1]


def _probe_model():
    param = Parametrisation(kind="x0", precondition=False, sigma_data=0.5, self_condition=True)
    return ScoreModel(Probe(), SDE, param)


def test_the_network_sees_x0_prev_over_sigma_data_and_zeros_without_it():
    model = _probe_model()
    x, prev = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    model(x, 0.5, output="x0")
    model(x, 0.5, output="x0", x0_prev=prev)
    assert torch.equal(model.net.fed[0], torch.zeros_like(x)) and torch.allclose(model.net.fed[1], prev / 0.5)
    with pytest.raises(ValueError, match="x0_prev must be shaped like x"):
        model(x, 0.5, x0_prev=prev[:2])
    plain = ScoreModel(Probe(), SDE, Parametrisation(kind="x0", precondition=False))
    with pytest.raises(ValueError, match="without self-conditioning"):
        plain(x, 0.5, x0_prev=prev)


def test_a_sampler_score_carries_the_last_estimate_and_a_new_run_starts_from_zeros():
    model = _probe_model()
    score = model.score_fn()
    x = torch.randn(2, 1, 4, 4)
    t = lambda v: torch.full((2,), v)  # noqa: E731
    score(x, t(1.0))  # t = T: a run starts, zeros
    score(x, t(0.5))  # fed the estimate of the call before: x0 = 0.5·x
    score(x, t(1.0))  # a new run: zeros again
    score(torch.randn(3, 1, 4, 4), torch.full((3,), 0.5))  # another batch: zeros
    fed = model.net.fed
    assert torch.equal(fed[0], torch.zeros_like(x)) and torch.allclose(fed[1], 0.5 * x / 0.5)
    assert torch.equal(fed[2], torch.zeros_like(x)) and not fed[3].any()
    # two_pass: a first pass with zeros at the same (x, t), so a function of (x, t) alone
    two = model.score_fn(self_condition="two_pass")
    a = two(x, t(0.3))
    two(torch.randn_like(x), t(0.7))
    assert torch.equal(two(x, t(0.3)), a)
    with pytest.raises(ValueError, match="self_condition must be one of"):
        model.score_fn(self_condition="yes")


def test_sampling_a_self_conditioned_model_counts_one_evaluation_per_network_call():
    model = _probe_model()
    ds = sdegen.sample(SDE, model.score_fn(), (4, 1, 4, 4), solver="ddim", steps=5, seed=0)
    assert ds.attrs["nfe"] == 5 and len(model.net.fed) == 5
    assert not model.net.fed[0].any() and all(f.abs().sum() > 0 for f in model.net.fed[1:])


TINY_IMAGE = [
    "net.name=unet", "data.name=digits8", "data.val_size=32", "data.conditional=true", "net.unet.model_channels=8",
    "net.unet.channel_mult=1,2", "net.unet.num_res_blocks=1", "net.unet.attention_resolutions=4",
    "net.unet.num_heads=1", "net.unet.dropout=0", "batch_size=16", "log_every=2", "val_every=4",
    "checkpoint_every=4", "device=cpu", "loss.name=edm", "score.kind=v", "optim.warmup_steps=2",
]  # fmt: skip


def _cfg(out, *extra):
    return load_config("mnist_eps", [*TINY_IMAGE, f"out_dir={out}", *extra])


def test_training_zeroes_the_estimate_for_half_the_batch_and_resumes_bitwise(tmp_path):
    cfg = _cfg(tmp_path / "a", "score.self_condition=true", "steps=8")
    tr = Trainer(cfg, verbose=False)
    drawn = torch.cat([tr.next_batch()["self_cond"] for _ in range(40)]).float()
    assert abs(drawn.mean().item() - 0.5) < 4 * math.sqrt(0.25 / len(drawn))
    assert tr.model.net.stem.in_channels == 2  # c_in·x and x0_prev/σ_d
    full, split = tmp_path / "full", tmp_path / "split"
    train(_cfg(full, "score.self_condition=true", "steps=8"), resume=False, progress=False)
    train(_cfg(split, "score.self_condition=true", "steps=4"), resume=False, progress=False)
    result = train(_cfg(split, "score.self_condition=true", "steps=8"), progress=False)
    assert math.isfinite(result.val_loss)
    a = sdegen.checkpoint.read_checkpoint(full / "checkpoint.pt").state
    b = sdegen.checkpoint.read_checkpoint(split / "checkpoint.pt").state
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_the_loss_feeds_the_models_own_estimate_where_asked():
    model = _probe_model()
    x0 = torch.rand(4, 1, 4, 4)
    sc = torch.tensor([True, False, True, False])
    u, noise = torch.full((4,), 0.3, dtype=torch.float64), torch.randn(4, 1, 4, 4)
    edm_loss(model, SDE, x0, u=u, noise=noise, self_cond=sc)
    first, second = model.net.fed[-2:]
    assert not first.any() and not second[~sc].any() and second[sc].abs().sum() > 0


def test_fine_tuning_turns_self_conditioning_on_from_a_model_without_it(tmp_path):
    base = tmp_path / "base"
    train(_cfg(base, "steps=2"), resume=False, progress=False)
    tuned = Trainer(_cfg(tmp_path / "tuned", "score.self_condition=true", f"init_from={base}/model.pt"), verbose=False)
    src = sdegen.load_model(base / "model.pt").score_model
    x, t, y = torch.randn(3, 1, 8, 8), torch.full((3,), 0.4), torch.tensor([1, 2, 10])
    tuned.model.eval()
    with torch.no_grad():  # the added x0_prev channels start at zero weight: the source model's function
        for prev in (None, torch.randn(3, 1, 8, 8)):
            torch.testing.assert_close(tuned.model(x, t, y, x0_prev=prev), src(x, t, y), atol=1e-5, rtol=1e-5)
    # turning it off, or any other change, is still refused
    sc_base = tmp_path / "sc"
    train(_cfg(sc_base, "score.self_condition=true", "steps=2"), resume=False, progress=False)
    with pytest.raises(ValueError, match="self_condition"):
        Trainer(_cfg(tmp_path / "off", f"init_from={sc_base}/model.pt"), verbose=False)


def test_mlp_nets_refuse_self_conditioning():
    with pytest.raises(ConfigError, match="self_condition"):
        Trainer(load_config("toy", ["score.self_condition=true", "device=cpu"]), verbose=False)
