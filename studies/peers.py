"""Peers side by side: one sdegen network sampled by sdegen's solvers and by diffusers' schedulers, equal NFE.

    .venv/bin/python studies/peers.py --model mnist --num 500 --labels balanced --data ../shared/data/mnist \
        --out studies/results/peers

For every NFE budget (10, 20, 50) it draws `--num` digits with each sdegen solver and each diffusers scheduler
(on its default grid and on Karras sigmas), all driven by the same network through `sdegen.peers` (the SDE's
exact schedule as diffusers' `trained_betas`, timestep ↔ SDE time through log σ̃, ε̂ = −sigma·score), labels
`balanced` or `drawn`, guidance 0, the same per-sample starting noise. Each run is scored as in
studies/mnist_quality.py: FLD against the MNIST test split (mean ± sd over reference draws), the real-data
yardstick at the same n, the class spread of the LeNet's predictions, wall time and the NFE counted. Then
it times seconds per 1,000 samples at 20 NFE, batch 250: sdegen's dpmpp_2m against diffusers' DPM-Solver++
(2M) on the same network. Writes `peers.nc` (one row per run, the speed in the attributes) and `peers.md`
(the table) to `--out`.

diffusers ends at σ = 0 (its last step returns the x0 prediction, no extra NFE); sdegen's solvers end at
t_min = 10⁻³ (residual noise sigma(t_min) ≈ 0.01 for VP) unless `--denoise` (the final Tweedie step, counted within
the NFE budget: one step fewer).
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import sdegen
from sdegen import peers
from sdegen.data import load_mnist
from sdegen.metrics import class_spread, fld_reference, fld_score, predict_classes
from sdegen.model import load_model
from sdegen.results import save_results, save_text
from sdegen.runtime import tune_allocator
from sdegen.samplers import SOLVERS, sample_offset

NFE_BUDGETS = (10, 20, 50)  # the headline budgets of few-step samplers (issue 14)
REFERENCE_SEEDS = range(5)  # reference draws per FLD; their spread is the FLD's sampling noise
# sdegen solvers with grid options: the deterministic fast solvers on their default grid and on Karras steps,
# the stochastic ones on their defaults. DDIM only for the VP family.
SDEGEN_RUNS = [
    ("dpmpp_2m", {}), ("dpmpp_2m", {"schedule": "karras"}), ("unipc", {}), ("unipc", {"schedule": "karras"}),
    ("edm_heun", {}), ("ddim", {}), ("dpmpp_2m_sde", {}), ("dpmpp_3m_sde", {}), ("edm_sde", {}),
]  # fmt: skip
# diffusers schedulers (name in `peers.SCHEDULERS`, Karras sigmas).
DIFFUSERS_RUNS = [
    ("dpmsolver++", False), ("dpmsolver++", True), ("unipc", False), ("unipc", True), ("ddim", False),
    ("euler", False), ("euler", True), ("heun", False), ("heun", True), ("dpmsolver_sde", False),
]  # fmt: skip
SPEED_NFE, SPEED_BATCH = 20, 250  # the speed setting: seconds per 1,000 samples at 20 NFE, batch 250


def sdegen_run(model, labels, n, batch, solver, opts, nfe, seed, denoise):
    """Final samples (n, *data_shape) of an sdegen solver at NFE budget `nfe`, in batches; (x, nfe, seconds)."""
    info = SOLVERS[solver]
    steps = max(1, (nfe - int(denoise) - info.extra_evals) // info.evals_per_step)  # the denoise counts too
    xs, used, t0 = [], 0, time.perf_counter()
    for start in range(0, n, batch):
        size = min(batch, n - start)
        lab = None if labels is None else labels[start : start + size]
        with sample_offset(start):  # sample i draws from the streams of global sample i
            score = model.score_fn(labels=lab, guidance=0.0)
            ds = sdegen.sample(model.sde, score, (size, *model.data_shape), solver=solver, steps=steps, seed=seed,
                               save_every=steps, denoise=denoise, **opts)  # fmt: skip
        xs.append(ds.x.values[-1])
        used += ds.attrs["nfe"]
    return np.concatenate(xs), used / math.ceil(n / batch), time.perf_counter() - t0


def diffusers_run(model, labels, n, batch, scheduler, karras, nfe, seed):
    """Final samples of a diffusers scheduler driven by the model (`sdegen.peers`); (x, nfe, seconds)."""
    xs, used, t0 = [], 0, time.perf_counter()
    for start in range(0, n, batch):
        size = min(batch, n - start)
        lab = None if labels is None else labels[start : start + size]
        with sample_offset(start):
            ds = peers.sample_diffusers(model.sde, model.score_fn(labels=lab, guidance=0.0), (size, *model.data_shape),
                                        scheduler, nfe=nfe, seed=seed, karras=karras)  # fmt: skip
        xs.append(ds.x.values[-1])
        used += ds.attrs["nfe"]
    return np.concatenate(xs), used / math.ceil(n / batch), time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mnist")
    p.add_argument("--data", default="../shared/data/mnist", help="directory with the MNIST test split")
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--labels", choices=["balanced", "drawn"], default="balanced")
    p.add_argument("--nfe", type=int, nargs="+", default=list(NFE_BUDGETS))
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--denoise", action=argparse.BooleanOptionalAction, default=False,
                   help="sdegen runs end with Tweedie's E[x0 | x_t_min] (one more NFE)")  # fmt: skip
    p.add_argument("--speed-samples", type=int, default=1000, help="samples per speed run (0: skip)")
    p.add_argument("--out", default="studies/results/peers")
    args = p.parse_args()
    tune_allocator()  # keep freed activation memory (sdegen.runtime)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    model = load_model(args.model)
    labels = model.labels(args.labels, args.num, seed=args.seed) if model.num_classes else None
    reference = load_mnist(args.data, split="test").data
    yard = np.array([fld_reference(reference, n=args.num, seed=s) for s in REFERENCE_SEEDS])
    lo, hi = model.data_range

    def score(x):  # FLD on the data range mapped to [0, 1], as studies/mnist_quality.py
        x = (np.clip(x, lo, hi) - lo) / (hi - lo)
        fld = np.array([fld_score(x, reference, n=args.num, seed=s) for s in REFERENCE_SEEDS])
        return fld, class_spread(np.bincount(predict_classes(x), minlength=10))

    runs = [("sdegen", s, o, None) for s, o in SDEGEN_RUNS if not (SOLVERS[s].vp_only and not model.sde.vp_family)]
    runs += [("diffusers", s, {}, k) for s, k in DIFFUSERS_RUNS]
    rows = []
    for nfe in args.nfe:
        for family, name, opts, karras in runs:
            if family == "sdegen":
                x, used, sec = sdegen_run(model, labels, args.num, args.batch, name, opts, nfe, args.seed, args.denoise)
                info = SOLVERS[name]
                grid = opts.get("schedule", info.options.get("schedule", info.grid.__name__))
            else:
                x, used, sec = diffusers_run(model, labels, args.num, args.batch, name, karras, nfe, args.seed)
                grid = "karras" if karras else "default"
            fld, spread = score(x)
            rows.append(dict(family=family, solver=name, grid=grid, nfe_budget=nfe, nfe=used, seconds=sec,
                             fld=fld.mean(), fld_sd=fld.std(), ratio=fld.mean() / yard.mean(),
                             entropy=spread.entropy, max_min=spread.max_min_ratio))  # fmt: skip
            print(f"{family:9s} {name:14s} {grid:8s} NFE {used:5.1f} FLD {fld.mean():7.2f} "
                  f"({fld.mean() / yard.mean():.2f}x) {sec:6.1f}s", flush=True)  # fmt: skip

    # Speed: the same network, batch 250, 20 NFE; sdegen's dpmpp_2m vs diffusers' DPM-Solver++(2M).
    speed = {}
    if args.speed_samples > 0:
        batch = min(SPEED_BATCH, args.speed_samples)
        lab = None if labels is None else model.labels(args.labels, args.speed_samples, seed=args.seed)
        _, _, s = sdegen_run(model, lab, args.speed_samples, batch, "dpmpp_2m", {}, SPEED_NFE, args.seed, False)
        speed["sdegen_dpmpp_2m_s_per_1000"] = 1000 * s / args.speed_samples
        _, _, s = diffusers_run(model, lab, args.speed_samples, batch, "dpmsolver++", False, SPEED_NFE, args.seed)
        speed["diffusers_dpmsolver_s_per_1000"] = 1000 * s / args.speed_samples

    machine = f"{platform.machine()} {platform.processor() or platform.system()}, torch {torch.__version__}, " \
              f"{torch.get_num_threads()} threads"  # fmt: skip
    attrs = {"model": args.model, "model_sha256": model.sha256, "model_step": model.step, "num": args.num,
             "labels": args.labels, "guidance": 0.0, "seed": args.seed, "denoise": int(args.denoise),
             "yardstick_fld": yard.mean(), "yardstick_fld_sd": yard.std(), "machine": machine,
             "diffusers_version": __import__("diffusers").__version__, "speed_nfe": SPEED_NFE,
             "speed_batch": SPEED_BATCH, "speed_samples": args.speed_samples, **speed}  # fmt: skip
    ds = xr.Dataset({k: ("run", np.asarray([r[k] for r in rows])) for k in rows[0]}, attrs=attrs)
    save_results(ds, out / "peers.nc")

    lines = [
        f"model `{args.model}` (step {model.step}), labels {args.labels}, guidance 0, n = {args.num}, seed "
        f"{args.seed}; real-data yardstick FLD {yard.mean():.2f} ± {yard.std():.2f}; {machine}",
        "",
        "| NFE | library | solver | grid | NFE used | FLD | FLD / yardstick | class entropy | max/min class | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["nfe_budget"], r["fld"])):
        lines.append(f"| {r['nfe_budget']} | {r['family']} | {r['solver']} | {r['grid']} | {r['nfe']:g} "
                     f"| {r['fld']:.2f} ± {r['fld_sd']:.2f} | {r['ratio']:.2f} | {r['entropy']:.3f} "
                     f"| {r['max_min']:.2f} | {r['seconds']:.1f} |")  # fmt: skip
    for nfe in args.nfe:
        best = {
            f: min(r["fld"] for r in rows if r["nfe_budget"] == nfe and r["family"] == f)
            for f in ("sdegen", "diffusers")
        }
        lines.append(f"\nNFE {nfe}: best sdegen / best diffusers FLD = {best['sdegen'] / best['diffusers']:.3f}")
    if speed:
        lines.append(f"\nSeconds per 1,000 samples at {SPEED_NFE} NFE, batch {min(SPEED_BATCH, args.speed_samples)}: "
                     f"sdegen dpmpp_2m {speed['sdegen_dpmpp_2m_s_per_1000']:.1f}, diffusers DPM-Solver++(2M) "
                     f"{speed['diffusers_dpmsolver_s_per_1000']:.1f}")  # fmt: skip
    table = "\n".join(lines)
    save_text(out / "peers.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
