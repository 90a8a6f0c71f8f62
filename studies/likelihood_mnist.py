"""Bits/dim on the MNIST test split through the probability-flow ODE, with NFE and seconds per image.

Command (from the repository root; the trained model and the data come from other parts of sdegen):

    .venv/bin/python studies/likelihood_mnist.py --model mnist-likelihood-fast --data ../shared/data/mnist \
        --num 256 --batch-size 32 --probes 4 --seed 0 --t-min-bins 0.0625

The model's denoiser is projected onto its data range (`sdegen.score.clip_denoised`; --no-clip-x0 scores
the raw network) and t_min sits where sigma/alpha is 1/16 of a bin, the level chosen for this model on
held-out training digits (docs/guide.md §5).

Prints the mean bits/dim with its standard error over images, the spread over Hutchinson probes, total NFE
and seconds per image; writes `likelihood_mnist.nc` (per-image bpd, probe stderr, log-densities, per-batch
NFE and seconds) and `likelihood_mnist.md` (a one-row Markdown table) under studies/results/ or --out.

bits/dim = −(log p(y)/D + ln(hi − lo))/ln 2 + 8 with y the uniformly dequantised image in the model's data
range (offset 8 for [0, 1], 7 for [−1, 1]); see `sdegen.dequantization`. It is an upper bound on the
discrete model's −log2 P(k)/D.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import sdegen
from sdegen.results import save_results, save_text
from sdegen.runtime import tune_allocator

TEST_IMAGES = "t10k-images-idx3-ubyte.gz"


def evaluate(
    sde,
    score,
    images: torch.Tensor,
    *,
    data_range,
    batch_size: int = 32,
    dequant_draws: int = 1,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    **likelihood_kwargs,
) -> xr.Dataset:
    """Bits/dim of every image, in batches; one generator seeded once drives all dequantisation and probes.

    Args:
        sde, score: the model. images: (N, *data_shape) uint8 levels or floats on the data range's grid.
        data_range: (lo, hi) of the model. batch_size: images per PF-ODE solve (the ODE is solved per batch,
            so its adaptive steps, NFE and seconds are per batch).
        **likelihood_kwargs: t_min for `sdegen.bits_per_dim`; divergence, probes, probe, rtol, atol, method.

    Returns:
        Dataset with bpd, bpd_probe_stderr (image), logp (draw, image) in nats, nfe and seconds (batch).
    """
    generator = torch.Generator().manual_seed(seed)
    bpd, stderr, logp, nfe, seconds = [], [], [], [], []
    for start in range(0, images.shape[0], batch_size):
        t0 = time.perf_counter()
        result = sdegen.bits_per_dim(
            sde,
            score,
            images[start : start + batch_size],
            data_range=data_range,
            dequant_draws=dequant_draws,
            seed=generator,
            dtype=dtype,
            **likelihood_kwargs,
        )
        seconds.append(time.perf_counter() - t0)
        bpd.append(result.bpd)
        stderr.append(
            result.bpd_probe_stderr if result.bpd_probe_stderr is not None else torch.full_like(result.bpd, np.nan)
        )
        logp.append(result.logp)
        nfe.append(result.nfe)
        t_min = result.t_min

    def as_np(parts, dim=0):
        return torch.cat(parts, dim).double().cpu().numpy()

    ds = xr.Dataset(
        {
            "bpd": (("image",), as_np(bpd), {"units": "bits/dim"}),
            "bpd_probe_stderr": (("image",), as_np(stderr), {"units": "bits/dim"}),
            "logp": (("draw", "image"), as_np(logp, 1), {"units": "nats"}),
            "nfe": (("batch",), np.asarray(nfe, dtype=np.int64)),
            "seconds": (("batch",), np.asarray(seconds)),
        },
        coords={"image": np.arange(images.shape[0])},
    )
    n = images.shape[0]
    ds.attrs.update(sde.attrs())
    opts = {k: (v if isinstance(v, int | float) else str(v)) for k, v in likelihood_kwargs.items() if v is not None}
    ds.attrs.update({f"likelihood_{k}": v for k, v in {**opts, "t_min": t_min}.items()})
    ds.attrs.update(
        {
            "data_range": f"{data_range[0]},{data_range[1]}",
            "batch_size": batch_size,
            "dequant_draws": dequant_draws,
            "seed": seed,
            "num_images": n,
            "mean_bpd": float(ds.bpd.mean()),
            "stderr_bpd": float(ds.bpd.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan,
            "mean_probe_stderr": float(ds.bpd_probe_stderr.mean()),
            "nfe_total": int(sum(nfe)),
            "seconds_total": float(sum(seconds)),
            "seconds_per_image": float(sum(seconds) / n),
            "sdegen_version": sdegen.__version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    return ds


def write_results(ds: xr.Dataset, out: Path, model_name: str) -> str:
    """Write likelihood_mnist.nc (atomically) and likelihood_mnist.md into `out`; return the table."""
    out.mkdir(parents=True, exist_ok=True)
    ds = ds.assign_attrs(model=model_name)
    save_results(ds, out / "likelihood_mnist.nc")  # atomic: a killed run never leaves a half-written file
    a = ds.attrs
    nfe_per_solve = a["nfe_total"] / (ds.sizes["batch"] * a["dequant_draws"])
    table = (
        "| model | images | bits/dim | ± stderr (images) | probe spread (bits/dim) | NFE per solve | s / image |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {model_name} | {a['num_images']} | {a['mean_bpd']:.4f} | {a['stderr_bpd']:.4f} | "
        f"{a['mean_probe_stderr']:.4f} | {nfe_per_solve:.0f} | {a['seconds_per_image']:.3f} |\n"
    )
    save_text(out / "likelihood_mnist.md", table)
    return table


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", default="mnist", help="checkpoint path or shipped model name")
    p.add_argument("--data", default="../shared/data/mnist", help=f"folder holding {TEST_IMAGES}")
    p.add_argument("--num", type=int, default=256, help="test images to evaluate (the first N)")
    p.add_argument("--batch-size", type=int, default=32)
    # Rademacher probes have the lower variance of the two (no diagonal term); 4 give a usable spread.
    p.add_argument("--divergence", choices=["hutchinson", "exact"], default="hutchinson")
    p.add_argument("--probes", type=int, default=4)
    p.add_argument("--probe", choices=["rademacher", "gaussian"], default="rademacher")
    p.add_argument("--dequant-draws", type=int, default=1)
    # rtol = atol = 1e-5 as in Song et al. 2021 (Table 2); t_min: bits_per_dim's default (a quarter 8-bit bin).
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-5)
    at = p.add_mutually_exclusive_group()
    at.add_argument("--t-min", type=float, default=None)
    at.add_argument("--t-min-bins", type=float, default=None, help="t_min where sigma/alpha is this many 8-bit bins")
    p.add_argument(
        "--clip-x0",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="project the denoiser onto the data range (sdegen.score.clip_denoised)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("studies/results"))
    args = p.parse_args(argv)
    tune_allocator()  # keep freed activation memory (sdegen.runtime)
    if args.num < 1 or args.batch_size < 1:
        p.error("--num and --batch-size must be >= 1")

    from sdegen import data  # imported here so that tests and --help need neither
    from sdegen.dequantization import default_t_min
    from sdegen.model import load_model
    from sdegen.score import clip_denoised

    model = load_model(args.model)
    t_min = args.t_min
    if args.t_min_bins is not None:
        t_min = default_t_min(model.sde, tuple(model.data_range), bins=args.t_min_bins)
    images = torch.from_numpy(np.asarray(data.read_idx(Path(args.data) / TEST_IMAGES))[: args.num].copy())
    images = images.reshape(images.shape[0], *model.data_shape)  # (N, 28, 28) → (N, 1, 28, 28)
    probes = args.probes if args.divergence == "hutchinson" else 1
    score = model.score_fn()
    if args.clip_x0:
        score = clip_denoised(score, model.sde, tuple(model.data_range))
    ds = evaluate(
        model.sde,
        score,
        images,
        data_range=tuple(model.data_range),
        batch_size=args.batch_size,
        dequant_draws=args.dequant_draws,
        seed=args.seed,
        divergence=args.divergence,
        probes=probes,
        probe=args.probe,
        rtol=args.rtol,
        atol=args.atol,
        t_min=t_min,
    )
    ds.attrs["clip_x0"] = int(args.clip_x0)
    print(write_results(ds, args.out, str(args.model)))
    a = ds.attrs
    print(
        f"bits/dim {a['mean_bpd']:.4f} ± {a['stderr_bpd']:.4f} over {a['num_images']} images; "
        f"probe spread {a['mean_probe_stderr']:.4f}; NFE {a['nfe_total']}; {a['seconds_per_image']:.3f} s/image"
    )


if __name__ == "__main__":
    main()
