"""FLD over sampling seeds for solver settings on a shipped MNIST model: how far one seed's ratio can be trusted.

    OMP_NUM_THREADS=1 .venv/bin/python studies/seed_spread.py --model mnist --num 500 --seeds 0 1 2 --runs \
        unipc:10:drawn dpmpp_2m:20:drawn dpmpp_2m:20:drawn:schedule=karras edm_sde:20:drawn edm_sde:20:none \
        dpmpp_2m_sde:50:drawn dpmpp_2m_sde:50:drawn:eta=0.5 dpmpp_3m_sde:50:drawn:eta=0.5 \
        edm_heun:10:drawn:sigma_min=0.72 --out docs/solver_comparison

A run is `solver:budget:labels[:option=value ...]`: the NFE budget (final denoise included, steps as in
`compare_solvers.steps_for`), `drawn` (labels drawn from the class frequencies with the sampling seed, w = 0)
or `none` (the null label), and solver options (`eta=0.5`, `s_churn=4`, `sigma_min=0.72`, `schedule=karras`).
Seed 0 with drawn labels is the same draw as `compare_solvers.py`'s row. Per run and seed: FLD (mean over the
reference draws of `compare_solvers.REFERENCE_SEEDS`) ÷ the real-data yardstick at the same n and the
raw-outlier fraction.
Writes `seed_spread.nc` (dims run × seed) and `seed_spread.md` (ratio per seed, mean ± sd over seeds) to
`--out`.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from compare_solvers import REFERENCE_SEEDS, draw_mnist, steps_for

import sdegen
from sdegen._checks import parse_key_value
from sdegen.data import load_mnist
from sdegen.metrics import fld_reference, load_lenet
from sdegen.results import save_results, save_text


def parse_run(spec: str) -> tuple[str, int, str, dict]:
    """'solver:budget:labels[:k=v...]' -> (solver, budget, labels, options); a bad spec names itself."""
    parts = spec.split(":")
    if len(parts) < 3 or parts[2] not in ("drawn", "none") or not parts[1].isdigit():
        raise ValueError(f"run {spec!r}: expected solver:budget:drawn|none[:option=value ...]")
    options = dict(parse_key_value(kv, f"run {spec!r}: option") for kv in parts[3:])  # the CLI's --option parser
    if parts[0] not in sdegen.solvers():
        raise ValueError(f"run {spec!r}: unknown solver {parts[0]!r}; known: {', '.join(sdegen.solvers())}")
    return parts[0], int(parts[1]), parts[2], options


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mnist", help="shipped model name or checkpoint")
    p.add_argument("--data", default="../shared/data/mnist", help="directory with the MNIST test split")
    p.add_argument("--num", type=int, default=500, help="samples per run (FLD at this n)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds")
    p.add_argument("--runs", nargs="+", required=True, help="solver:budget:drawn|none[:option=value ...]")
    p.add_argument("--out", default="studies/results/seed_spread")
    args = p.parse_args()
    runs = [parse_run(r) for r in args.runs]
    model = sdegen.load_model(args.model)
    if not model.num_classes:
        raise ValueError(f"model {args.model!r} is unconditional; runs need labels")
    lenet = load_lenet()
    reference = load_mnist(args.data, split="test").data
    yard = float(np.mean([fld_reference(reference, n=args.num, seed=s, model=lenet) for s in REFERENCE_SEEDS]))
    ratio = np.full((len(runs), len(args.seeds)), np.nan)
    outliers, nfe = np.full_like(ratio, np.nan), np.zeros(len(runs), dtype=int)
    for i, (solver, budget, labels_kind, options) in enumerate(runs):
        steps = steps_for(solver, budget)
        if steps is None:
            raise ValueError(f"run {args.runs[i]!r}: no whole step of {solver} fits in {budget} NFE")
        for j, seed in enumerate(args.seeds):
            labels = (model.labels("none", args.num) if labels_kind == "none"
                      else model.labels("drawn", args.num, seed=seed))  # fmt: skip
            ds, _, out, _, scores = draw_mnist(model, lenet, reference, solver, steps, labels, num=args.num,
                                               seed=seed, **options)  # fmt: skip
            ratio[i, j], outliers[i, j], nfe[i] = scores.mean() / yard, out, ds.attrs["nfe"]
            print(f"{args.runs[i]:40s} seed {seed}: {ratio[i, j]:.2f}x, outliers {out:.3f}", flush=True)
    ds = xr.Dataset(
        {"fld_ratio": (("run", "seed"), ratio), "outlier_fraction": (("run", "seed"), outliers),
         "nfe_used": ("run", nfe)},
        coords={"run": args.runs, "seed": args.seeds},
        attrs={"model": args.model, "model_sha256": model.sha256, "model_step": model.step, "num": args.num,
               "yardstick_mean": yard},
    )  # fmt: skip
    out = Path(args.out)
    save_results(ds, out / "seed_spread.nc")
    machine = f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    lines = [
        f"Model `{args.model}` (step {model.step}), n = {args.num}, guidance 0, FLD / yardstick (yardstick FLD "
        f"{yard:.2f}) per sampling seed; NFE includes the final denoise. {machine}.",
        "",
        "| run | NFE | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean ± sd | max raw outliers |",
        "|---|---|" + "---|" * len(args.seeds) + "---|---|",
    ]
    for i, run in enumerate(args.runs):
        per_seed = " | ".join(f"{r:.2f}" for r in ratio[i])
        sd = ratio[i].std(ddof=1) if len(args.seeds) > 1 else float("nan")
        lines.append(f"| `{run}` | {nfe[i]} | {per_seed} | {ratio[i].mean():.2f} ± {sd:.2f} | "
                     f"{outliers[i].max():.3f} |")  # fmt: skip
    save_text(out / "seed_spread.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
