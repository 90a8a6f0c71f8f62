"""Divergence of a vector field v(x) by automatic differentiation: exact, or Skilling–Hutchinson estimates.

For a velocity v: R^D → R^D the divergence is div v = tr(∂v/∂x) = Σ_i ∂v_i/∂x_i.

* exact: one vector–Jacobian product e_iᵀ(∂v/∂x) per coordinate i (D products, run in chunks as one
  batched backward with `is_grads_batched`), keeping the diagonal entries. Cost ∝ D backward passes.
* Skilling–Hutchinson (Skilling 1989; Hutchinson 1990; Grathwohl et al. 2019, FFJORD eq. 7): for a
  probe ε with E[ε] = 0 and E[εεᵀ] = I, E[εᵀ(∂v/∂x)ε] = tr(∂v/∂x). One vector–Jacobian product per
  probe. Its variance is 2·Σ_{i≠j} A_ij² for Rademacher probes (ε_i = ±1) and 2·Σ_ij A_ij² for
  Gaussian probes (A = the symmetric part of ∂v/∂x), so Rademacher probes are exact on diagonal
  Jacobians.

Both work on a batch x of shape (batch, *data_shape) and assume the samples are independent: v[b]
depends on x[b] only (no batch norm in training mode), so one backward through Σ_b gives every sample's
own vector–Jacobian product.
"""

from __future__ import annotations

import torch

PROBES = ("rademacher", "gaussian")

# Elements (coordinates × batch × dims) of one-hot cotangents handled in one batched backward of the
# exact divergence; bounds the memory of the vmapped backward (2**22 float32 ≈ 16 MiB per copy).
_EXACT_CHUNK_ELEMENTS = 2**22


def draw_probes(kind: str, shape: tuple[int, ...], generator: torch.Generator, dtype, device) -> torch.Tensor:
    """Draw Hutchinson probes of the given full shape, e.g. (probes, batch, *data_shape).

    Args:
        kind: "rademacher" (±1 with probability ½ each) or "gaussian" (standard normal).
        shape: the full shape of the probe tensor.
        generator: a CPU torch.Generator; the probes are drawn on the CPU and moved to `device`, so a
            seed gives the same probes on every device.

    Raises:
        ValueError: unknown kind.
    """
    if kind == "rademacher":
        eps = torch.randint(0, 2, shape, generator=generator).to(dtype) * 2 - 1
    elif kind == "gaussian":
        eps = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
    else:
        raise ValueError(f"unknown probe {kind!r}; choose one of {list(PROBES)}")
    return eps.to(device)


def hutchinson_divergence(v: torch.Tensor, x: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
    """Skilling–Hutchinson estimates εᵀ(∂v/∂x)ε, one per probe.

    Args:
        v: (batch, *data_shape), computed from x with autograd recording.
        x: (batch, *data_shape), requires grad.
        probes: (K, batch, *data_shape), fixed probes ε_k.

    Returns:
        (K, batch) divergence estimates; their mean over K is unbiased for div v.
    """
    if probes.shape[0] == 1:
        vjp = torch.autograd.grad(v, x, grad_outputs=probes[0])[0][None]
    else:
        # One backward with K cotangents: the forward (the score network) is shared by all K probes.
        vjp = torch.autograd.grad(v, x, grad_outputs=probes, is_grads_batched=True)[0]
    return (vjp * probes).flatten(2).sum(-1)


def exact_divergence(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Exact div v = Σ_i ∂v_i/∂x_i by D vector–Jacobian products with one-hot cotangents.

    Args:
        v: (batch, *data_shape), computed from x with autograd recording.
        x: (batch, *data_shape), requires grad.

    Returns:
        (1, batch) exact divergences (the leading 1 matches `hutchinson_divergence` with one probe).
    """
    batch = x.shape[0]
    dim = x[0].numel()
    chunk = max(1, min(dim, _EXACT_CHUNK_ELEMENTS // max(1, batch * dim)))
    total = torch.zeros(batch, dtype=v.dtype, device=v.device)
    for start in range(0, dim, chunk):
        idx = torch.arange(start, min(start + chunk, dim), device=x.device)
        n = idx.shape[0]
        # cotangents[k, b, idx[k]] = 1: row idx[k] of every sample's Jacobian in one batched backward.
        cot = torch.zeros(n, batch, dim, dtype=v.dtype, device=v.device)
        cot[torch.arange(n, device=x.device), :, idx] = 1.0
        rows = torch.autograd.grad(
            v, x, grad_outputs=cot.reshape(n, *v.shape), is_grads_batched=True, retain_graph=True
        )[0].reshape(n, batch, dim)  # (n, batch, dim): rows[k, b] = ∂v_b[idx_k]/∂x_b
        total = total + rows[torch.arange(n, device=x.device), :, idx].sum(0)
    return total[None]
