"""The x0-prediction training loss of a bridge process: log-uniform times, self-conditioning, masks.

For a batch of clean states x0, `x0_prediction_loss` draws t log-uniformly on [t_min, t_max] (the bridge
chain spends its steps on a log grid, and small t needs as much training as large t), noises x0 with
`process.sample_forward`, asks the model for x0_hat and returns the mean of `process.loss`.

Self-conditioning (Chen, Zhang & Hinton 2022, "Analog Bits", §3.2): the model takes a third input, its
previous estimate. In training, for a random half of the samples it is the model's own estimate at the same
(x_t, t) from a first, gradient-free pass; for the other half it is zeros, which is also what the model sees
on the first step of `sample_backward` (where the previous estimate is None). `self_condition_input` maps
None to those zeros.

Masks (conditioning/inpainting): elements with mask False are given clean (x_t = x0 there) and excluded from
the loss, matching `sample_backward(..., mask=...)`.
"""

from __future__ import annotations

import math

import torch

from sdegen.processes._common import Generator, rand


def log_uniform_times(batch: int, t_min: float, t_max: float, generator: Generator = None) -> torch.Tensor:
    """(batch,) float64 times with log t uniform on [log t_min, log t_max]."""
    if not 0 < t_min < t_max:
        raise ValueError(f"need 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}")
    u = rand((batch,), generator, torch.float64)
    return torch.exp(math.log(t_min) + u * (math.log(t_max) - math.log(t_min)))


def _zeros_like(value):
    if isinstance(value, tuple):
        return tuple(_zeros_like(v) for v in value)
    return torch.zeros_like(value, dtype=value.dtype if value.is_floating_point() else torch.float32)


def self_condition_input(previous, template):
    """The model's self-conditioning input: the previous estimate, or zeros shaped like `template` (an
    estimate of the same structure) when there is none."""
    return _zeros_like(template) if previous is None else previous


def _where(keep: torch.Tensor, a, b):
    if isinstance(a, tuple):
        return tuple(_where(keep, x, y) for x, y in zip(a, b, strict=True))
    return torch.where(keep.reshape(-1, *([1] * (a.ndim - 1))), a, b)


def _apply_mask(x_t, x0, mask):
    if mask is None:
        return x_t
    if isinstance(x_t, tuple):
        return tuple(a if m is None else _apply_mask(a, b, m) for a, b, m in zip(x_t, x0, mask, strict=True))
    m = mask if mask.shape == x_t.shape else mask.unsqueeze(-1).expand(x_t.shape)
    return torch.where(m, x_t, x0)


def x0_prediction_loss(
    process,
    model,
    x0,
    *,
    t_min: float,
    t_max: float,
    generator: Generator = None,
    self_condition: bool = False,
    mask=None,
) -> torch.Tensor:
    """The mean x0-prediction loss of `model` on a batch of clean states.

    Args:
        process: a bridge process, a `Joint` or a Gaussian SDE.
        model: `model(x_t, t)` → x0_hat (logits for categorical states, a tuple for Joint), t a float32
            (batch,) tensor; `model(x_t, t, previous)` when self_condition.
        x0: clean states (batch, ...) (a tuple for Joint).
        t_min, t_max: the time range, sampled log-uniformly.
        generator: randomness of times, noise and the self-conditioning coin.
        self_condition: train with self-conditioning (50 % of the samples see the detached first estimate).
        mask: optional bool tensor(s) shaped like the state: False elements stay clean and are not scored.

    Returns:
        A scalar tensor (differentiable in the model's parameters).
    """
    first = x0[0] if isinstance(x0, tuple) else x0
    batch, device = first.shape[0], first.device
    t = log_uniform_times(batch, t_min, t_max, generator)
    x_t = _apply_mask(process.sample_forward(x0, t, generator=generator), x0, mask)
    tt = t.to(device=device, dtype=torch.float32)
    if self_condition:
        with torch.no_grad():
            estimate = model(x_t, tt, None)
        keep = rand((batch,), generator, torch.float64).to(device) < 0.5
        previous = _where(keep, estimate, _zeros_like(estimate))
        prediction = model(x_t, tt, previous)
    else:
        prediction = model(x_t, tt)
    losses = process.loss(prediction, x0, t, x_t=x_t, mask=mask)
    return losses.mean()
