"""Forward SDEs with linear drift: dx = f(t)·x dt + g(t) dw on t ∈ [0, T], T = 1.

Every SDE here is linear in x, so its transition from x0 is Gaussian:

    x_t | x0 ~ N(alpha(t)·x0, sigma(t)²·I),

where alpha(t) = exp(∫₀ᵗ f) is the *mean scale* and sigma(t) the *marginal std*. The four SDEs
(Song et al. 2021, "Score-based generative modeling through SDEs", eqs. 30–34):

=============  =====================  ========================================  =======================
SDE            f(t)                   g(t)                                      alpha, sigma
=============  =====================  ========================================  =======================
VPSDE          −½β(t)                 √β(t)                                     e^{−½B}, √(1 − e^{−B})
SubVPSDE       −½β(t)                 √(β(t)(1 − e^{−2B}))                      e^{−½B}, 1 − e^{−B}
VESDE          0                      σ(t)√(2 ln(σmax/σmin))                    1, √(σ(t)² − σmin²)
PowerVESDE     0                      σ^t                                       1, √((σ^{2t} − 1)/(2 ln σ))
=============  =====================  ========================================  =======================

with β(t) = βmin + t(βmax − βmin), B(t) = ∫₀ᵗβ = βmin t + ½t²(βmax − βmin), σ(t) = σmin(σmax/σmin)^t.

The VE marginal std is the exact √(σ(t)² − σmin²) of the SDE started at t = 0, not σ(t) as in
score_sde (which treats the data as already blurred by σmin); the difference is below σmin.

Conventions: t is a float or a tensor of shape (batch,); x has shape (batch, *data_shape) of any rank.
Per-time quantities (diffusion, mean scale, std) are returned with shape (batch,).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from sdegen._checks import Time, as_time, batch_view, check_batched, check_positive


class AbstractSDE(ABC):
    """A forward SDE dx = f(t)·x dt + g(t) dw with Gaussian transitions; see the module docstring.

    Subclasses define the scalar coefficients (`_drift_coeff`, `_diffusion`, `_mean_scale`,
    `_marginal_std`) on float64 time tensors and the prior std; everything else is shared.
    """

    T: float = 1.0
    name: str = "abstract"
    vp_family: bool = False  # drift −½β(t)·x, prior N(0, I): the discrete DDPM/DDIM samplers apply

    # -- coefficients, implemented by each SDE on a float64 tensor t of shape (batch,) ---------------
    @abstractmethod
    def _drift_coeff(self, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _diffusion(self, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _mean_scale(self, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _marginal_std(self, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def time_of_half_log_nsr(self, rho: torch.Tensor) -> torch.Tensor:
        """The time t with ln(sigma(t)/alpha(t)) = rho, in closed form (float64 rho, any shape)."""

    @property
    @abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the prior N(0, prior_std² I) that approximates p_T."""

    @abstractmethod
    def params(self) -> dict[str, float]:
        """The constructor parameters, e.g. {"beta_min": 0.1, "beta_max": 20.0}."""

    # -- public, shape-checked API --------------------------------------------------------------------
    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha(t), sigma(t)) for a float64 tensor t already known to lie in [0, T], unchecked.

        The hot path of training and network calls: the range check of `mean_scale` reads t back to the
        host, a device synchronisation per call on CUDA.
        """
        return self._mean_scale(t), self._marginal_std(t)

    def _coeff(self, fn, t: Time, x: torch.Tensor) -> torch.Tensor:
        tt = as_time(t, x, self.T)
        # Evaluate in float64: e^{-B} and 1 - e^{-B} lose digits in float32 near t = 0.
        return fn(tt.double()).to(x.dtype)

    def drift(self, x: torch.Tensor, t: Time) -> torch.Tensor:
        """Forward drift f(t)·x, shaped like x."""
        check_batched(x)
        return batch_view(self._coeff(self._drift_coeff, t, x), x) * x

    def diffusion(self, t: Time, x: torch.Tensor | None = None) -> torch.Tensor:
        """Diffusion coefficient g(t), shape (batch,) (batch taken from x or from t)."""
        return self._coeff(self._diffusion, t, _time_like(t, x))

    def mean_scale(self, t: Time, x: torch.Tensor | None = None) -> torch.Tensor:
        """Mean coefficient alpha(t) = exp(∫₀ᵗ f), shape (batch,)."""
        return self._coeff(self._mean_scale, t, _time_like(t, x))

    def marginal_std(self, t: Time, x: torch.Tensor | None = None) -> torch.Tensor:
        """Marginal standard deviation sigma(t) of x_t | x0, shape (batch,)."""
        return self._coeff(self._marginal_std, t, _time_like(t, x))

    def marginal(self, x0: torch.Tensor, t: Time) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters of x_t | x0 ~ N(mean, std² I).

        Returns:
            mean: shaped like x0, alpha(t)·x0; std: shape (batch,), sigma(t).
        """
        check_batched(x0, "x0")
        alpha = self.mean_scale(t, x0)
        return batch_view(alpha, x0) * x0, self.marginal_std(t, x0)

    def perturb(
        self, x0: torch.Tensor, t: Time, noise: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw x_t = alpha(t)·x0 + sigma(t)·noise, with noise ~ N(0, I) unless given."""
        mean, std = self.marginal(x0, t)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        return mean + batch_view(std, x0) * noise

    def prior_sample(
        self, shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None, **kwargs
    ) -> torch.Tensor:
        """Sample the prior N(0, prior_std² I) with the given full shape (batch, *data_shape)."""
        return self.prior_std * torch.randn(tuple(shape), generator=generator, **kwargs)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of the prior N(0, prior_std² I) at z (batch, *shape), in nats, shape (batch,)."""
        check_batched(z, "z")
        d = z[0].numel()
        s2 = self.prior_std**2
        flat = z.reshape(z.shape[0], -1)
        return -0.5 * d * math.log(2 * math.pi * s2) - 0.5 * (flat * flat).sum(1) / s2

    def reverse(self, score, *, data_shape: tuple[int, ...] | None = None, sde_type: str = "ito", t_min: float = 0.0):
        """The reverse-time SDE for `score`, as a torchsde SDE in flipped time s = T − t.

        See `sdegen.reverse.ReverseSDE`: state (batch, d) flattened, drift g²·score − f·x in s,
        diagonal noise g(T − s). A plain callable is wrapped in a `GuardedScore` on [t_min, T] (output
        check, time guard, NFE count as `.nfe`); a `GuardedScore` is used as it is.
        """
        from sdegen.reverse import ReverseSDE
        from sdegen.score_guard import guard

        return ReverseSDE(self, guard(score, t_min, self.T), data_shape=data_shape, sde_type=sde_type)

    def probability_flow(self, score, *, t_min: float = 0.0):
        """The probability-flow ODE dx/dt = f(t)·x − ½g(t)²·score(x, t), as a module for torchdiffeq.

        See `sdegen.reverse.ProbabilityFlowODE`; the score is guarded as in `reverse`.
        """
        from sdegen.reverse import ProbabilityFlowODE
        from sdegen.score_guard import guard

        return ProbabilityFlowODE(self, guard(score, t_min, self.T), t_min=t_min)

    def forward_sde(self, *, data_shape: tuple[int, ...] | None = None):
        """The forward SDE itself as a torchsde SDE on flattened state (for tests and teaching)."""
        from sdegen.reverse import ForwardSDE

        return ForwardSDE(self, data_shape=data_shape)

    # -- process protocol (sdegen.processes): forward, bridge, equilibrium, loss -----------------------
    # With these four methods every SDE here is a bridge process: x0-prediction plus `sample_bridge` is
    # DDPM-style ancestral sampling on any time grid (`sdegen.processes.sample_backward`).
    kind: str = "euclidean"

    def sample_forward(self, x0: torch.Tensor, t: Time, generator=None) -> torch.Tensor:
        """A draw of x_t | x0 ~ N(alpha(t)·x0, sigma(t)² I), shaped like x0.

        Args:
            x0: (batch, *data_shape) float.
            t: float or (batch,) tensor in [0, T].
            generator: a torch.Generator, or a sequence of one generator per sample.
        """
        from sdegen.processes._common import randn

        check_batched(x0, "x0")
        return self.perturb(x0, t, noise=randn(x0.shape, generator, x0.dtype, x0.device))

    def sample_bridge(self, x0: torch.Tensor, x_t: torch.Tensor, s: Time, t: Time, generator=None) -> torch.Tensor:
        """A draw of the Gaussian posterior q(x_s | x_t, x0) for 0 <= s < t (Ho et al. 2020, eq. 7).

        With a = alpha(t)/alpha(s) and v = sigma(t)² − a²·sigma(s)² (the variance of x_t | x_s):
        mean = (alpha(s)·v/sigma(t)²)·x0 + (a·sigma(s)²/sigma(t)²)·x_t, variance = sigma(s)²·v/sigma(t)².

        Args:
            x0, x_t: (batch, *data_shape) float, same shape.
            s, t: floats or (batch,) tensors with 0 <= s < t <= T.
            generator: a torch.Generator, or a sequence of one generator per sample.

        Raises:
            ValueError: shapes differ, or s >= t, or a time lies outside [0, T].
        """
        from sdegen.processes._common import bridge_times, randn, view

        check_batched(x0, "x0")
        check_batched(x_t, "x_t")
        if x0.shape != x_t.shape:
            raise ValueError(f"x0 and x_t must have the same shape, got {tuple(x0.shape)} and {tuple(x_t.shape)}")
        ss, tt = bridge_times(s, t, x_t.shape[0])
        if tt.max().item() > self.T:
            raise ValueError(f"t must lie in [0, {self.T}], got {tt.max().item():.6g}")
        alpha_s, alpha_t = self._mean_scale(ss), self._mean_scale(tt)
        var_s, var_t = self._marginal_std(ss) ** 2, self._marginal_std(tt) ** 2
        a = alpha_t / alpha_s
        v = (var_t - a * a * var_s).clamp_min(0.0)
        mean = view(alpha_s * v / var_t, x_t) * x0 + view(a * var_s / var_t, x_t) * x_t
        std = view((var_s * v / var_t).sqrt(), x_t)
        return mean + std * randn(x_t.shape, generator, x_t.dtype, x_t.device)

    def sample_equilibrium(self, shape, generator=None, dtype=torch.float32, device=None) -> torch.Tensor:
        """A draw of the prior N(0, prior_std² I) of full shape (batch, *data_shape) (a generator sequence is
        used one generator per sample)."""
        from sdegen.processes._common import randn

        return self.prior_std * randn(tuple(shape), generator, dtype, device)

    def loss(self, prediction: torch.Tensor, x0: torch.Tensor, t: Time, *, x_t=None, mask=None) -> torch.Tensor:
        """Mean squared error of an x0 prediction over the data dims (the diffused ones when a bool `mask`
        shaped like x0 is given), shape (batch,); x_t is not used."""
        from sdegen.processes._common import masked_mean

        if prediction.shape != x0.shape:
            shapes = f"{tuple(prediction.shape)} and {tuple(x0.shape)}"
            raise ValueError(f"prediction and x0 must have the same shape, got {shapes}")
        return masked_mean((prediction - x0) ** 2, mask)

    # -- end of the process protocol -------------------------------------------------------------------

    def attrs(self) -> dict[str, float | str]:
        """Flat netCDF-safe attributes: {"sde": name, "sde_<param>": value, ...}."""
        return {"sde": self.name, **{f"sde_{k}": float(v) for k, v in self.params().items()}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.params() == other.params()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self.params().items())))


def _time_like(t: Time, x: torch.Tensor | None) -> torch.Tensor:
    """A dummy (batch, 1) tensor that fixes batch, dtype and device for coefficient evaluation."""
    if x is not None:
        return x
    if isinstance(t, torch.Tensor) and t.ndim == 1:
        dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
        return torch.empty(t.shape[0], 1, dtype=dtype, device=t.device)
    if isinstance(t, torch.Tensor):
        return torch.empty(1, 1, dtype=t.dtype if t.is_floating_point() else torch.float64, device=t.device)
    return torch.empty(1, 1, dtype=torch.float64)


class _BetaLinear(AbstractSDE):
    """Shared pieces of the VP and sub-VP SDEs: β(t) = βmin + t(βmax − βmin)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = check_positive(beta_min, "beta_min")
        self.beta_max = check_positive(beta_max, "beta_max")
        if self.beta_max <= self.beta_min:
            raise ValueError(f"beta_max must be > beta_min, got beta_min={beta_min}, beta_max={beta_max}")

    vp_family = True

    def params(self) -> dict[str, float]:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max}

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """β(t) = βmin + t(βmax − βmin)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def beta_integral(self, t: torch.Tensor) -> torch.Tensor:
        """B(t) = ∫₀ᵗ β(s) ds = βmin·t + ½t²(βmax − βmin)."""
        return self.beta_min * t + 0.5 * t * t * (self.beta_max - self.beta_min)

    def _drift_coeff(self, t):
        return -0.5 * self.beta(t)

    def _mean_scale(self, t):
        return torch.exp(-0.5 * self.beta_integral(t))

    @property
    def prior_std(self) -> float:
        return 1.0

    def time_of_beta_integral(self, B: torch.Tensor) -> torch.Tensor:
        """The t with B(t) = B: the positive root of ½(βmax − βmin)t² + βmin·t − B = 0 (cancellation-free form)."""
        b0, db = self.beta_min, self.beta_max - self.beta_min
        return 2 * B / (b0 + torch.sqrt(b0 * b0 + 2 * db * B))

    def discrete_betas(self, num_steps: int) -> torch.Tensor:
        """The DDPM schedule this SDE discretises: β_i = βmin/N + (i−1)(βmax − βmin)/(N(N−1)), i = 1..N.

        With t_i = i/N, prod_{j<=i}(1 − β_j) → alpha(t_i)² as N → ∞ (Song et al. 2021, App. B).
        """
        from sdegen.schedules import _check_steps, linear_betas

        num_steps = _check_steps(num_steps)  # before dividing by it
        return linear_betas(num_steps, self.beta_min / num_steps, self.beta_max / num_steps)


class VPSDE(_BetaLinear):
    """Variance-preserving SDE dx = −½β(t)x dt + √β(t) dw (the continuous DDPM)."""

    name = "vp"

    def _diffusion(self, t):
        return torch.sqrt(self.beta(t))

    def _marginal_std(self, t):
        return torch.sqrt(-torch.expm1(-self.beta_integral(t)))

    def time_of_half_log_nsr(self, rho):
        # sigma²/alpha² = e^B − 1 = e^{2ρ}  ⇒  B = softplus(2ρ)
        return self.time_of_beta_integral(torch.logaddexp(2 * rho, torch.zeros_like(rho)))


class SubVPSDE(_BetaLinear):
    """Sub-VP SDE dx = −½β(t)x dt + √(β(t)(1 − e^{−2B(t)})) dw; its variance stays below the VP's."""

    name = "subvp"

    def _diffusion(self, t):
        return torch.sqrt(self.beta(t) * -torch.expm1(-2.0 * self.beta_integral(t)))

    def _marginal_std(self, t):
        return -torch.expm1(-self.beta_integral(t))

    def time_of_half_log_nsr(self, rho):
        # sigma/alpha = e^{B/2} − e^{−B/2} = 2 sinh(B/2) = e^ρ  ⇒  B = 2 asinh(e^ρ/2)
        return self.time_of_beta_integral(2 * torch.asinh(torch.exp(rho) / 2))


class VESDE(AbstractSDE):
    """Variance-exploding SDE dx = σ(t)√(2 ln(σmax/σmin)) dw with σ(t) = σmin(σmax/σmin)^t (SMLD/NCSN)."""

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min = check_positive(sigma_min, "sigma_min")
        self.sigma_max = check_positive(sigma_max, "sigma_max")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max must be > sigma_min, got sigma_min={sigma_min}, sigma_max={sigma_max}")

    def params(self) -> dict[str, float]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The noise level σ(t) = σmin(σmax/σmin)^t (not the marginal std; see the module docstring)."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def _drift_coeff(self, t):
        return torch.zeros_like(t)

    def _diffusion(self, t):
        return self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    def _mean_scale(self, t):
        return torch.ones_like(t)

    def _marginal_std(self, t):
        # Var = ∫₀ᵗ g² = σ(t)² − σmin²; written as σmin²·expm1(2t ln r) to keep digits near t = 0.
        log_ratio = math.log(self.sigma_max / self.sigma_min)
        return self.sigma_min * torch.sqrt(torch.expm1(2 * t * log_ratio))

    def time_of_half_log_nsr(self, rho):
        # sigma² = σmin²(e^{2t ln r} − 1) = e^{2ρ}  ⇒  2t ln r = softplus(2ρ − 2 ln σmin)
        log_r = math.log(self.sigma_max / self.sigma_min)
        z = 2 * rho - 2 * math.log(self.sigma_min)
        return torch.logaddexp(z, torch.zeros_like(z)) / (2 * log_r)

    @property
    def prior_std(self) -> float:
        return math.sqrt(self.sigma_max**2 - self.sigma_min**2)


class PowerVESDE(AbstractSDE):
    """The tutorial SDE dx = σ^t dw: marginal std √((σ^{2t} − 1)/(2 ln σ)), no drift."""

    name = "powerve"

    def __init__(self, sigma: float = 25.0):
        self.sigma = check_positive(sigma, "sigma")
        if self.sigma <= 1.0:
            raise ValueError(f"sigma must be > 1 for dx = sigma^t dw to diffuse, got sigma={sigma}")

    def params(self) -> dict[str, float]:
        return {"sigma": self.sigma}

    def _drift_coeff(self, t):
        return torch.zeros_like(t)

    def _diffusion(self, t):
        return self.sigma**t

    def _mean_scale(self, t):
        return torch.ones_like(t)

    def _marginal_std(self, t):
        log_s = math.log(self.sigma)
        return torch.sqrt(torch.expm1(2 * t * log_s) / (2 * log_s))

    def time_of_half_log_nsr(self, rho):
        # sigma² = (e^{2t ln σ} − 1)/(2 ln σ) = e^{2ρ}  ⇒  2t ln σ = softplus(2ρ + ln(2 ln σ))
        log_s = math.log(self.sigma)
        z = 2 * rho + math.log(2 * log_s)
        return torch.logaddexp(z, torch.zeros_like(z)) / (2 * log_s)

    @property
    def prior_std(self) -> float:
        return math.sqrt((self.sigma**2 - 1) / (2 * math.log(self.sigma)))


SDES: dict[str, type[AbstractSDE]] = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE, "powerve": PowerVESDE}


def sde_from_attrs(attrs: dict) -> AbstractSDE:
    """Rebuild an SDE from `AbstractSDE.attrs()` (as stored in trajectories and checkpoints)."""
    name = attrs.get("sde")
    if name not in SDES:
        raise ValueError(f"unknown SDE {name!r}; known: {sorted(SDES)}")
    kwargs = {k[4:]: float(v) for k, v in attrs.items() if k.startswith("sde_")}
    return SDES[name](**kwargs)
