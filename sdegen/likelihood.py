"""Exact log-likelihood through the probability-flow ODE, and the deterministic encode/decode maps.

The probability-flow (PF) ODE dx/dt = v(x, t) = f(t)·x − ½·g(t)²·s(x, t) (Song et al. 2021, eq. 13)
moves the data density p_{t_min} onto p_T. Along one of its paths the log-density obeys the
instantaneous change of variables (Chen et al. 2018, "Neural ODEs", thm. 1)

    d/dt log p_t(x_t) = −div v(x_t, t),

so integrating x and Δ = ∫ div v dt together from t_min up to T (the *augmented* ODE) gives

    log p_{t_min}(x) = log p_T(z) + ∫_{t_min}^{T} div v(x_t, t) dt,     z = x_T,

and the model's log-likelihood replaces the unknown p_T by the prior: logp = prior_logp(z) + Δ (nats).
With the exact score this is the exact log-density of the model "prior pushed through the PF ODE"
(`sdegen.analytic.Gaussian.model_log_prob`), up to the ODE solver's tolerance; see Song et al. 2021,
App. D.2, and FFJORD (Grathwohl et al. 2019) for the Hutchinson estimate of div v.

Conventions: forward time, t_min → T; the score is only ever evaluated at t ∈ [t_min, T] (torchdiffeq
probes beyond the end point: `step_t` stops accepted steps at the end and the PF module clamps the
rest); the time grid is float64; NFE counts real score evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchdiffeq

from sdegen._checks import check_batched, check_finite, check_positive, make_generator
from sdegen.divergence import PROBES, draw_probes, exact_divergence, hutchinson_divergence
from sdegen.reverse import ADAPTIVE_METHODS
from sdegen.runtime import tune_allocator_once
from sdegen.score_guard import GuardedScore
from sdegen.sdes import AbstractSDE

DIVERGENCES = ("hutchinson", "exact")
METHODS = ADAPTIVE_METHODS  # rtol and atol mean something only for torchdiffeq's adaptive methods


@dataclass(frozen=True)
class LikelihoodResult:
    """Result of `log_likelihood`; all log-densities in nats.

    Attributes:
        logp: (batch,) log-likelihood prior_logp + delta_logp (mean over probes).
        prior_logp: (batch,) log prior(z), z the latent at T.
        delta_logp: (batch,) ∫_{t_min}^{T} div v dt (mean over probes).
        nfe: score evaluations made (dopri5: 6 per step + 2).
        z: (batch, *data_shape) the latent x_T.
        logp_probes: (probes, batch) one log-likelihood per Hutchinson probe (one row for "exact").
        logp_stderr: (batch,) standard error of `logp` over the probes (std/√K), or None with one probe
            or the exact divergence. It measures the probe noise only, not the solver error.
    """

    logp: torch.Tensor
    prior_logp: torch.Tensor
    delta_logp: torch.Tensor
    nfe: int
    z: torch.Tensor
    logp_probes: torch.Tensor
    logp_stderr: torch.Tensor | None = None


class AugmentedFlow(torch.nn.Module):
    """forward(t, (x, Δ/D)) = (v(x, t), div v(x, t)/D) for torchdiffeq; Δ has shape (probes, batch).

    The log-density component is carried per dimension (D = data dimension, nats per dimension: the
    unit of bits/dim), so the solver's rtol and atol bound its local error as they bound one
    coordinate's. Carried as Δ itself, atol would ask for Δ to 1e-5 nats absolutely, ~10⁻⁸ bits/dim on
    MNIST: near t_min, where Δ is still small, that costs steps for nothing (measured on 32 MNIST test
    digits at rtol = atol = 1e-5: 1040 NFE against 782, bits/dim equal to 6e-4).

    Args:
        sde: the forward SDE.
        score: the run's `GuardedScore` (a plain callable is guarded by `sde.probability_flow`).
        t_min: the lower end of the time range (solver probes are clamped to [t_min, T]).
        probes: (K, batch, *data_shape) fixed Hutchinson probes, or None for the exact divergence.
    """

    def __init__(self, sde: AbstractSDE, score, t_min: float, probes: torch.Tensor | None):
        super().__init__()
        self.flow = sde.probability_flow(score, t_min=t_min)
        self.probes = probes

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        x = state[0]
        tt = self.flow.clamped_time(t, x)
        with torch.enable_grad():
            # A fresh leaf per evaluation: no autograd graph survives from one solver stage to the next.
            xg = x.detach().requires_grad_(True)
            v = self.flow.velocity(tt, xg)
            div = exact_divergence(v, xg) if self.probes is None else hutchinson_divergence(v, xg, self.probes)
        return v.detach(), div.detach() / x[0].numel()


def log_likelihood(
    sde: AbstractSDE,
    score,
    x: torch.Tensor,
    *,
    divergence: str = "hutchinson",
    probes: int = 1,
    probe: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    t_min: float = 1e-5,
    seed: int | torch.Generator | None = None,
    indices=None,
) -> LikelihoodResult:
    """Log-likelihood of x under the model "prior at T pushed through the probability-flow ODE".

    Solves the augmented ODE d(x, Δ)/dt = (v, div v) from t_min to T with `torchdiffeq.odeint` and
    returns logp = prior_logp(x_T) + Δ in nats (see the module docstring). With K > 1 Hutchinson probes
    the K estimates share one solve: each step evaluates the score once and takes K vector–Jacobian
    products in one batched backward (measured fastest; see `studies/likelihood_speed.py`).

    Args:
        sde: the forward SDE.
        score: callable score(x, t) → shaped like x, differentiable in x (autograd).
        x: (batch, *data_shape) data at time t_min, finite floating point; the state keeps its dtype.
        divergence: "hutchinson" (one vector–Jacobian product per probe and step, unbiased) or "exact"
            (D products per step; for low dimension).
        probes: K ≥ 1, Hutchinson probes per sample, drawn once from `seed` and held fixed along the ODE.
        probe: "rademacher" (default; zero variance for diagonal Jacobians) or "gaussian".
        rtol, atol: tolerances of the adaptive solver, > 0.
        method: an adaptive torchdiffeq method, one of `METHODS`.
        t_min: where the data sits, 0 < t_min < T (1e-5 keeps p_{t_min} close to the data).
        seed: an int or a torch.Generator for the probes; None draws fresh probes.
        indices: (batch,) global indices of the items of x (e.g. test-image numbers): item j's probes are
            then drawn from (seed, indices[j]) alone (an int seed is required), so they do not depend on
            the batch or on how a data set is split over processes; None: drawn for the batch from `seed`.

    Returns:
        LikelihoodResult with logp, prior_logp, delta_logp (batch,) in nats, nfe, z, and per-probe
        estimates with their standard error.

    Raises:
        ValueError / TypeError: bad x (shape, dtype, NaN/inf), unknown names, non-positive tolerances,
            t_min outside (0, T), probes < 1 or probes > 1 with the exact divergence, a score that is
            not differentiable in x.
    """
    _check_common(sde, score, x, rtol, atol, method, t_min)
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choose one of {list(DIVERGENCES)}")
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; choose one of {list(PROBES)}")
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be an integer >= 1, got {probes!r}")
    if divergence == "exact" and probes != 1:
        raise ValueError(f"the exact divergence takes no probes; got probes={probes}")
    eps = None
    if divergence == "hutchinson" and indices is not None:
        eps = per_item_probes(probe, probes, x, seed, indices)
    elif divergence == "hutchinson":
        eps = draw_probes(probe, (probes, *x.shape), make_generator(seed), x.dtype, x.device)
    tune_allocator_once()  # ~25% faster CPU forwards (sdegen.runtime)
    guarded = GuardedScore(_require_differentiable(score), t_min, sde.T)  # the one wrapper of this run
    func = AugmentedFlow(sde, guarded, t_min, eps)
    delta0 = torch.zeros(probes, x.shape[0], dtype=x.dtype, device=x.device)
    z, delta_per_dim = _solve(func, (x.detach(), delta0), t_min, sde.T, rtol=rtol, atol=atol, method=method)
    delta = delta_per_dim * x[0].numel()
    prior = sde.prior_logp(z)
    logp_probes = prior[None] + delta  # (K, batch)
    stderr = logp_probes.std(0, correction=1) / math.sqrt(probes) if probes > 1 else None
    return LikelihoodResult(
        logp=logp_probes.mean(0),
        prior_logp=prior,
        delta_logp=delta.mean(0),
        nfe=guarded.nfe,
        z=z,
        logp_probes=logp_probes,
        logp_stderr=stderr,
    )


PROBE_STREAM = 5  # stream id of per-item probes (sdegen.samplers._noise uses 1–3, sdegen.labels 4)


def per_item_probes(probe: str, probes: int, x: torch.Tensor, seed, indices) -> torch.Tensor:
    """(probes, batch, *data_shape) Hutchinson probes, item j's drawn from (seed, PROBE_STREAM, indices[j]).

    Raises:
        TypeError / ValueError: seed not an int, indices not (batch,) integers.
    """
    from sdegen.samplers._noise import derive_seed

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"per-item probes (indices=...) need an int seed, got {type(seed).__name__}")
    idx = [int(i) for i in indices]
    if len(idx) != x.shape[0]:
        raise ValueError(f"indices must hold one index per item ({x.shape[0]}), got {len(idx)}")
    rows = [
        draw_probes(
            probe,
            (probes, 1, *x.shape[1:]),
            torch.Generator().manual_seed(derive_seed(seed, PROBE_STREAM, i)),
            x.dtype,
            x.device,
        )  # fmt: skip
        for i in idx
    ]
    return torch.cat(rows, dim=1)


def encode(
    sde: AbstractSDE,
    score,
    x: torch.Tensor,
    *,
    t_min: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
) -> torch.Tensor:
    """Map data x at t_min to its latent z = x_T along the probability-flow ODE (deterministic).

    Args:
        x: (batch, *data_shape); other arguments as in `log_likelihood`.

    Returns:
        z: shaped like x, dtype of x.
    """
    _check_common(sde, score, x, rtol, atol, method, t_min)
    return _flow(sde, score, x, t_min, t_min, sde.T, rtol, atol, method)


def decode(
    sde: AbstractSDE,
    score,
    z: torch.Tensor,
    *,
    t_min: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
) -> torch.Tensor:
    """Map a latent z at T back to data x_{t_min} along the probability-flow ODE (inverse of `encode`).

    Args:
        z: (batch, *data_shape); other arguments as in `log_likelihood`.

    Returns:
        x: shaped like z, dtype of z.
    """
    _check_common(sde, score, z, rtol, atol, method, t_min, name="z")
    return _flow(sde, score, z, t_min, sde.T, t_min, rtol, atol, method)


def _flow(sde, score, x, t_min, t_from, t_to, rtol, atol, method) -> torch.Tensor:
    tune_allocator_once()
    flow = sde.probability_flow(GuardedScore(score, t_min, sde.T), t_min=t_min)
    with torch.no_grad():
        return _solve(flow, x.detach(), t_from, t_to, rtol=rtol, atol=atol, method=method)


def _solve(func, state, t_from: float, t_to: float, *, rtol: float, atol: float, method: str):
    """odeint from t_from to t_to on a float64 grid, returning the state at t_to.

    `step_t` at the end point makes the last step end exactly there: otherwise dopri5 overshoots and
    evaluates beyond it (seen: t = −0.48 integrating 1 → 1e-3).
    """
    device = state[0].device if isinstance(state, tuple) else state.device
    ts = torch.tensor([t_from, t_to], dtype=torch.float64, device=device)
    out = torchdiffeq.odeint(func, state, ts, rtol=rtol, atol=atol, method=method, options={"step_t": ts[1:]})
    return tuple(s[-1] for s in out) if isinstance(out, tuple) else out[-1]


def _check_common(sde, score, x, rtol, atol, method, t_min, name: str = "x") -> None:
    if not isinstance(sde, AbstractSDE):
        raise TypeError(f"sde must be an sdegen SDE (AbstractSDE), got {type(sde).__name__}")
    if not callable(score):
        raise TypeError(f"score must be callable as score(x, t), got {type(score).__name__}")
    check_batched(x, name)
    check_finite(x, name)
    check_positive(rtol, "rtol")
    check_positive(atol, "atol")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose an adaptive torchdiffeq method: {list(METHODS)}")
    t_min = float(t_min)
    if not 0.0 < t_min < sde.T:
        raise ValueError(f"t_min must lie in (0, T={sde.T}), got {t_min}")


def _require_differentiable(score):
    """Wrap score so that an output detached from x is an error (its divergence would be silently 0)."""

    def checked(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = score(x, t)
        if x.requires_grad and isinstance(s, torch.Tensor) and not s.requires_grad:
            raise ValueError(
                "score(x, t) is not differentiable in x (computed under no_grad or detached?); "
                "the likelihood needs its Jacobian"
            )
        return s

    return checked
