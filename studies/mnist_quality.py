"""Sample quality of a trained MNIST model: Fréchet LeNet Distance beside the real-data yardstick.

    .venv/bin/python studies/mnist_quality.py --model mnist --data ../shared/data/mnist --num 500

Draws `--num` digits (class-balanced labels for a conditional model, with guidance weights from
`--guidance`; labels drawn i.i.d. from the training class frequencies, w = 0, which is an unconditional
sample of the model's marginal p(x) = Σ_y p(y) p(x | y); and unconditionally through the null label),
scores them with the shipped LeNet against the MNIST test split at equal n, and prints a Markdown table:
FLD (mean ± std over reference draws), the yardstick FLD of as many real training digits scored the same
way, their ratio (target <= 2), the class spread, and how often the LeNet agrees with the requested
label. Writes the table and one netCDF of the final samples per setting to `--out` (default
studies/results/mnist_quality/).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import sdegen
from sdegen.data import get_dataset, load_mnist
from sdegen.metrics import class_spread, fld_reference, fld_score, predict_classes
from sdegen.model import load_model
from sdegen.results import save_text
from sdegen.runtime import tune_allocator

REFERENCE_SEEDS = range(5)  # reference draws per FLD; the spread over them is the FLD's sampling noise


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mnist")
    p.add_argument("--data", default="../shared/data/mnist", help="directory with the MNIST test split")
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--solver", default="euler")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--guidance", type=float, nargs="*", default=[0.0, 0.5], help="guidance weights (conditional)")
    p.add_argument(
        "--drawn-labels",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also sample with labels drawn from the training class frequencies (w = 0)",
    )
    p.add_argument("--unconditional", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="studies/results/mnist_quality")
    args = p.parse_args()
    tune_allocator()  # keep freed activation memory (sdegen.runtime)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    model = load_model(args.model)
    reference = load_mnist(args.data, split="test").data
    yard = np.array([fld_reference(reference, n=args.num, seed=s) for s in REFERENCE_SEEDS])

    settings = []  # (name, labels, guidance)
    if model.num_classes:
        labels = torch.arange(args.num) % model.num_classes
        settings += [(f"labels, w={w:g}", labels, w) for w in args.guidance]
        if args.drawn_labels:
            freq = torch.bincount(get_dataset("mnist", verbose=False).labels, minlength=model.num_classes).double()
            drawn = torch.multinomial(freq, args.num, replacement=True, generator=torch.Generator().manual_seed(1))
            settings.append(("drawn labels, w=0", drawn, 0.0))
    if args.unconditional or not model.num_classes:
        settings.append(("unconditional", None, 0.0))

    rows = []
    for name, labels, w in settings:
        t0 = time.perf_counter()
        ds = sdegen.sample(
            model.sde,
            model.score_fn(labels=labels, guidance=w),
            (args.num, *model.data_shape),
            solver=args.solver,
            steps=args.steps,
            seed=args.seed,
            save_every=args.steps,
            labels=labels,
            denoise=True,
            data_range=model.data_range,
            score_source=model.sha256,
            progress=True,
        )
        seconds = time.perf_counter() - t0
        sdegen.save_trajectory(ds, out / f"samples_{name.replace(', ', '_').replace(' ', '_').replace('=', '')}.nc")
        x = np.clip(ds.x.isel(time=-1).values, *model.data_range)
        x = (x - model.data_range[0]) / (model.data_range[1] - model.data_range[0])
        scores = np.array([fld_score(x, reference, n=args.num, seed=s) for s in REFERENCE_SEEDS])
        pred = predict_classes(x)
        agree = float((pred == labels.numpy()).mean()) if labels is not None else float("nan")
        spread = class_spread(np.bincount(pred, minlength=10))
        rows.append((name, ds.attrs["nfe"], seconds, scores, spread, agree))

    lines = [
        f"model `{args.model}` (step {model.step}), solver {args.solver}, {args.steps} steps + Tweedie denoise, "
        f"n = {args.num}; real-data yardstick FLD {yard.mean():.2f} ± {yard.std():.2f}",
        "",
        "| samples | NFE | seconds | FLD | FLD / yardstick | class entropy | max/min class | LeNet = label |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, nfe, sec, sc, spread, agree in rows:
        lines.append(
            f"| {name} | {nfe} | {sec:.0f} | {sc.mean():.2f} ± {sc.std():.2f} | {sc.mean() / yard.mean():.2f} "
            f"| {spread.entropy:.3f} | {spread.max_min_ratio:.2f} | {agree:.3f} |"
        )
    table = "\n".join(lines)
    save_text(out / "mnist_quality.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
