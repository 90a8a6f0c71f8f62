"""How smooth a trained model's probability-flow velocity is in time: what sets the adaptive ODE's NFE.

Command (from the repository root):

    .venv/bin/python studies/time_smoothness.py --model mnist-likelihood --data ../shared/data/mnist

At each time t0 it draws x = alpha(t0)·x0 + sigma(t0)·ε from test digits, holds x fixed and evaluates the
PF-ODE velocity v(x, t) on 41 points of [t0 − s, t0 + s] for three half-widths s = f·t0, f = 4 %, 1 %,
0.25 %. It fits a quadratic in t and prints the residual's RMS relative to v's RMS. For a function smooth at
that scale the residual falls like s³ (÷64 for each ÷4 of s) down to float32 rounding (~1e-6); a residual
that barely falls means v wiggles in t on scales below s, and an adaptive solver must resolve every wiggle.
With random Fourier features of the noise input, c = ln(sigma/alpha), the wiggles come from frequencies
|2π·W| with W ~ N(0, fourier_scale²): scale 16 gives periods of ~0.02 in c.
"""

from __future__ import annotations

import argparse

import torch

from sdegen.data import load_mnist
from sdegen.model import load_model
from sdegen.runtime import tune_allocator

FRACTIONS = (0.04, 0.01, 0.0025)
POINTS = 41


def relative_residuals(flow, sde, x0: torch.Tensor, t0: float, generator: torch.Generator) -> list[float]:
    """RMS of v minus its least-squares quadratic in t, over RMS of v, for each half-width in FRACTIONS."""
    t = torch.tensor([t0], dtype=torch.float64)
    alpha, sigma = float(sde.mean_scale(t)), float(sde.marginal_std(t))
    x = alpha * x0 + sigma * torch.randn(x0.shape, generator=generator)
    out = []
    for frac in FRACTIONS:
        s = torch.linspace(-frac * t0, frac * t0, POINTS, dtype=torch.float64)
        with torch.no_grad():
            v = torch.stack([flow.velocity((t0 + si).float().expand(x.shape[0]), x) for si in s])
        v = v.double().reshape(POINTS, -1)
        basis = torch.stack([torch.ones_like(s), s / s[-1], (s / s[-1]) ** 2], 1)
        resid = v - basis @ torch.linalg.lstsq(basis, v).solution
        out.append(float(resid.pow(2).mean().sqrt() / v.pow(2).mean().sqrt()))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mnist-likelihood", help="checkpoint path or shipped model name")
    p.add_argument("--data", default="../shared/data/mnist", help="directory with the MNIST test IDX files")
    p.add_argument("--times", type=float, nargs="+", default=[0.02, 0.1, 0.3, 0.6, 0.9])
    p.add_argument("--num", type=int, default=8, help="test digits per time")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    tune_allocator()
    model = load_model(args.model)
    lo, hi = model.data_range
    x0 = lo + (hi - lo) * load_mnist(args.data, split="test").data[: args.num]
    flow = model.sde.probability_flow(model.score_fn(), t_min=min(args.times) * (1 - 2 * FRACTIONS[0]))
    generator = torch.Generator().manual_seed(args.seed)
    print(f"model {args.model} (step {model.step}); residual of a quadratic fit / RMS of v")
    print("| t0 | " + " | ".join(f"s = {f:g}·t0" for f in FRACTIONS) + " | fall per ÷4 of s |")
    print("|---" * (len(FRACTIONS) + 2) + "|")
    for t0 in args.times:
        r = relative_residuals(flow, model.sde, x0, t0, generator)
        falls = " / ".join(f"{a / b:.1f}" for a, b in zip(r, r[1:], strict=False))
        print(f"| {t0:g} | " + " | ".join(f"{v:.2e}" for v in r) + f" | {falls} (smooth: 64) |")


if __name__ == "__main__":
    main()
