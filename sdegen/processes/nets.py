"""Small x0-predictor networks for the bridge processes (the recipes of `sdegen.processes.recipes`).

Every net is called as `net(x_t, t)` (`ImageLabelNet` also as `net(x_t, t, previous)`, self-conditioned)
and returns the prediction the process expects: an angle, a unit quaternion, or (image, label logits). Time
enters through Fourier features of log t, since training and sampling spread t log-uniformly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sdegen.processes.circle import wrap
from sdegen.processes.rotation import canonical, quaternion_to_matrix


def _time_features(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    c = torch.log(t.float())[:, None] * freqs
    return torch.cat((torch.cos(c), torch.sin(c)), 1)


def _mlp(n_in: int, width: int, n_out: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(n_in, width), torch.nn.SiLU(),
        torch.nn.Linear(width, width), torch.nn.SiLU(),
        torch.nn.Linear(width, width), torch.nn.SiLU(),
        torch.nn.Linear(width, n_out),
    )  # fmt: skip


class CircleMLP(torch.nn.Module):
    """Angles (batch,) → x0_hat = wrap(x_t + δ), δ an MLP of (cos x_t, sin x_t, time features).

    The displacement form matches the circle's training loss (the tangent posterior mean at x_t).
    """

    def __init__(self, width: int = 128):
        super().__init__()
        self.register_buffer("freqs", torch.arange(1, 9, dtype=torch.float32) * 0.5)
        self.net = _mlp(2 + 16, width, 1)

    def forward(self, x, t):
        h = torch.cat((torch.cos(x)[:, None], torch.sin(x)[:, None], _time_features(t, self.freqs)), 1)
        return wrap(x + self.net(h.float())[:, 0].to(x.dtype))


class RotationMLP(torch.nn.Module):
    """Unit quaternions (batch, 4) → a unit quaternion, from the rotation matrix of x_t (sign-free) and time."""

    def __init__(self, width: int = 256):
        super().__init__()
        self.register_buffer("freqs", torch.arange(1, 9, dtype=torch.float32) * 0.5)
        self.net = _mlp(9 + 16, width, 4)

    def forward(self, q, t):
        m = quaternion_to_matrix(q.float()).reshape(-1, 9)
        v = self.net(torch.cat((m, _time_features(t, self.freqs)), 1))
        return canonical(v).to(q.dtype)


class _FiLMBlock(torch.nn.Module):
    """conv → GroupNorm → scale/shift from the conditioning vector → SiLU."""

    def __init__(self, cin: int, cout: int, cond: int, stride: int = 1):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.norm = torch.nn.GroupNorm(8, cout)
        self.film = torch.nn.Linear(cond, 2 * cout)

    def forward(self, h, c):
        scale, shift = self.film(c)[:, :, None, None].chunk(2, 1)
        return F.silu(self.norm(self.conv(h)) * (1 + scale) + shift)


class ImageLabelNet(torch.nn.Module):
    """(x_t image (B, 1, 28, 28), x_t label (B,), t, previous) → (x0_hat image, label logits (B, classes)).

    A two-level conv U-Net with FiLM conditioning on (label embedding, time features, previous label
    probabilities); the previous image estimate is an input channel. The image branch uses EDM-style
    preconditioning (Karras et al. 2022, eq. 7) for an OU process with stationary variance 1, x_t = a·x0 + σ·ε
    with a = e^{−reversion·t}, σ² = 1 − a².

    Args:
        width: channels of the first level (the second has 2·width).
        num_classes: label classes.
        sigma_data: RMS of the clean pixels (MNIST in [−1, 1]: 0.62).
        reversion: the OU reversion rate θ (a = e^{−θt}).
    """

    def __init__(self, width: int = 16, num_classes: int = 10, sigma_data: float = 0.62, reversion: float = 1.0):
        super().__init__()
        ch, cond = width, 128
        self.num_classes, self.sigma_data, self.reversion = num_classes, sigma_data, reversion
        self.register_buffer("freqs", torch.arange(1, 9, dtype=torch.float32) * 0.5)
        self.label = torch.nn.Embedding(num_classes, 32)
        self.cond = torch.nn.Sequential(
            torch.nn.Linear(32 + 16 + num_classes, cond), torch.nn.SiLU(), torch.nn.Linear(cond, cond)
        )
        self.e1 = _FiLMBlock(2, ch, cond)  # x_t and the previous image estimate
        self.e2 = _FiLMBlock(ch, 2 * ch, cond, stride=2)  # 14×14
        self.e3 = _FiLMBlock(2 * ch, 2 * ch, cond, stride=2)  # 7×7
        self.mid = _FiLMBlock(2 * ch, 2 * ch, cond)
        self.d2 = _FiLMBlock(4 * ch, 2 * ch, cond)
        self.d1 = _FiLMBlock(3 * ch, ch, cond)
        self.out = torch.nn.Conv2d(ch, 1, 3, padding=1)
        self.head = torch.nn.Sequential(
            torch.nn.Linear(2 * ch + cond, cond), torch.nn.SiLU(), torch.nn.Linear(cond, num_classes)
        )

    def forward(self, x, t, previous=None):
        img, lab = x
        t = t.float()
        a = torch.exp(-self.reversion * t)[:, None, None, None]
        var = 1 - a**2
        total = torch.sqrt(a**2 * self.sigma_data**2 + var)
        prev_img, prev_logits = (torch.zeros_like(img), None) if previous is None else previous
        prev_probs = (
            torch.zeros(len(t), self.num_classes) if prev_logits is None else torch.softmax(prev_logits.float(), -1)
        )
        cvec = self.cond(torch.cat((self.label(lab), _time_features(t, self.freqs), prev_probs), 1))
        h1 = self.e1(torch.cat((img / total, prev_img), 1), cvec)
        h2 = self.e2(h1, cvec)
        h3 = self.mid(self.e3(h2, cvec), cvec)
        u2 = self.d2(torch.cat((F.interpolate(h3, scale_factor=2), h2), 1), cvec)
        u1 = self.d1(torch.cat((F.interpolate(u2, scale_factor=2), h1), 1), cvec)
        skip = a * self.sigma_data**2 / total**2
        scale = torch.sqrt(var) * self.sigma_data / total
        return skip * img + scale * self.out(u1), self.head(torch.cat((h3.mean((2, 3)), cvec), 1))
