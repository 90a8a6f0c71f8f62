"""Noise-conditional classifiers p_φ(y | x_t, t) for classifier guidance: model, training and loading.

A `NoisyClassifier` sees the state the way the score models do (`sdegen.score`): the input
c_in·x_t = x_t/√(alpha²σ_d² + sigma²) and the noise feature ln(sigma/alpha). Since x_t/alpha = x0 + σ̃·ε with
σ̃ = sigma/alpha, that input is (x0 + σ̃·ε)/√(σ_d² + σ̃²), a function of σ̃ alone: a classifier trained under
one SDE is the same function of (x0, σ̃) under every SDE here, and ∇ₓ log p_φ(y | x, t) carries the SDE's own
1/alpha through c_in.

Training (`sdegen train mnist_classifier`, a config with `classifier.train = true`) minimises the cross
entropy −log p_φ(y | x_t, t) with x_t drawn from the forward marginal of a training image, t ~ U[loss.t_min, T]
(Dhariwal & Nichol 2021 train their guidance classifier on all noise levels of the forward process). It uses
the score trainer's loop (`sdegen.training`: EMA, checkpoints, exact resume, metrics), whose validation loss is
then the held-out cross entropy in nats. `load_classifier` reads the EMA weights of a model or training file.
"""

from __future__ import annotations

import json
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from sdegen._checks import Time, as_time, batch_view, check_batched
from sdegen.checkpoint import CheckpointError, read_checkpoint
from sdegen.losses import uniform_time
from sdegen.nets.noisy_classifier import NoisyClassifierNet
from sdegen.score import alpha_sigma, v_norm
from sdegen.training import Trainer


class NoisyClassifier(nn.Module):
    """p_φ(y | x_t, t): forward(x, t) → (batch, num_classes) logits, for x (batch, *data_shape).

    Args:
        net: called as net(c_in·x, ln(sigma/alpha)) → logits (`sdegen.nets.noisy_classifier`).
        sde: the forward SDE of the marginals it is applied to.
        sigma_data: σ_d of the input scaling c_in = 1/√(alpha²σ_d² + sigma²).
        data_shape: shape of one sample; num_classes: K.
    """

    def __init__(self, net: nn.Module, sde, *, sigma_data: float, data_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        if not (math.isfinite(sigma_data) and sigma_data > 0):
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.net, self.sde, self.sigma_data = net, sde, float(sigma_data)
        self.data_shape, self.num_classes = tuple(data_shape), int(num_classes)
        self.sha256 = ""  # set by load_classifier: the file's payload checksum

    def forward(self, x: torch.Tensor, t: Time) -> torch.Tensor:
        check_batched(x)
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"the classifier was trained on data of shape {self.data_shape}, got {tuple(x.shape[1:])}")
        tt = as_time(t, x, self.sde.T)
        alpha, sigma = alpha_sigma(self.sde, tt, x)
        c_in = 1 / v_norm(batch_view(alpha, x), batch_view(sigma, x), self.sigma_data)
        return self.net(c_in * x, torch.log((sigma / alpha).clamp_min(1e-12)))

    def log_prob(self, x: torch.Tensor, t: Time, y: torch.Tensor) -> torch.Tensor:
        """log p_φ(y | x_t = x, t) in nats, (batch,)."""
        return torch.log_softmax(self(x, t), dim=1).gather(1, y.long()[:, None])[:, 0]

    def __repr__(self) -> str:
        return f"NoisyClassifier(sde={self.sde!r}, data_shape={self.data_shape}, num_classes={self.num_classes})"


def make_classifier(cfg, data_shape: tuple[int, ...], num_classes: int) -> NoisyClassifier:
    """The classifier of a training config (its `classifier`, `sde` and `score.sigma_data` entries)."""
    from sdegen.config import make_sde  # late: config imports this module's neighbours

    if len(data_shape) != 3:
        raise ValueError(f"the noisy classifier needs image data (C, H, W), got data shape {tuple(data_shape)}")
    c = cfg.classifier
    net = NoisyClassifierNet(data_shape[0], num_classes, c.channels, c.embed_dim, c.fourier_scale)
    return NoisyClassifier(
        net, make_sde(cfg.sde), sigma_data=cfg.score.sigma_data, data_shape=data_shape, num_classes=num_classes
    )


def classifier_loss(model, sde, x0, labels, *, t_min: float, u: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Cross entropy −log p_φ(y | x_t, t) per sample, (batch,): x_t = alpha·x0 + sigma·ε, t = t_min + (T − t_min)·u."""
    t = uniform_time(sde, u, t_min).to(x0.dtype)
    alpha, sigma = (batch_view(c, x0) for c in alpha_sigma(sde, t, x0))
    return F.cross_entropy(model(alpha * x0 + sigma * noise, t), labels, reduction="none")


class ClassifierTrainer(Trainer):
    """The training run of a noise-conditional classifier (the score trainer's loop with another model and loss)."""

    def build_model(self) -> nn.Module:
        if self.num_classes is None:
            raise ValueError("classifier.train needs labelled data (data.conditional = true)")
        return make_classifier(self.cfg, self.data_shape, self.num_classes)

    def loss(self, batch: dict, model=None) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"):
            per_sample = classifier_loss(
                model or self.train_model, self.sde, batch["x0"], batch["labels"], t_min=self.cfg.loss.t_min,
                u=batch["u"], noise=batch["noise"],
            )  # fmt: skip
        return per_sample.mean()


def load_classifier(name_or_path: str | os.PathLike, map_location: str | torch.device = "cpu") -> NoisyClassifier:
    """Load the EMA weights of a classifier model or training file (or a shipped one by name, e.g. "mnist-classifier").

    Raises:
        FileNotFoundError: unknown name; CheckpointError: corrupt file, not a classifier, or weights that do not
            fit the stored config.
    """
    from sdegen.config import ConfigError, config_from_dict
    from sdegen.model import resolve_model_path

    ck = read_checkpoint(resolve_model_path(name_or_path), kind=("training", "model"))
    try:
        config = config_from_dict(json.loads(ck.config_json))
    except (ConfigError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{ck.path}: stored config is invalid ({e})") from e
    if not config.classifier.train:
        raise CheckpointError(
            f"{ck.path}: is a score model, not a noise-conditional classifier (use sdegen.load_model)"
        )
    st = ck.state
    try:
        with torch.random.fork_rng(devices=[]):
            model = make_classifier(config, tuple(st["data_shape"]), st["num_classes"])
        model.load_state_dict(st["ema"], strict=True)
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{ck.path}: weights do not match the classifier of its config ({e})") from e
    model.sha256 = ck.sha256
    return model.eval().requires_grad_(False).to(map_location)
