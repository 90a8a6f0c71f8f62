"""Reverse-time SDE and probability-flow ODE of a forward SDE, as torchsde / torchdiffeq systems.

Given a forward SDE dx = f(t)x dt + g(t) dw and a score s(x, t) ≈ ∇ log p_t(x) (Anderson 1982;
Song et al. 2021, eqs. 6 and 13):

* reverse SDE   dx = [f(t)x − g(t)²·s(x, t)] dt + g(t) dw̄,  run from t = T down to t_min;
* PF ODE        dx/dt = f(t)x − ½·g(t)²·s(x, t),         same marginals p_t, deterministic.

torchsde needs strictly increasing times and (batch, d) state, so `ReverseSDE` works in the flipped
time s = T − t on flattened state: dx/ds = g²·s(x, T − s) − f·x, with diagonal noise g(T − s).
Because g does not depend on x the noise is additive, so the Itô and Stratonovich forms coincide and
the same object serves both kinds of torchsde solver (`sde_type`).

Both wrappers take the score as given: it is a `sdegen.score_guard.GuardedScore` (output check, time
guard, NFE count), made once by the entry point (`AbstractSDE.reverse` / `probability_flow`, or the run
that calls them). They are also where a sampler meets the library that owns the loop, so each keeps the
score of the first evaluation after `restart()` (`first_score`): every torchsde and torchdiffeq method
evaluates first at the start of a call, so that score gives Tweedie's E[x0 | x_t] of the start state at no
extra cost. `ReverseSDE` also answers torchsde's shape-check call after `restart()` with zeros and reuses the
drift of a repeated (s, y) (the SRK tableau re-evaluates stages); `ProbabilityFlowODE` counts the times a
solver asked for outside [t_min, T] (`clamped`).
"""

from __future__ import annotations

import torch

from sdegen._checks import batch_view

# torchdiffeq's methods for the PF ODE: adaptive ones (rtol and atol mean something only for these) and
# fixed-grid ones.
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")
_MEMO_SIZE = 4  # drifts remembered by ReverseSDE: enough for the stages of one torchsde step
_CLAMP_SLACK = 1e-9  # times this close to [t_min, T] are not counted as clamped


class ReverseSDE(torch.nn.Module):
    """Reverse-time SDE as a torchsde SDE in flipped time s = T − t on (batch, d) state.

    Args:
        sde: the forward SDE.
        score: the guarded score(x, t) on x of shape (batch, *data_shape), t of shape (batch,).
        data_shape: shape of one sample; the flat state (batch, d) is reshaped to (batch, *data_shape)
            before calling the score. None means the state is already (batch, d).
        sde_type: "ito" or "stratonovich" (identical here: the noise is additive).
    """

    noise_type = "diagonal"

    def __init__(self, sde, score, *, data_shape=None, sde_type: str = "ito"):
        super().__init__()
        if sde_type not in ("ito", "stratonovich"):
            raise ValueError(f"sde_type must be 'ito' or 'stratonovich', got {sde_type!r}")
        self.sde_type = sde_type
        self.forward_sde = sde
        self.score = score
        self.data_shape = None if data_shape is None else tuple(data_shape)
        self.first_score: torch.Tensor | None = None
        self._memo: list[tuple[float, torch.Tensor, torch.Tensor]] = []
        self._check_pending = False

    def restart(self) -> None:
        """Before a `torchsde.sdeint` call: answer its shape check with zeros, forget `first_score`."""
        self._check_pending = True
        self.first_score = None

    @property
    def nfe(self) -> int:
        return self.score.nfe

    def _unflatten(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.data_shape is None else y.reshape(y.shape[0], *self.data_shape)

    def forward_time(self, s: torch.Tensor | float, y: torch.Tensor) -> torch.Tensor:
        """t = T − s as a (batch,) tensor."""
        s = torch.as_tensor(s, dtype=y.dtype, device=y.device)
        return (self.forward_sde.T - s).clamp(0.0, self.forward_sde.T).expand(y.shape[0])

    def drift_and_score(self, s, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The drift in s, g(t)²·score(x, t) − f(t)·x with t = T − s, shape (batch, d), and the score itself
        (shape (batch, *data_shape)) from the same evaluation."""
        t = self.forward_time(s, y)
        x = self._unflatten(y)
        g2 = self.forward_sde.diffusion(t, x) ** 2
        score = self.score(x, t)
        drift = batch_view(g2, x) * score - self.forward_sde.drift(x, t)
        return drift.reshape(y.shape), score

    def f(self, s, y: torch.Tensor) -> torch.Tensor:
        """Drift in s: g(t)²·score(x, t) − f(t)·x with t = T − s; shape (batch, d)."""
        if self._check_pending:  # `sdeint` calls f once only to check the output shape (check_contract)
            self._check_pending = False
            return torch.zeros_like(y)
        key = float(s)
        for ks, ky, drift in self._memo:
            if ks == key and (ky is y or torch.equal(ky, y)):
                return drift
        drift, score = self.drift_and_score(s, y)
        if self.first_score is None:
            self.first_score = score
        self._memo = [*self._memo[-(_MEMO_SIZE - 1) :], (key, y, drift)]
        return drift

    def g(self, s, y: torch.Tensor) -> torch.Tensor:
        """Diagonal diffusion g(T − s), broadcast to (batch, d)."""
        t = self.forward_time(s, y)
        return self.forward_sde.diffusion(t, y)[:, None].expand_as(y)


class ForwardSDE(torch.nn.Module):
    """The forward SDE dx = f(t)x dt + g(t) dw as a torchsde SDE on (batch, d) state (increasing t)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, sde, *, data_shape=None):
        super().__init__()
        self.forward_sde = sde
        self.data_shape = None if data_shape is None else tuple(data_shape)

    def f(self, t, y):
        x = y if self.data_shape is None else y.reshape(y.shape[0], *self.data_shape)
        tt = torch.as_tensor(t, dtype=y.dtype, device=y.device).clamp(0, self.forward_sde.T).expand(y.shape[0])
        return self.forward_sde.drift(x, tt).reshape(y.shape)

    def g(self, t, y):
        tt = torch.as_tensor(t, dtype=y.dtype, device=y.device).clamp(0, self.forward_sde.T).expand(y.shape[0])
        return self.forward_sde.diffusion(tt, y)[:, None].expand_as(y)


class ProbabilityFlowODE(torch.nn.Module):
    """Probability-flow ODE dx/dt = f(t)·x − ½·g(t)²·score(x, t), as `forward(t, x)` for torchdiffeq.

    The state keeps the data shape (batch, *data_shape); t may run forwards or backwards. Adaptive
    torchdiffeq solvers probe times slightly beyond the end of the interval; such probes are clamped to
    [t_min, T] (the ODE is continued with the score at the end point) so the score is never evaluated
    outside its domain. Pass `options={"step_t": ...}` at the end points as well, as `sdegen` does,
    so that no accepted step crosses the end.

    Args:
        sde: the forward SDE.
        score: the guarded score(x, t).
        t_min: the lower end of the clamp.
    """

    def __init__(self, sde, score, *, t_min: float = 0.0):
        super().__init__()
        self.forward_sde = sde
        self.t_min = float(t_min)
        self.score = score
        self.first_score: torch.Tensor | None = None
        self.clamped = 0

    def restart(self) -> None:
        """Before an `odeint` call: forget `first_score`."""
        self.first_score = None

    @property
    def nfe(self) -> int:
        return self.score.nfe

    def velocity_and_score(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """dx/dt at forward time t (batch,) for state x (batch, *data_shape), and the score it used."""
        g2 = self.forward_sde.diffusion(t, x) ** 2
        score = self.score(x, t)
        # The ½ is what makes this ODE share the SDE's marginals (Song et al. 2021, eq. 13).
        return self.forward_sde.drift(x, t) - 0.5 * batch_view(g2, x) * score, score

    def velocity(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """dx/dt at forward time t (batch,) for state x (batch, *data_shape)."""
        return self.velocity_and_score(t, x)[0]

    def clamped_time(self, t, x: torch.Tensor) -> torch.Tensor:
        """A solver's time t (0-d) as a (batch,) tensor clamped to [t_min, T] (see the class docstring)."""
        tt = torch.as_tensor(t, dtype=x.dtype, device=x.device).clamp(self.t_min, self.forward_sde.T)
        return tt.expand(x.shape[0])

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tf = float(t)
        if tf < self.t_min - _CLAMP_SLACK or tf > self.forward_sde.T + _CLAMP_SLACK:
            self.clamped += 1
        v, score = self.velocity_and_score(self.clamped_time(t, x), x)
        if self.first_score is None:
            self.first_score = score
        return v
