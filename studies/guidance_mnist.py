"""Guidance on MNIST: classifier-free guidance and classifier guidance, accuracy and FLD against the weight w.

    OMP_NUM_THREADS=2 .venv/bin/python studies/guidance_mnist.py --data ../shared/data/mnist --num 500

Classifier-free guidance (CFG) runs the shipped conditional model `mnist` as (1 + w)·s(x, y) − w·s(x, ∅);
classifier guidance (CG) runs the same network *unconditionally* (the null label ∅) plus w·∇ log p_φ(y | x_t, t)
of the shipped noise-conditional classifier `mnist-classifier` (`sdegen train mnist_classifier`). Labels are
class-balanced (sample i asks for digit i mod 10). For each w: the shipped LeNet's agreement with the
requested label (an independent classifier: not the guiding one), FLD (mean ± sd over 5 reference draws)
against the MNIST test split with the real-data yardstick at the same n, the class spread, NFE (network
evaluations; CFG evaluates a doubled batch once per NFE), the classifier gradients, and seconds. Writes
guidance.md (the table), guidance.nc (the numbers) and guidance_sweep.png (rows: w, columns: digits 0–9, one
panel per method) to --out (default docs/guidance/).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import xarray as xr

import sdegen
from sdegen.classifier import load_classifier
from sdegen.data import load_mnist
from sdegen.guidance import classifier_guidance
from sdegen.metrics import class_spread, fld_reference, fld_score, predict_classes
from sdegen.results import save_figure, save_results, save_text
from sdegen.runtime import tune_allocator

REFERENCE_SEEDS = range(5)  # reference draws per FLD; their spread is the FLD's sampling noise
CFG_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)  # w = 0: the conditional model itself
CG_WEIGHTS = (0.0, 1.0, 2.0, 4.0, 8.0)  # w = 0: the unconditional (null-label) model; a weak classifier wants w > 1


def sample(model, score, labels, args):
    t0 = time.perf_counter()
    ds = sdegen.sample(
        model.sde, score, (args.num, *model.data_shape), solver=args.solver, steps=args.steps, seed=args.seed,
        save_every=args.steps, labels=labels.numpy(), denoise=True, data_range=model.data_range, progress=True,
    )  # fmt: skip
    x = ds["x"].isel(time=-1).values
    return x, ds.attrs["nfe"], time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mnist")
    p.add_argument("--classifier", default="mnist-classifier")
    p.add_argument("--data", default="../shared/data/mnist", help="directory with the MNIST test split")
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--solver", default="euler")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/guidance")
    args = p.parse_args()
    tune_allocator()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model, clf = sdegen.load_model(args.model), load_classifier(args.classifier)
    test = load_mnist(args.data, split="test")
    yard = np.array([fld_reference(test.data, n=args.num, seed=s) for s in REFERENCE_SEEDS])
    labels = torch.arange(args.num) % 10

    # The guiding classifier's own accuracy on the first 2000 test digits at a few noise levels (x_t from the SDE).
    gen = torch.Generator().manual_seed(0)
    clean, truth = test.data[:2000], test.labels[:2000]
    clf_acc = {}
    for t in (0.01, 0.2, 0.4, 0.6):
        alpha, sigma = model.sde.alpha_sigma(torch.tensor([t], dtype=torch.float64))
        xt = float(alpha) * clean + float(sigma) * torch.randn(clean.shape, generator=gen)
        with torch.no_grad():
            clf_acc[t] = float((clf(xt, t).argmax(1) == truth).float().mean())

    rows, grids = [], {}
    for method, weights in (("cfg", CFG_WEIGHTS), ("classifier", CG_WEIGHTS)):
        for w in weights:
            if method == "cfg":
                score, grads = model.score_fn(labels=labels, guidance=w), None
            else:
                score = grads = classifier_guidance(model.score_fn("none"), clf, labels, w)
            x, nfe, seconds = sample(model, score, labels, args)
            outside = float((np.abs(x - 0.5) > 1.0).reshape(len(x), -1).any(1).mean())  # a pixel outside [-0.5, 1.5]
            x = np.clip(x, 0.0, 1.0)
            fld = np.array([fld_score(x, test.data, n=args.num, seed=s) for s in REFERENCE_SEEDS])
            pred = predict_classes(x)
            rows.append({
                "method": method, "weight": w, "nfe": nfe, "classifier_grads": grads.classifier_evals if grads else 0,
                "seconds": seconds, "accuracy": float((pred == labels.numpy()).mean()), "fld": fld.mean(),
                "fld_sd": fld.std(), "entropy": class_spread(np.bincount(pred, minlength=10)).entropy,
                "outside": outside,
            })  # fmt: skip
            grids[method, w] = x[:10, 0]  # samples 0..9 ask for digits 0..9
            print(rows[-1], flush=True)

    table = xr.Dataset(
        {k: ("setting", np.array([r[k] for r in rows])) for k in rows[0] if k != "method"},
        coords={"method": ("setting", [r["method"] for r in rows])},
        attrs={"model": args.model, "classifier": args.classifier, "solver": args.solver, "steps": args.steps,
               "num": args.num, "yardstick": float(yard.mean()), "yardstick_sd": float(yard.std())},
    )  # fmt: skip
    save_results(table, out / "guidance.nc")
    lines = [
        f"model `{args.model}`, solver `{args.solver}` {args.steps} steps + Tweedie denoise, n = {args.num}, "
        f"balanced labels; real-data yardstick FLD {yard.mean():.2f} ± {yard.std():.2f}. Guiding classifier "
        f"`{args.classifier}` accuracy on 2000 test digits at t = "
        + ", ".join(f"{t:g}: {a:.3f}" for t, a in clf_acc.items()),
        "",
        "| method | w | NFE | classifier grads | seconds | LeNet = label | FLD | FLD / yardstick | class entropy "
        "| raw pixel outside [-0.5, 1.5] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['weight']:g} | {r['nfe']} | {r['classifier_grads']} | {r['seconds']:.0f} "
            f"| {r['accuracy']:.3f} | {r['fld']:.2f} ± {r['fld_sd']:.2f} | {r['fld'] / yard.mean():.2f} "
            f"| {r['entropy']:.3f} | {r['outside']:.3f} |"
        )
    save_text(out / "guidance.md", "\n".join(lines) + "\n")
    print("\n".join(lines))

    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    for ax, (method, weights) in zip(axes, (("cfg", CFG_WEIGHTS), ("classifier", CG_WEIGHTS)), strict=True):
        rows_img = [np.concatenate(list(grids[method, w]), axis=1) for w in weights]
        ax.imshow(np.concatenate(rows_img, axis=0), cmap="gray", vmin=0, vmax=1)
        ax.set_yticks([14 + 28 * i for i in range(len(weights))], [f"w = {w:g}" for w in weights])
        ax.set_xticks([14 + 28 * i for i in range(10)], [str(i) for i in range(10)])
        ax.set_title("classifier-free guidance" if method == "cfg" else f"classifier guidance ({args.classifier})")
    fig.tight_layout()
    save_figure(fig, out / "guidance_sweep.png")


if __name__ == "__main__":
    main()
