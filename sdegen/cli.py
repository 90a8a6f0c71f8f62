"""Command line: `sdegen train | sample | likelihood | plot | demo` (one entry point; `--help` on each).

The CLI is the only place where names (solvers, shipped models, config keys) are turned into objects;
the library below it takes explicit arguments only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _nonneg_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from sdegen.samplers import solvers

    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="sdegen", description=__doc__.splitlines()[0], formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a score model from a JSON config", formatter_class=fmt)
    p.add_argument("config", help="config file (JSON) or the name of a shipped config (mnist, toy, ...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, dotted keys (repeatable), e.g. --set optim.lr=2e-4")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if the run directory has a checkpoint")

    p = sub.add_parser("sample", help="sample from a model and write the trajectory", formatter_class=fmt)
    p.add_argument("model", help="checkpoint path or shipped model name (see `sdegen.checkpoint.shipped_models`)")
    p.add_argument("--solver", default="euler", choices=solvers(), help="sampler")
    p.add_argument("--steps", type=_positive_int, default=500, help="number of solver steps")
    p.add_argument("--num-samples", type=_positive_int, default=64, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--label", type=int, default=None, help="class label for a conditional model")
    p.add_argument("--guidance", type=_nonneg_float, default=0.0, help="classifier-free guidance weight w")
    p.add_argument("--save-every", type=_positive_int, default=None, help="save every k-th state (default ~50)")
    p.add_argument("--t-min", type=_positive_float, default=1e-3, help="last time of the reverse solve")
    p.add_argument("--denoise", action="store_true", help="finish with Tweedie's E[x0 | x_t_min] (1 NFE)")
    p.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="solver option (repeatable), e.g. --option snr=0.16 --option method=dopri5")
    p.add_argument("--out", required=True, help="output netCDF file")

    p = sub.add_parser("likelihood", help="bits/dim of test images through the PF ODE", formatter_class=fmt)
    p.add_argument("model", help="checkpoint path or shipped model name")
    p.add_argument("--data", required=True, help="directory with t10k-images-idx3-ubyte(.gz) (MNIST IDX files)")
    p.add_argument("--num", type=_positive_int, default=64, help="number of test images")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="images per ODE solve")
    p.add_argument("--rtol", type=_positive_float, default=1e-5, help="ODE relative tolerance")
    p.add_argument("--atol", type=_positive_float, default=1e-5, help="ODE absolute tolerance")
    p.add_argument("--probes", type=_positive_int, default=1, help="Hutchinson probes per image")
    at = p.add_mutually_exclusive_group()
    at.add_argument("--t-min", type=_positive_float, default=None,
                    help="time of the model density p_t_min (default: where sigma/alpha is a quarter 8-bit bin)")
    at.add_argument("--t-min-bins", type=_positive_float, default=None,
                    help="t_min where sigma/alpha is this many 8-bit bins (0.25 is the default t_min)")
    p.add_argument("--clip-x0", action=argparse.BooleanOptionalAction, default=True,
                   help="project the model's denoiser onto its data range (sdegen.score.clip_denoised)")
    p.add_argument("--seed", type=int, default=0, help="seed for probes and dequantisation")
    p.add_argument("--out", required=True, help="output netCDF file with per-image bits/dim")

    p = sub.add_parser("plot", help="plot a stored trajectory", formatter_class=fmt)
    p.add_argument("path", help="trajectory netCDF file")
    p.add_argument("--kind", default="grid", choices=["grid", "animation", "paths", "marginals"], help="figure")
    p.add_argument("--out", required=True, help="output file (.png; .gif for animation)")

    p = sub.add_parser("demo", help="the main job: sample digits with several solvers and report", formatter_class=fmt)
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--num-samples", type=_positive_int, default=36, help="digits per solver")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def parse_options(pairs: list[str]) -> dict:
    """Parse KEY=VALUE pairs; values are read as JSON when possible (numbers, true/false), else strings."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"error: expected KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_train(args) -> int:
    from sdegen.config import config_to_json, load_config
    from sdegen.training import train

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        print(config_to_json(cfg))
        return 0
    train(cfg, resume=not args.no_resume, progress=True)
    return 0


def cmd_sample(args) -> int:
    import torch

    import sdegen
    from sdegen.checkpoint import load_model

    model = load_model(args.model)
    labels = None
    if args.label is not None:
        if not model.num_classes:
            raise SystemExit(f"error: model {args.model!r} is unconditional; --label needs a conditional model")
        if not 0 <= args.label < model.num_classes:
            raise SystemExit(f"error: --label must be in [0, {model.num_classes}), got {args.label}")
        labels = torch.full((args.num_samples,), args.label, dtype=torch.long)
    elif args.guidance:
        raise SystemExit("error: --guidance needs --label")
    score = model.score_fn(labels=labels, guidance=args.guidance)
    save_every = args.save_every or max(1, args.steps // 50)
    t0 = time.perf_counter()
    ds = sdegen.sample(model.sde, score, (args.num_samples, *model.data_shape), solver=args.solver, steps=args.steps,
                       seed=args.seed, save_every=save_every, t_min=args.t_min, labels=labels, denoise=args.denoise,
                       progress=True, score_source=model.sha256, data_range=model.data_range,
                       **parse_options(args.options))
    seconds = time.perf_counter() - t0
    ds.attrs["guidance"] = float(args.guidance)
    sdegen.save_trajectory(ds, args.out)
    print(f"{args.solver}: {args.num_samples} samples, NFE {ds.attrs['nfe']}, {seconds:.1f} s -> {args.out}")
    return 0


def cmd_likelihood(args) -> int:
    import numpy as np
    import torch
    import xarray as xr

    import sdegen
    from sdegen.checkpoint import load_model
    from sdegen.data import load_mnist
    from sdegen.dequantization import default_t_min
    from sdegen.score import clip_denoised
    from sdegen.trajectory import save_netcdf

    model = load_model(args.model)
    test = load_mnist(args.data, split="test")
    if args.num > len(test.data):
        raise ValueError(f"--num {args.num} exceeds the {len(test.data)} images in {args.data}")
    lo, hi = model.data_range
    images = lo + (hi - lo) * test.data[: args.num]  # the test digits on the model's 8-bit grid
    score = model.score_fn()
    if args.clip_x0:
        score = clip_denoised(score, model.sde, model.data_range)
    t_min = args.t_min
    if args.t_min_bins is not None:
        t_min = default_t_min(model.sde, model.data_range, bins=args.t_min_bins)
    bpd, nfe, seconds = [], [], []
    for i in range(0, args.num, args.batch_size):
        batch = images[i : i + args.batch_size]
        t0 = time.perf_counter()
        res = sdegen.bits_per_dim(model.sde, score, batch, data_range=model.data_range, seed=args.seed + i,
                                  rtol=args.rtol, atol=args.atol, probes=args.probes, t_min=t_min)
        seconds.append(time.perf_counter() - t0)
        bpd.append(res.bpd)
        nfe.append(res.nfe)
        print(f"images {i}..{i + len(batch) - 1}: {res.bpd.mean():.4f} bits/dim, NFE {res.nfe}, "
              f"{seconds[-1] / len(batch):.2f} s per image")
    bpd = torch.cat(bpd).double().numpy()
    ds = xr.Dataset(
        {"bpd": ("image", bpd), "label": ("image", test.labels[: args.num].numpy())},
        coords={"image": np.arange(args.num)},
        attrs={"model": str(args.model), "score_source": model.sha256, "rtol": args.rtol, "atol": args.atol,
               "probes": args.probes, "seed": args.seed, "clip_x0": int(args.clip_x0),
               "t_min": res.t_min, "batch_size": args.batch_size, "nfe_total": int(sum(nfe)),
               "seconds_per_image": float(sum(seconds) / args.num), "bpd_mean": float(bpd.mean()),
               "bpd_stderr": float(bpd.std(ddof=1) / np.sqrt(args.num)) if args.num > 1 else float("nan"),
               "sdegen_version": sdegen.__version__, **model.sde.attrs()},
    )
    save_netcdf(ds, args.out)
    print(f"bits/dim {ds.attrs['bpd_mean']:.4f} ± {ds.attrs['bpd_stderr']:.4f} over {args.num} test images; "
          f"NFE per batch {np.mean(nfe):.0f}; {ds.attrs['seconds_per_image']:.2f} s per image -> {args.out}")
    return 0


def cmd_plot(args) -> int:
    import sdegen
    from sdegen import plots

    ds = sdegen.open_trajectory(args.path)
    plots.plot_kind(ds, args.kind, args.out)
    print(f"{args.kind} -> {args.out}")
    return 0


def cmd_demo(args) -> int:
    from sdegen.demo import run_demo

    return run_demo(Path(args.out), num_samples=args.num_samples, seed=args.seed)


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "likelihood": cmd_likelihood, "plot": cmd_plot,
            "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sdegen.runtime import tune_allocator

    tune_allocator()  # the command owns its process: keep freed activation memory (~25% faster CPU forwards)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as err:
        # Library errors already name the problem; show them without a traceback.
        print(f"sdegen {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
