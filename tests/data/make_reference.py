"""Regenerate tests/data/reference_runs.npz: fixed-seed runs of every solver and of the likelihood.

The file pins the behaviour of the sampling and likelihood core: tests/test_reference.py checks that the
final samples, the saved x0_hat and the NFE of every case are unchanged. Regenerate it only on purpose:

    .venv/bin/python tests/data/make_reference.py                     # every case
    .venv/bin/python tests/data/make_reference.py --solvers edm_heun  # only these solvers' cases (the rest kept)

History: the edm_heun cases were rewritten when its last step became an Euler step (EDM Alg. 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import sdegen
from sdegen import analytic

OUT = Path(__file__).with_name("reference_runs.npz")


def mixture():
    return analytic.GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.5, -0.5]], [0.4, 0.6])


def image_gaussian():
    mean = torch.linspace(-0.5, 0.5, 9).reshape(1, 3, 3)
    return analytic.GaussianMixture([1.0], mean[None], [0.3])


# The solvers the reference was written for (solvers added later get their own tests).
PINNED = ("euler", "milstein", "srk", "heun", "midpoint", "reversible_heun", "pc", "ode", "ancestral", "ddim",
          "dpmpp_2m", "edm_heun")  # fmt: skip


# (case name, sde, dist, shape, solver, steps, options)
def cases():
    vp, ve = sdegen.VPSDE(), sdegen.VESDE(sigma_min=0.01, sigma_max=5.0)
    mix, img = mixture(), image_gaussian()
    out = []
    for solver in PINNED:
        out.append((f"{solver}-vp-mix", vp, mix, (6, 2), solver, 12, {}))
        out.append((f"{solver}-vp-img", vp, img, (3, 1, 3, 3), solver, 8, {}))
        if solver not in ("ancestral", "ddim"):
            out.append((f"{solver}-ve-mix", ve, mix, (5, 2), solver, 10, {}))
    out += [
        ("euler-adaptive", vp, mix, (4, 2), "euler", 5, {"adaptive": True, "rtol": 1e-2, "atol": 1e-2}),
        ("heun-tree", vp, mix, (4, 2), "heun", 8, {"brownian": "tree"}),
        ("pc-rd", ve, mix, (4, 2), "pc", 10, {"predictor": "reverse_diffusion", "corrector_steps": 2}),
        ("pc-nocorr", vp, mix, (4, 2), "pc", 10, {"corrector_steps": 0}),
        ("ode-rk4", vp, mix, (4, 2), "ode", 10, {"method": "rk4"}),
        ("ode-stepsize", vp, mix, (4, 2), "ode", 10, {"method": "euler", "step_size": 0.07}),
        ("ddim-eta", vp, mix, (4, 2), "ddim", 10, {"eta": 0.5}),
        ("ancestral-beta", vp, mix, (4, 2), "ancestral", 10, {"variance": "beta"}),
        ("dpmpp-karras", ve, mix, (4, 2), "dpmpp_2m", 10, {"schedule": "karras", "rho": 5.0}),
        ("dpmpp-time", vp, mix, (4, 2), "dpmpp_2m", 10, {"schedule": "time"}),
        ("edm-rho", vp, mix, (4, 2), "edm_heun", 6, {"rho": 3.0}),
        ("revheun-noresync", vp, mix, (4, 2), "reversible_heun", 12, {"resync_every": 0}),
    ]
    return out


def run_case(sde, dist, shape, solver, steps, options, **kw):
    ds = sdegen.sample(
        sde, dist.score_fn(sde), shape, solver=solver, steps=steps, seed=7, save_every=3, save_x0_hat=True,
        **options, **kw,
    )  # fmt: skip
    return ds


def main(solvers: list[str] | None = None) -> None:
    arrays = {} if solvers is None else dict(np.load(OUT))
    for name, sde, dist, shape, solver, steps, options in cases():
        if solvers is not None and solver not in solvers:
            continue
        ds = run_case(sde, dist, shape, solver, steps, options)
        arrays[f"{name}/x"] = ds.x.values
        arrays[f"{name}/x0_hat"] = ds.x0_hat.values
        arrays[f"{name}/time"] = ds.time.values
        arrays[f"{name}/nfe"] = np.array([ds.attrs["nfe"], ds.attrs["nfe_extra"]])
        den = sdegen.sample(sde, dist.score_fn(sde), shape, solver=solver, steps=steps, seed=3, denoise=True,
                            **options)  # fmt: skip
        arrays[f"{name}/denoised"] = den.x.values[-1]
        arrays[f"{name}/denoised_nfe"] = np.array([den.attrs["nfe"], den.attrs["nfe_extra"]])
    if solvers is not None:
        np.savez_compressed(OUT, **arrays)
        print(f"rewrote the cases of {', '.join(solvers)} in {OUT}")
        return
    # Likelihood: exact and Hutchinson divergence, and encode/decode.
    vp, mix = sdegen.VPSDE(), mixture()
    x = mix.sample(5, generator=torch.Generator().manual_seed(0))
    for div in ("exact", "hutchinson"):
        res = sdegen.log_likelihood(vp, mix.score_fn(vp), x, divergence=div, seed=1, rtol=1e-4, atol=1e-4)
        arrays[f"ll-{div}/logp"] = res.logp.numpy()
        arrays[f"ll-{div}/nfe"] = np.array([res.nfe])
    z = sdegen.encode(vp, mix.score_fn(vp), x, rtol=1e-4, atol=1e-4)
    arrays["encode/z"] = z.numpy()
    arrays["decode/x"] = sdegen.decode(vp, mix.score_fn(vp), z, rtol=1e-4, atol=1e-4).numpy()
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({len(arrays)} arrays)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--solvers", nargs="+", choices=PINNED, help="rewrite only these solvers' cases")
    main(p.parse_args().solvers)
