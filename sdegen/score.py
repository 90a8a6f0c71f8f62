"""Parametrisations: what a network predicts, and how that becomes a score, ε, x0 or v.

With x_t = alpha·x0 + sigma·ε (alpha = `sde.mean_scale(t)`, sigma = `sde.marginal_std(t)`, ε ~ N(0, I)),
the optimal predictions are linked by Tweedie's formula (Efron 2011; Kingma et al. 2021):

    score = ∇ log p_t(x) = −E[ε | x]/sigma = (alpha·E[x0 | x] − x)/sigma².

`v` generalises the v-prediction of Salimans & Ho (2022) to every SDE and data scale σ_d:

    v = (alpha·σ_d·ε − (sigma/σ_d)·x0) / c,    c = √(alpha²σ_d² + sigma²),

which has unit variance when x0 has per-coordinate RMS σ_d, and is exactly alpha·ε − sigma·x0 for the
VP family (alpha² + sigma² = 1) with σ_d = 1. For VE (alpha = 1) it is (σ_d·ε − sigma·x0/σ_d)/c, up to
sign the "F" target of EDM (Karras et al. 2022, eq. 8). Inverting the 2×2 system {x, v} ↔ {x0, ε}:

    x0 = (alpha·σ_d²·x − σ_d·sigma·c·v)/c²,   ε = (sigma·x + alpha·σ_d·c·v)/c².

Preconditioning (EDM, Karras et al. 2022, Table 1, written for x_t = alpha·x0 + sigma·ε): with
`precondition=True` the network sees c_in·x, c_in = 1/√(alpha²σ_d² + sigma²), so its input has unit
variance at every t, and the "score" kind predicts sigma·score (c_out = 1/sigma, the tutorial's
division by the marginal std); without it the network sees x itself and "score" means the raw score.
"eps" (target ε), "x0" (target x0) and "v" (target above) have unit-scale targets either way.

Input Fourier features (after Kingma et al. 2021, "Variational Diffusion Models", App. C): with
`input_frequencies` f₁ … f_F the network also sees, for each f,

    damp·sin(2π·f·x/alpha),  damp·cos(2π·f·x/alpha),   damp = exp(−2π²·f²·(sigma/alpha)²),

concatenated to c_in·x along dim 1 (channels), so an image net takes C·(1 + 2F) input channels and still
returns C. x/alpha = x0 + (sigma/alpha)·ε is the data-scale position, and damp·sin(2π·f·x0) is
E[sin(2π·f·x/alpha) | x0]: the damping keeps what the feature says about x0 and removes it where it would
only be noise. At f = 256 for 8-bit data in [0, 1] (one cycle per bin) the features give the position
inside an 8-bit bin, which a plain convolution of c_in·x resolves only with weights of order 1/(bin
width); uniform dequantisation puts the sharp edges of the data density there, and bits/dim pay for them.
Undamped, the features are a function of x oscillating 2π·f times faster than the data at every noise
level, and the learned probability-flow velocity at high noise becomes rough enough that the adaptive ODE
solver took 2000 of its 2400 steps at t > 0.5 (measured on MNIST); damped, they vanish smoothly once
sigma/alpha exceeds about 1/(2f).

Self-conditioning (Chen, Zhang & Hinton 2022, "Analog Bits", Sec. 3.1): with `self_condition=True` the
network also sees a previous estimate of x0, as x0_prev/σ_d concatenated along dim 1 after everything else
(C more input channels). Training feeds zeros half the time and, the other half, the model's own estimate
from a first pass without gradient (`sdegen.losses`); a sampler's score carries the estimate of its last
evaluation into the next one (`ScoreModel.score_fn`), and a fresh run starts from zeros.

Time input: the network's scalar input is ln(sigma/alpha) (`time_input="log_sigma"`, the log
noise-to-signal ratio, which makes the denoising problem the same for every SDE at equal
sigma/alpha; clamped below at ln 1e-12 so t = 0 stays finite) or the SDE time t itself ("t").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from sdegen._checks import Time, as_time, batch_view, check_batched, check_data_range
from sdegen.guidance import combine_cfg

KINDS = ("score", "eps", "x0", "v")
SELF_CONDITION_MODES = ("carry", "two_pass", "none")
TIME_INPUTS = ("log_sigma", "t")
OUTPUTS = ("raw", "score", "eps", "x0", "v")


# -- exact conversions; alpha, sigma broadcast against x (use batch_view) -------------------------------
def v_norm(alpha: torch.Tensor, sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """c = √(alpha²σ_d² + sigma²), the normaliser of v and the inverse of the input scale c_in."""
    return torch.sqrt(alpha**2 * sigma_data**2 + sigma**2)


def input_fourier_features(
    x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, frequencies: tuple[float, ...]
) -> torch.Tensor:
    """The damped input Fourier features along dim 1: (B, 2F·C, …) for x (B, C, …) (module docstring).

    [damp_f·sin(2π·f·x/alpha) for f …, damp_f·cos(2π·f·x/alpha) for f …], damp_f = exp(−2π²f²(sigma/alpha)²),
    with alpha and sigma broadcasting against x. The phase is reduced modulo one cycle in float64 first,
    so float32 inputs keep full phase accuracy.
    """
    f = torch.tensor(frequencies, dtype=torch.float64, device=x.device).reshape(1, -1, *[1] * (x.ndim - 1))
    a64, ratio = alpha.to(torch.float64).unsqueeze(1), (sigma / alpha).to(torch.float64).unsqueeze(1)
    cycles = x.to(torch.float64).unsqueeze(1) / a64 * f  # (B, F, C, …)
    phase = 2 * math.pi * torch.remainder(cycles, 1.0)
    damp = torch.exp(-2 * math.pi**2 * (f * ratio) ** 2)
    feats = torch.cat([damp * torch.sin(phase), damp * torch.cos(phase)], dim=1)  # (B, 2F, C, …)
    return feats.flatten(1, 2).to(x.dtype)


def tweedie(x: torch.Tensor, score: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """Tweedie's formula E[x0 | x_t = x] = (x + sigma²·score)/alpha (Efron 2011), for x_t | x0 ~ N(alpha·x0, sigma²I).

    alpha and sigma are floats or tensors that broadcast against x.
    """
    return (x + sigma**2 * score) / alpha


def to_x0_eps(kind: str, out, x, alpha, sigma, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, ε) from a prediction `out` of the given kind ("score" = raw score ∇ log p_t) at state x."""
    if kind == "eps":
        eps = out
        return (x - sigma * eps) / alpha, eps
    if kind == "score":
        eps = -sigma * out
        return (x - sigma * eps) / alpha, eps
    if kind == "x0":
        return out, (x - alpha * out) / sigma
    if kind == "v":
        c = v_norm(alpha, sigma, sigma_data)
        x0 = (alpha * sigma_data**2 * x - sigma_data * sigma * c * out) / c**2
        eps = (sigma * x + alpha * sigma_data * c * out) / c**2
        return x0, eps
    raise ValueError(f"unknown parametrisation {kind!r}; known: {list(KINDS)}")


def convert(kind: str, out, x, alpha, sigma, sigma_data: float, to: str) -> torch.Tensor:
    """Convert a prediction of kind `kind` into `to` ∈ {"score", "eps", "x0", "v"} (exact algebra).

    Each route avoids dividing by small quantities where it can: eps → score is −ε/sigma, x0 → score
    is (alpha·x0 − x)/sigma², v → score is −(sigma·x + alpha·σ_d·c·v)/(sigma·c²).
    """
    if kind == to:
        return out
    if to == "score" and kind == "eps":
        return -out / sigma
    if to == "score" and kind == "x0":
        return (alpha * out - x) / sigma**2
    x0, eps = to_x0_eps(kind, out, x, alpha, sigma, sigma_data)
    if to == "eps":
        return eps
    if to == "x0":
        return x0
    if to == "score":
        return -eps / sigma
    if to == "v":
        c = v_norm(alpha, sigma, sigma_data)
        return (alpha * sigma_data * eps - sigma / sigma_data * x0) / c
    raise ValueError(f"unknown output {to!r}; known: {list(KINDS)}")


def alpha_sigma(sde, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha(t), sigma(t)), each (batch,) in x's dtype, for a (batch,) tensor t already known to lie in [0, T].

    Evaluated in float64 like `AbstractSDE.mean_scale`, but without its range check, which reads t back to
    the host (a device synchronisation per call on CUDA); the training hot path draws t itself.
    """
    alpha, sigma = sde.alpha_sigma(t.to(device=x.device, dtype=torch.float64))
    return alpha.to(x.dtype), sigma.to(x.dtype)


def clip_denoised(score, sde, data_range: tuple[float, float]):
    """score(x, t) whose denoiser is projected onto the data range (DDPM's clipped x0, Ho et al. 2020).

    With x0_hat = (x + sigma²·score)/alpha (Tweedie) and lo ≤ x0 ≤ hi for every datum, the exact
    E[x0 | x_t] lies in [lo, hi] too, so projecting x0_hat there can only bring it closer, coordinate by
    coordinate. The returned score is

        score + alpha·(clamp(x0_hat, lo, hi) − x0_hat)/sigma²,

    i.e. the score of the clamped denoiser; where x0_hat is already in range it is `score` itself, bit for
    bit. For likelihoods this is a different, better model with the same network: in the encode direction a
    pixel the network misjudges can leave the data range, and a network that predicts x0_hat outside the
    range there pushes it further, so that a few MNIST test digits reached |z| ≈ 200 and 50–110 bits/dim
    while their neighbours scored 1.5 (docs/guide.md §5). Needs t > 0 (sigma > 0), as any score does.

    Args:
        score: score(x, t) → tensor shaped like x, t a float or a (batch,) tensor.
        sde: the forward SDE the score belongs to (alpha = mean_scale, sigma = marginal_std).
        data_range: (lo, hi), the range of the (dequantised) training data, lo < hi.
    """
    lo, hi = check_data_range(data_range)

    def clipped(x: torch.Tensor, t: Time) -> torch.Tensor:
        s = score(x, t)
        alpha, sigma = alpha_sigma(sde, as_time(t, x, sde.T), x)
        alpha, sigma = batch_view(alpha, x), batch_view(sigma, x)
        x0 = tweedie(x, s, alpha, sigma)
        return s + alpha * (x0.clamp(lo, hi) - x0) / sigma**2

    return clipped


@dataclass(frozen=True)
class Parametrisation:
    """What the network predicts and how its inputs are scaled (see the module docstring).

    Attributes:
        kind: "score", "eps", "x0" or "v".
        precondition: scale inputs by c_in = 1/√(alpha²σ_d² + sigma²) (and "score" outputs by 1/sigma).
        sigma_data: σ_d, the RMS of one data coordinate (about 0.33 for MNIST in [0, 1]).
        time_input: "log_sigma" (network input ln(sigma/alpha)) or "t" (the SDE time).
        input_frequencies: frequencies f (cycles per unit of x/alpha) of the input Fourier features, or ()
            for none; the net then needs 2·len(input_frequencies)·C extra input channels.
        self_condition: the net also takes the previous x0 estimate (C more input channels; module docstring).
    """

    kind: str = "eps"
    precondition: bool = True
    sigma_data: float = 0.5
    time_input: str = "log_sigma"
    input_frequencies: tuple[float, ...] = ()
    self_condition: bool = False

    @property
    def extra_channels_per_channel(self) -> int:
        """Input channels per data channel beyond c_in·x: the Fourier features and the self-conditioning input."""
        return 2 * len(self.input_frequencies) + int(self.self_condition)

    def __post_init__(self):
        # The one validation of a parametrisation (the training config's `score` section is checked here too).
        problems = {
            "kind": None if self.kind in KINDS else f"unknown parametrisation {self.kind!r}; known: {list(KINDS)}",
            "time_input": None if self.time_input in TIME_INPUTS else f"must be one of {list(TIME_INPUTS)}",
            "sigma_data": None if math.isfinite(self.sigma_data) and self.sigma_data > 0 else "must be > 0",
            "input_frequencies": None
            if all(math.isfinite(f) and f > 0 for f in self.input_frequencies)
            else f"must be finite numbers > 0, got {list(self.input_frequencies)}",
            "self_condition": None if isinstance(self.self_condition, bool) else "must be true or false",
        }
        for field, problem in problems.items():
            if problem is not None:
                raise ValueError(f"{field}: {problem}")
        object.__setattr__(self, "input_frequencies", tuple(float(f) for f in self.input_frequencies))


class ScoreModel(nn.Module):
    """A network plus an SDE plus a parametrisation: the score model s_θ(x, t, y).

    `forward(x, t, y=None, output="score")` returns the requested quantity — "raw" (the network
    output F), "score", "eps", "x0" (the denoiser E[x0 | x_t]) or "v" — all shaped like x. Losses call
    `forward` (so that a DistributedDataParallel wrapper sees every call); `score`, `denoise` and
    `score_fn` are conveniences for inference.

    Args:
        net: a module called as net(x, t, y) → tensor shaped like x (see `sdegen.nets`).
        sde: the forward SDE.
        parametrisation: a `Parametrisation`.
        num_classes: classes the net was trained on (label `num_classes` is ∅), or None.
    """

    def __init__(self, net: nn.Module, sde, parametrisation: Parametrisation | None = None, *, num_classes=None):
        super().__init__()
        self.net = net
        self.sde = sde
        self.parametrisation = parametrisation or Parametrisation()
        self.num_classes = num_classes

    def coefficients(self, x: torch.Tensor, t: Time) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(t, alpha, sigma): t of shape (batch,), alpha and sigma shaped to broadcast against x.

        A float t, or any t on the CPU, is range-checked (t ∈ [0, T]); a (batch,) tensor on an accelerator
        is only shape-checked, because reading its values back would stall the device pipeline each call.
        """
        tt = self._time(t, x)
        alpha, sigma = alpha_sigma(self.sde, tt, x)
        return tt, batch_view(alpha, x), batch_view(sigma, x)

    def _time(self, t: Time, x: torch.Tensor) -> torch.Tensor:
        if isinstance(t, torch.Tensor) and t.device.type != "cpu" and t.shape == (x.shape[0],):
            return t.to(x.dtype)  # no range check on accelerators: it would synchronise (see `coefficients`)
        return as_time(t, x, self.sde.T)

    def forward(
        self,
        x: torch.Tensor,
        t: Time,
        y: torch.Tensor | None = None,
        output: str = "score",
        x0_prev: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The requested output at (x, t, y) (a tuple of outputs for a tuple of names, from one network call);
        `x0_prev` is the previous x0 estimate of a self-conditioned model (shaped like x; None = zeros, "no
        estimate"), refused by other models."""
        check_batched(x)
        outputs = (output,) if isinstance(output, str) else tuple(output)
        for o in outputs:
            if o not in OUTPUTS:
                raise ValueError(f"unknown output {o!r}; known: {list(OUTPUTS)}")
        p = self.parametrisation
        if x0_prev is not None and not p.self_condition:
            raise ValueError("x0_prev given to a model without self-conditioning (parametrisation.self_condition)")
        tt, alpha, sigma = self.coefficients(x, t)
        c = v_norm(alpha, sigma, p.sigma_data)
        x_in = x / c if p.precondition else x
        if p.input_frequencies:
            x_in = torch.cat([x_in, input_fourier_features(x, alpha, sigma, p.input_frequencies)], dim=1)
        if p.self_condition:
            if x0_prev is None:
                x0_prev = torch.zeros_like(x)
            elif x0_prev.shape != x.shape:
                raise ValueError(f"x0_prev must be shaped like x {tuple(x.shape)}, got {tuple(x0_prev.shape)}")
            x_in = torch.cat([x_in, x0_prev.to(x_in.dtype) / p.sigma_data], dim=1)
        if p.time_input == "t":
            c_noise = tt
        else:
            c_noise = torch.log((sigma / alpha).flatten().clamp_min(1e-12))
        raw = self.net(x_in, c_noise, y).to(x.dtype)
        out = raw / sigma if p.kind == "score" and p.precondition else raw  # the net predicts sigma·score
        results = tuple(raw if o == "raw" else convert(p.kind, out, x, alpha, sigma, p.sigma_data, o) for o in outputs)
        return results[0] if isinstance(output, str) else results

    def score(self, x: torch.Tensor, t: Time, y: torch.Tensor | None = None) -> torch.Tensor:
        """∇ₓ log p_t(x | y), shaped like x."""
        return self(x, t, y, output="score")

    def denoise(self, x: torch.Tensor, t: Time, y: torch.Tensor | None = None) -> torch.Tensor:
        """The denoiser x0_hat = E[x0 | x_t = x, y], shaped like x."""
        return self(x, t, y, output="x0")

    def score_fn(self, labels: int | torch.Tensor | None = None, guidance: float = 0.0, *, self_condition="carry"):
        """A callable score(x, t) for samplers, optionally class-conditional with classifier-free guidance.

        score = (1 + w)·s(x, t, y) − w·s(x, t, ∅) (Ho & Salimans 2022, `sdegen.guidance.combine_cfg`),
        evaluated as one batched network call of twice the batch when w ≠ 0.

        Args:
            labels: None (unconditional, i.e. ∅ for a conditional net), an int for every sample, or a
                (batch,) long tensor.
            guidance: the guidance weight w ≥ 0; needs labels.
            self_condition: for a self-conditioned model, where x0_prev comes from: "carry" (the x0 estimate
                of the previous call, as a sampler steps; zeros at the first call and whenever a call is at
                t = T, where every run starts, or its batch differs), "two_pass" (a first pass with zeros at
                the same (x, t): a function of (x, t) alone, for likelihoods, at twice the cost) or "none"
                (always zeros). Ignored by other models.
        """
        if guidance < 0 or not math.isfinite(guidance):
            raise ValueError(f"guidance must be a finite number >= 0, got {guidance}")
        if labels is not None and self.num_classes is None:
            raise ValueError("labels given but the model is unconditional (num_classes=None)")
        if guidance and labels is None:
            raise ValueError("classifier-free guidance needs labels")
        if self_condition not in SELF_CONDITION_MODES:
            raise ValueError(f"self_condition must be one of {list(SELF_CONDITION_MODES)}, got {self_condition!r}")
        mode = self_condition if self.parametrisation.self_condition else "none"

        if labels is not None:  # validate once, not at every score evaluation
            self._labels(labels, torch.empty(torch.as_tensor(labels).reshape(-1).shape[0]))
        carried: dict[str, torch.Tensor] = {}  # "carry": the x0 estimate of the last call (per network batch)

        def network(x: torch.Tensor, tt: torch.Tensor, y) -> torch.Tensor:
            """The score of one (possibly doubled) batch, feeding and updating the x0 estimate as `mode` says."""
            if mode == "none":
                return self(x, tt, y)
            prev = None
            if mode == "two_pass":
                prev = self(x, tt, y, output="x0")
            elif carried.get("x0") is not None and carried["x0"].shape == x.shape and float(tt.max()) < self.sde.T:
                prev = carried["x0"]
            s, x0 = self(x, tt, y, output=("score", "x0"), x0_prev=prev)
            if mode == "carry":
                carried["x0"] = x0.detach()
            return s

        def score(x: torch.Tensor, t: Time) -> torch.Tensor:
            y = self._labels(labels, x)
            tt = self._time(t, x)
            if not guidance:
                return network(x, tt, y)
            null = torch.full_like(y, self.num_classes)
            both = network(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, null]))
            cond, uncond = both.chunk(2)
            return combine_cfg(cond, uncond, guidance)

        # The labels the score is conditioned on, per sample (None: the null label or a 0-d label for all);
        # `sdegen.sample` checks them against the labels it is asked to store.
        score.labels = torch.as_tensor(labels) if isinstance(labels, torch.Tensor) and labels.ndim == 1 else None
        return score

    def _labels(self, labels, x: torch.Tensor) -> torch.Tensor | None:
        """Labels as a (batch,) long tensor on x's device; values checked on the CPU copy only once."""
        if labels is None:
            return None
        y = torch.as_tensor(labels, dtype=torch.long)
        if y.device.type == "cpu" and ((y < 0).any() or (y > self.num_classes).any()):
            raise ValueError(f"labels must lie in [0, {self.num_classes}] ({self.num_classes} = null label)")
        y = y.to(x.device)
        y = y.expand(x.shape[0]) if y.ndim == 0 else y
        if y.shape != (x.shape[0],):
            raise ValueError(f"labels must be an int or have shape ({x.shape[0]},), got {tuple(y.shape)}")
        return y
