"""Closed-form oracles for Gaussian and Gaussian-mixture data under any linear SDE.

If x0 ~ Σ_k w_k N(μ_k, diag(s_k²)) and x_t = alpha(t)·x0 + sigma(t)·ε (see `sdegen.sdes`), then

    p_t = Σ_k w_k N(alpha·μ_k, diag(alpha²·s_k² + sigma²)),

so the marginal density, the score ∇ log p_t, and Tweedie's denoiser E[x0 | x_t] are exact. For a
single Gaussian the probability-flow ODE is solved exactly too: each coordinate moves on the affine map

    x_t = alpha_t·μ + (x_u − alpha_u·μ)·v_t / v_u,    v_t = √(alpha_t²·s² + sigma_t²),

so the model density obtained by pushing the prior through the PF ODE from T down to t_min is known
in closed form (`model_log_prob`). These functions are the oracles for the tests and a teaching tool.

Shapes: means and stds have the data shape (*data_shape); x has shape (batch, *data_shape);
log-densities are (batch,) in nats.
"""

from __future__ import annotations

import math

import torch

from sdegen._checks import Time, batch_view, check_batched
from sdegen.score import tweedie


class GaussianMixture:
    """Mixture Σ_k w_k N(μ_k, diag(s_k²)) over data of shape `data_shape`.

    Args:
        weights: (K,) positive, normalised to sum to one.
        means: (K, *data_shape).
        stds: (K, *data_shape) positive, or (K,) for isotropic components.
    """

    def __init__(self, weights, means, stds):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        if self.means.ndim < 2:
            raise ValueError(f"means must have shape (K, *data_shape), got {tuple(self.means.shape)}")
        k = self.means.shape[0]
        w = torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (k,) or not (w > 0).all() or not torch.isfinite(w).all():
            raise ValueError(f"weights must be {k} positive finite numbers, got {w.tolist()}")
        self.weights = w / w.sum()
        s = torch.as_tensor(stds, dtype=torch.float64)
        if s.ndim == 1:
            s = s.reshape(k, *([1] * (self.means.ndim - 1))).expand_as(self.means)
        if s.shape != self.means.shape:
            raise ValueError(f"stds must have shape (K,) or {tuple(self.means.shape)}, got {tuple(s.shape)}")
        if not (s > 0).all() or not torch.isfinite(s).all():
            raise ValueError("stds must be positive and finite")
        self.stds = s.clone()

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.means.shape[1:])

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(K={self.num_components}, data_shape={self.data_shape})"

    # -- the data distribution -----------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        """Draw n samples, shape (n, *data_shape)."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn((n, *self.data_shape), generator=generator, dtype=torch.float64)
        return (self.means[comp] + self.stds[comp] * eps).to(dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density at x (batch, *data_shape), in nats, shape (batch,)."""
        return _mixture_log_prob(x, self.weights, self.means, self.stds)

    def mean(self) -> torch.Tensor:
        """E[x0], shape data_shape."""
        return torch.einsum("k,k...->...", self.weights, self.means)

    def variance(self) -> torch.Tensor:
        """Per-coordinate Var[x0], shape data_shape."""
        second = torch.einsum("k,k...->...", self.weights, self.stds**2 + self.means**2)
        return second - self.mean() ** 2

    # -- marginals under an SDE -------------------------------------------------------------------------
    def marginal(self, sde, t: float) -> "GaussianMixture":
        """The exact marginal p_t at a single time t, as a GaussianMixture."""
        alpha, sigma = _coeffs(sde, t)
        return GaussianMixture(self.weights, alpha * self.means, torch.sqrt(alpha**2 * self.stds**2 + sigma**2))

    def marginal_log_prob(self, sde, x: torch.Tensor, t: Time) -> torch.Tensor:
        """log p_t(x) in nats, shape (batch,); t a float or a (batch,) tensor."""
        means, stds = self._marginal_params(sde, x, t)
        return _mixture_log_prob(x, self.weights, means, stds)

    def score(self, sde, x: torch.Tensor, t: Time) -> torch.Tensor:
        """Exact score ∇ₓ log p_t(x), shaped like x (computed in float64, returned in x.dtype)."""
        means, stds = self._marginal_params(sde, x, t)
        xd = x.double().unsqueeze(1)  # (batch, 1, *shape)
        resp = self._responsibilities(xd, means, stds)  # (batch, K)
        comp_scores = -(xd - means) / stds**2  # (batch, K, *shape)
        return torch.einsum("bk,bk...->b...", resp, comp_scores).to(x.dtype)

    def denoise(self, sde, x: torch.Tensor, t: Time) -> torch.Tensor:
        """Tweedie's E[x0 | x_t = x] = (x + sigma²·score) / alpha, shaped like x."""
        check_batched(x)
        tt = _time_tensor(sde, x, t)
        alpha = batch_view(sde.mean_scale(tt, x.double()), x)
        sigma = batch_view(sde.marginal_std(tt, x.double()), x)
        return tweedie(x.double(), self.score(sde, x, tt).double(), alpha, sigma).to(x.dtype)

    def score_fn(self, sde):
        """The exact score as a callable score(x, t), the shape every sampler takes."""

        def score(x: torch.Tensor, t: Time) -> torch.Tensor:
            return self.score(sde, x, t)

        score.__qualname__ = f"exact score of {self!r} under {sde!r}"
        return score

    # -- classes: component k is class k -------------------------------------------------------------------
    def component(self, k: int) -> "GaussianMixture":
        """The class-conditional distribution p(x0 | y = k) = N(μ_k, diag(s_k²)), as a one-component mixture."""
        if not 0 <= int(k) < self.num_components:
            raise ValueError(f"component must lie in [0, {self.num_components}), got {k}")
        return GaussianMixture(torch.ones(1), self.means[k : k + 1], self.stds[k : k + 1])

    def class_log_posterior(self, sde, x: torch.Tensor, t: Time) -> torch.Tensor:
        """log p_t(y = k | x_t = x) = log w_k + log N_k,t(x) − log p_t(x), (batch, K) in nats (float64): the exact
        noise-conditional classifier of the labelled mixture, for classifier guidance."""
        means, stds = self._marginal_params(sde, x, t)
        comp = _component_log_probs(x.double().unsqueeze(1), means, stds) + torch.log(self.weights)
        return comp - comp.logsumexp(1, keepdim=True)

    def class_logits_fn(self, sde):
        """The exact classifier as a callable classifier(x, t) → (batch, K) log-probabilities (differentiable in x),
        the shape `sdegen.guidance.classifier_guidance` takes."""

        def classifier(x: torch.Tensor, t: Time) -> torch.Tensor:
            return self.class_log_posterior(sde, x, t)

        classifier.num_classes = self.num_components
        classifier.data_shape = self.data_shape
        return classifier

    def _marginal_params(self, sde, x: torch.Tensor, t: Time):
        check_batched(x)
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"x has data shape {tuple(x.shape[1:])}, the mixture has {self.data_shape}")
        tt = _time_tensor(sde, x, t)
        xd = x.double()
        alpha = sde.mean_scale(tt, xd).reshape(-1, 1, *([1] * len(self.data_shape)))
        sigma = sde.marginal_std(tt, xd).reshape(-1, 1, *([1] * len(self.data_shape)))
        means = alpha * self.means  # (batch, K, *shape)
        stds = torch.sqrt(alpha**2 * self.stds**2 + sigma**2)
        return means, stds

    def _responsibilities(self, xd, means, stds):
        comp = _component_log_probs(xd, means, stds) + torch.log(self.weights)
        # exp(c − logsumexp c) rather than torch.softmax: the latter is very slow on tiny tensors with threads.
        return (comp - comp.logsumexp(1, keepdim=True)).exp()


class Gaussian(GaussianMixture):
    """A single Gaussian N(μ, diag(s²)); adds the exact probability-flow map and model density."""

    def __init__(self, mean, std):
        mean = torch.as_tensor(mean, dtype=torch.float64)
        std = torch.as_tensor(std, dtype=torch.float64)
        if std.ndim == 0:
            std = std.expand_as(mean)
        super().__init__(torch.ones(1), mean[None], std[None])

    @property
    def mu(self) -> torch.Tensor:
        return self.means[0]

    @property
    def std(self) -> torch.Tensor:
        return self.stds[0]

    def _v(self, sde, t: float) -> tuple[float, torch.Tensor]:
        alpha, sigma = _coeffs(sde, t)
        return alpha, torch.sqrt(alpha**2 * self.std**2 + sigma**2)

    def flow_map(self, sde, x: torch.Tensor, t_from: float, t_to: float) -> torch.Tensor:
        """Exact PF-ODE solution: the state at t_to of the trajectory through x at t_from."""
        check_batched(x)
        a0, v0 = self._v(sde, t_from)
        a1, v1 = self._v(sde, t_to)
        return (a1 * self.mu + (x.double() - a0 * self.mu) * v1 / v0).to(x.dtype)

    def model_log_prob(self, sde, x: torch.Tensor, t_min: float) -> torch.Tensor:
        """Log-density at x (time t_min) of the model prior(T) pushed through the exact PF ODE, in nats.

        log q(x) = prior_logp(z) + Σ log(v_T / v_{t_min}),  z = flow_map(x, t_min → T).
        This is what `sdegen.log_likelihood` with the exact score must return.
        """
        z = self.flow_map(sde, x.double(), t_min, sde.T)
        _, v0 = self._v(sde, t_min)
        _, v1 = self._v(sde, sde.T)
        return (sde.prior_logp(z) + torch.log(v1 / v0).sum()).to(x.dtype)


def gaussian_mixture_2d(n_modes: int = 8, radius: float = 4.0, std: float = 0.5) -> GaussianMixture:
    """Equal-weight mixture of `n_modes` isotropic 2-D Gaussians evenly placed on a circle."""
    ang = torch.arange(n_modes, dtype=torch.float64) * 2 * math.pi / n_modes
    means = radius * torch.stack([torch.cos(ang), torch.sin(ang)], dim=1)
    return GaussianMixture(torch.ones(n_modes), means, torch.full((n_modes,), std))


def _coeffs(sde, t: float) -> tuple[float, float]:
    x = torch.zeros(1, 1, dtype=torch.float64)
    return float(sde.mean_scale(float(t), x)), float(sde.marginal_std(float(t), x))


def _time_tensor(sde, x, t):
    from sdegen._checks import as_time

    return as_time(t, x.double(), sde.T)


def _component_log_probs(xd, means, stds):
    """log N(x; μ_k, diag(s_k²)) for xd (batch, 1, *shape), means/stds broadcastable (.., K, *shape)."""
    z = (xd - means) / stds
    per = -0.5 * z**2 - torch.log(stds) - 0.5 * math.log(2 * math.pi)
    return per.flatten(2).sum(-1)


def _mixture_log_prob(x, weights, means, stds):
    check_batched(x)
    xd = x.double().unsqueeze(1)
    comp = _component_log_probs(xd, means, stds) + torch.log(weights)
    return torch.logsumexp(comp, dim=1).to(x.dtype)


class CorrelatedGaussian:
    """N(μ, Σ) over vectors (batch, D) with a full covariance, possibly singular (a conditional law).

    Under the SDE, x_t ~ N(alpha·μ, alpha²Σ + sigma²I), so the score −(alpha²Σ + sigma²I)⁻¹(x − alpha·μ) is exact
    for every t with sigma > 0, even where Σ is singular. `conditional(known)` is the law of x0 given known
    entries (a Gaussian with zero variance on them), whose score is the exact conditional score of imputation.

    Args:
        mean: (D,); cov: (D, D) symmetric positive semi-definite.
    """

    def __init__(self, mean, cov):
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.cov = torch.as_tensor(cov, dtype=torch.float64)
        d = self.mean.shape[0] if self.mean.ndim == 1 else -1
        if self.mean.ndim != 1 or self.cov.shape != (d, d):
            raise ValueError(f"need mean (D,) and cov (D, D), got {tuple(self.mean.shape)}, {tuple(self.cov.shape)}")
        if not torch.allclose(self.cov, self.cov.T, atol=1e-12) or torch.linalg.eigvalsh(self.cov).min() < -1e-10:
            raise ValueError("cov must be symmetric positive semi-definite")

    @classmethod
    def random(cls, dim: int, generator: torch.Generator, mean=None) -> "CorrelatedGaussian":
        """A test problem with strong correlations: the correlation matrix of A·Aᵀ/dim + 0.1·I, A (dim, dim) standard
        normal from `generator`; mean zeros unless given."""
        a = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
        cov = a @ a.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64)
        d = torch.sqrt(torch.diag(cov))
        return cls(torch.zeros(dim, dtype=torch.float64) if mean is None else mean, cov / d[:, None] / d[None, :])

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        """n draws, (n, D)."""
        vals, vecs = torch.linalg.eigh(self.cov)
        root = vecs * vals.clamp_min(0).sqrt()
        z = torch.randn((n, self.dim), generator=generator, dtype=torch.float64)
        return (self.mean + z @ root.T).to(dtype)

    def marginal_cov(self, sde, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, cov) of x_t at one time t."""
        alpha, sigma = _coeffs(sde, t)
        return alpha * self.mean, alpha**2 * self.cov + sigma**2 * torch.eye(self.dim, dtype=torch.float64)

    def score(self, sde, x: torch.Tensor, t: Time) -> torch.Tensor:
        """Exact ∇ₓ log p_t(x) for x (batch, D), shaped like x."""
        check_batched(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}), got {tuple(x.shape)}")
        tt = _time_tensor(sde, x, t)
        alpha, sigma = sde.mean_scale(tt, x.double()), sde.marginal_std(tt, x.double())  # (batch,)
        cov = alpha[:, None, None] ** 2 * self.cov + sigma[:, None, None] ** 2 * torch.eye(
            self.dim, dtype=torch.float64
        )
        resid = x.double() - alpha[:, None] * self.mean
        return -torch.linalg.solve(cov, resid.unsqueeze(-1)).squeeze(-1).to(x.dtype)

    def score_fn(self, sde):
        """The exact score as a callable score(x, t)."""

        def score(x: torch.Tensor, t: Time) -> torch.Tensor:
            return self.score(sde, x, t)

        score.__qualname__ = f"exact score of a {self.dim}-D correlated Gaussian under {sde!r}"
        return score

    def conditional(self, mask, values) -> "CorrelatedGaussian":
        """The law of x0 given x0[mask] = values[mask] (mask (D,) bool/0-1, values (D,)).

        Mean μ_u + Σ_uk Σ_kk⁻¹(y − μ_k) and covariance Σ_uu − Σ_uk Σ_kk⁻¹ Σ_ku on the unknown entries; the known
        entries equal y with zero variance.
        """
        k = torch.as_tensor(mask).bool()
        y = torch.as_tensor(values, dtype=torch.float64)
        if k.shape != (self.dim,) or y.shape != (self.dim,):
            raise ValueError(f"mask and values must have shape ({self.dim},)")
        u = ~k
        gain = self.cov[u][:, k] @ torch.linalg.inv(self.cov[k][:, k])
        mean = y.clone()
        mean[u] = self.mean[u] + gain @ (y[k] - self.mean[k])
        cov = torch.zeros_like(self.cov)
        cov[u.nonzero()[:, 0][:, None], u.nonzero()[:, 0]] = self.cov[u][:, u] - gain @ self.cov[k][:, u]
        return CorrelatedGaussian(mean, (cov + cov.T) / 2)
