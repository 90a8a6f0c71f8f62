"""Continuous-time Markov chains on K categories: uniform, arbitrary stationary law, absorbing mask.

`IndependentDiscrete(rate, probs)`: at rate `rate` the state is redrawn from `probs` (possibly itself), so

    P(t) = e^{−rate·t}·I + (1 − e^{−rate·t})·1·probsᵀ,

and the stationary law is `probs`; `UniformDiscrete(rate, K)` is probs = 1/K. `MaskedDiscrete(rate, K)` has
K + 1 states, the last (index K) an absorbing mask: a clean state is masked by time t with probability
1 − e^{−rate·t}, so P(t) = e^{−rate·t}·I + (1 − e^{−rate·t})·1·e_Kᵀ on the clean rows and P(t)[K, K] = 1.

States are `torch.long` tensors (batch, *shape). Bridges are exact: by the Markov property
p(x_s = j | x0 = i, x_t = k) = P(s)[i, j]·P(t − s)[j, k] / P(t)[i, k]. A predictor returns logits over
the K clean classes (batch, *shape, K); the reverse step draws x_s from the mixture

    Σ_i softmax(logits)[i] · p(x_s | x0 = i, x_t),

which is exact when the logits are the true posterior of x0 given x_t. Classes i with P(t)[i, x_t] = 0
cannot have produced x_t; their weight is dropped and the rest renormalised.
"""

from __future__ import annotations

import torch

from sdegen.processes._base import AbstractProcess
from sdegen.processes._common import (
    Generator,
    Time,
    bridge_times,
    check_rate,
    masked_mean,
    per_sample_time,
    rand,
)

PROBABILITY_TOLERANCE = 1e-6


class _Discrete(AbstractProcess):
    """Shared transition-matrix machinery; subclasses give `_matrices(t)` (batch, S, S) and `num_states`."""

    kind = "category"
    num_states: int  # the K clean classes (predictors return K logits)

    @property
    def num_values(self) -> int:
        """The number of state values (K, or K + 1 with a mask)."""
        return self.num_states

    def transition_matrix(self, t: Time) -> torch.Tensor:
        """P(t), float64 (S, S) for a float t or (batch, S, S) for a (batch,) tensor; rows sum to one."""
        if isinstance(t, torch.Tensor) and t.ndim == 1:
            return self._matrices(per_sample_time(t, t.shape[0]))
        return self._matrices(per_sample_time(t, 1))[0]

    def _matrices(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_state(self, x, name: str = "x") -> None:
        if not isinstance(x, torch.Tensor) or x.dtype != torch.long:
            raise TypeError(f"{name} must be a torch.long tensor of categories, got {getattr(x, 'dtype', type(x))}")
        if x.ndim < 1:
            raise ValueError(f"{name} must have shape (batch, *shape), got {tuple(x.shape)}")
        if x.numel() and (x.min() < 0 or x.max() >= self.num_values):
            raise ValueError(
                f"{name} must hold categories in [0, {self.num_values}), got values in [{x.min()}, {x.max()}]"
            )

    def _categorical(self, weights: torch.Tensor, generator: Generator) -> torch.Tensor:
        """One draw per row of unnormalised weights (batch, *shape, S), float64 → long (batch, *shape)."""
        total = weights.sum(-1, keepdim=True)
        if (total <= 0).any():
            raise ValueError("no state is compatible with the given end points (all bridge weights are zero)")
        cdf = (weights / total).cumsum(-1)
        u = rand(weights.shape[:-1], generator, torch.float64).unsqueeze(-1)
        return (cdf < u).sum(-1).clamp_max(weights.shape[-1] - 1)

    def _rows(self, matrices: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """P[b, index[b, ...], :] for matrices (batch, S, S) and index (batch, *shape): (batch, *shape, S)."""
        flat = index.reshape(index.shape[0], -1)
        rows = torch.gather(matrices, 1, flat.unsqueeze(-1).expand(-1, -1, matrices.shape[-1]))
        return rows.reshape(*index.shape, matrices.shape[-1])

    def _cols(self, matrices: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """P[b, :, index[b, ...]] as (batch, *shape, S)."""
        return self._rows(matrices.transpose(1, 2), index)

    def sample_forward(self, x0: torch.Tensor, t: Time, generator: Generator = None) -> torch.Tensor:
        """A draw of x_t | x0 from the rows P(t)[x0, :], long (batch, *shape)."""
        self.check_state(x0, "x0")
        p = self._rows(self._matrices(per_sample_time(t, x0.shape[0])), x0.cpu())
        return self._categorical(p, generator).to(x0.device)

    def sample_bridge(self, x0, x_t, s: Time, t: Time, generator: Generator = None) -> torch.Tensor:
        """An exact draw of x_s | x0, x_t ∝ P(s)[x0, ·]·P(t − s)[·, x_t] (module docstring); needs s < t."""
        self.check_state(x0, "x0")
        self.check_state(x_t, "x_t")
        if x0.shape != x_t.shape:
            raise ValueError(f"x0 and x_t must have the same shape, got {tuple(x0.shape)} and {tuple(x_t.shape)}")
        ss, tt = bridge_times(s, t, x_t.shape[0])
        weights = self._rows(self._matrices(ss), x0.cpu()) * self._cols(self._matrices(tt - ss), x_t.cpu())
        return self._categorical(weights, generator).to(x_t.device)

    def mixture_weights(self, logits: torch.Tensor, x_t: torch.Tensor, s: Time, t: Time) -> torch.Tensor:
        """Normalised probabilities (batch, *shape, S), float64, of x_s under Σ_i softmax(logits)[i]·p(x_s|i, x_t)."""
        self.check_state(x_t, "x_t")
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (*x_t.shape, self.num_states):
            got = tuple(getattr(logits, "shape", ()))
            raise ValueError(
                f"logits must have shape {(*x_t.shape, self.num_states)} (state shape + classes), got {got}"
            )
        ss, tt = bridge_times(s, t, x_t.shape[0])
        ps, pts, pt = self._matrices(ss), self._matrices(tt - ss), self._matrices(tt)
        xt = x_t.cpu()
        clean = torch.softmax(logits.detach().double().cpu(), -1)
        # w_i / P(t)[i, x_t] over the clean classes i, zero where class i cannot reach x_t.
        reach = self._cols(pt, xt)[..., : self.num_states]
        ratio = torch.where(reach > 0, clean / reach.clamp_min(1e-300), torch.zeros_like(clean))
        batch = xt.shape[0]
        # Σ_i ratio_i P(s)[i, j], a (batch, n, K) @ (batch, K, S) product.
        mixed = torch.bmm(ratio.reshape(batch, -1, self.num_states), ps[:, : self.num_states, :])
        weights = mixed.reshape(*xt.shape, -1) * self._cols(pts, xt)
        total = weights.sum(-1, keepdim=True)
        if (total <= 0).any():
            raise ValueError("the predicted classes put no weight on any class that can reach x_t")
        return weights / total

    def reverse_step(self, prediction, x_t, s: Time, t: Time, generator: Generator = None) -> torch.Tensor:
        """x_s from the mixture over the predicted x0 (module docstring); prediction: logits (*x_t.shape, K)."""
        return self._categorical(self.mixture_weights(prediction, x_t, s, t), generator).to(x_t.device)

    def loss(self, prediction: torch.Tensor, x0: torch.Tensor, t: Time, *, x_t=None, mask=None) -> torch.Tensor:
        """Cross-entropy of the logits (batch, *shape, K) against the clean classes x0, mean per sample."""
        if tuple(prediction.shape) != (*x0.shape, self.num_states):
            raise ValueError(f"logits must have shape {(*x0.shape, self.num_states)}, got {tuple(prediction.shape)}")
        ce = torch.nn.functional.cross_entropy(
            prediction.reshape(-1, self.num_states), x0.reshape(-1), reduction="none"
        )
        return masked_mean(ce.reshape(x0.shape), mask)


class IndependentDiscrete(_Discrete):
    """States redrawn from `probs` at rate `rate`: P(t) = e^{−rate·t}I + (1 − e^{−rate·t})·1·probsᵀ.

    Args:
        rate: the redraw rate > 0.
        probs: the stationary law (K,), non-negative, summing to one (to 1e-6).
    """

    name = "independent_discrete"

    def __init__(self, rate: float, probs):
        self.rate = check_rate(rate)
        p = torch.as_tensor(probs, dtype=torch.float64).detach().cpu()
        if p.ndim != 1 or p.numel() < 2:
            raise ValueError(f"probs must be a vector of at least 2 probabilities, got shape {tuple(p.shape)}")
        if not torch.isfinite(p).all() or (p < 0).any():
            raise ValueError(f"probs must be finite and non-negative, got {p.tolist()}")
        if abs(p.sum().item() - 1) > PROBABILITY_TOLERANCE:
            raise ValueError(f"probs must sum to one (to {PROBABILITY_TOLERANCE}), got sum {p.sum().item():.9g}")
        self.probs = p
        self.num_states = p.numel()

    def params(self) -> dict:
        return {"rate": self.rate, "num_states": self.num_states, "probs": self.probs.tolist()}

    def _matrices(self, t: torch.Tensor) -> torch.Tensor:
        keep = torch.exp(-self.rate * t).reshape(-1, 1, 1)
        eye = torch.eye(self.num_states, dtype=torch.float64)
        return keep * eye + (1 - keep) * self.probs.reshape(1, 1, -1)

    def sample_equilibrium(self, shape, generator: Generator = None, device=None) -> torch.Tensor:
        """Draws of `probs`, long of shape (batch, *shape)."""
        weights = self.probs.expand(*tuple(shape), self.num_states)
        return self._categorical(weights, generator).to(device)


class UniformDiscrete(IndependentDiscrete):
    """Uniform redraws over `num_states` categories at rate `rate` (IndependentDiscrete with probs = 1/K)."""

    name = "uniform_discrete"

    def __init__(self, rate: float, num_states: int):
        if isinstance(num_states, bool) or not isinstance(num_states, int) or num_states < 2:
            raise ValueError(f"num_states must be an integer >= 2, got {num_states!r}")
        super().__init__(rate, torch.full((num_states,), 1.0 / num_states, dtype=torch.float64))

    def params(self) -> dict:
        return {"rate": self.rate, "num_states": self.num_states}


class MaskedDiscrete(_Discrete):
    """Absorbing-mask chain: each clean state is masked (index `num_states`) by time t w.p. 1 − e^{−rate·t}.

    Args:
        rate: the masking rate > 0.
        num_states: K >= 1 clean classes; the mask is state K.
    """

    name = "masked_discrete"

    def __init__(self, rate: float, num_states: int):
        self.rate = check_rate(rate)
        if isinstance(num_states, bool) or not isinstance(num_states, int) or num_states < 1:
            raise ValueError(f"num_states must be an integer >= 1, got {num_states!r}")
        self.num_states = num_states

    @property
    def mask_index(self) -> int:
        return self.num_states

    @property
    def num_values(self) -> int:
        return self.num_states + 1

    def params(self) -> dict:
        return {"rate": self.rate, "num_states": self.num_states}

    def _matrices(self, t: torch.Tensor) -> torch.Tensor:
        keep = torch.exp(-self.rate * t).reshape(-1, 1, 1)
        k = self.num_states
        eye = torch.eye(k + 1, dtype=torch.float64)
        to_mask = torch.zeros(k + 1, k + 1, dtype=torch.float64)
        to_mask[:, k] = 1.0
        m = keep * eye + (1 - keep) * to_mask
        m[:, k, :] = eye[k]  # the mask is absorbing
        return m

    def sample_equilibrium(self, shape, generator: Generator = None, device=None) -> torch.Tensor:
        """Every element masked: a long tensor of `shape` filled with `num_states` (no randomness)."""
        return torch.full(tuple(shape), self.num_states, dtype=torch.long, device=device)
