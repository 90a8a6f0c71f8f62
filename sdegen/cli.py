"""Command line: `sdegen train | sample | likelihood | plot | demo` (one entry point; `--help` on each).

The CLI is the only place where names (solvers, shipped models, config keys) are turned into objects;
the library below it takes explicit arguments only.

Every command checks its arguments, output paths, seeds and model/data compatibility before it starts
work, streams its results (`sample --out`, `likelihood --out`: a `.partial` file renamed into place when
the run completes), and ends an error in one line on stderr naming the problem, with an exit code per kind
of error, the same in every command (`sdegen._io.EXIT_*`):

    0 done · 1 unexpected error (a bug: traceback) · 2 bad arguments, config or values; model and data that
    do not fit · 3 input file missing, unreadable, corrupt or foreign · 4 output not writable (permission,
    read-only file system, a directory in the way) · 5 no space left on device · 6 in use by another
    process, or existing results that need --force · 7 training diverged · 8 other I/O error ·
    130 interrupted · 141 stdout closed (`| head`)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from sdegen import _io, shards
from sdegen._checks import SEED_LIMIT, check_int, check_positive, check_seed, parse_key_value


def _arg(check):
    """An argparse `type` from a validator that raises ValueError (its message names the problem)."""

    def parse(text: str):
        try:
            return check(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = check.__name__
    return parse


def _number(text: str, kind=float):
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def _positive_int_value(text: str) -> int:
    return check_int(_number(text, int), "value", 1)


def _positive_float_value(text: str) -> float:
    return check_positive(_number(text), "value")


def _nonneg_float_value(text: str) -> float:
    value = _number(text)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"value must be a finite number >= 0, got {text!r}")
    return value


def _seed_value(text: str) -> int:
    return check_seed(_number(text, int))


_positive_int = _arg(_positive_int_value)
_positive_float = _arg(_positive_float_value)
_nonneg_float = _arg(_nonneg_float_value)
_seed = _arg(_seed_value)


def build_parser() -> argparse.ArgumentParser:
    from sdegen.samplers import solvers

    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="sdegen", description=__doc__.splitlines()[0], formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a score model from a JSON config", formatter_class=fmt)
    p.add_argument("config", help="config file (JSON) or the name of a shipped config (mnist, toy, ...)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, dotted keys (repeatable), e.g. --set optim.lr=2e-4",
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument(
        "--no-resume", action="store_true", help="start afresh (refused over an existing run without --force)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="allow starting afresh over a run directory's files (with --no-resume, or with no checkpoint)",
    )

    p = sub.add_parser("sample", help="sample from a model and write the trajectory", formatter_class=fmt)
    p.add_argument("model", help="checkpoint path or shipped model name (see `sdegen.model.shipped_models`)")
    p.add_argument("--solver", default="euler", choices=solvers(), help="sampler")
    p.add_argument("--steps", type=_positive_int, default=500, help="number of solver steps")
    p.add_argument("--num-samples", type=_positive_int, default=None, help="number of samples (default 64)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed, 0 <= seed < 2**63")
    p.add_argument(
        "--inpaint",
        default=None,
        metavar="MASK",
        help="complete test digits given part of them: top, bottom, left, right (that half known), center (all but "
        "the central square known) or MASK.npy (0/1, 1 = known; (28, 28), (1, 28, 28) or one per digit)",
    )
    p.add_argument(
        "--from-test", default=None, metavar="START:STOP", help="with --inpaint: the test digits START..STOP-1"
    )
    p.add_argument(
        "--data",
        default=None,
        help="directory of the MNIST test split (default: data/mnist, else ../shared/data/mnist)",
    )
    p.add_argument(
        "--impute",
        default="replace",
        choices=["replace", "guidance"],
        help="with --inpaint: replacement (score_sde's inpainter) or reconstruction guidance (sdegen.inpaint)",
    )
    p.add_argument("--resample", type=_positive_int, default=1, help="RePaint passes over every --jump steps (1: off)")
    p.add_argument("--jump", type=_positive_int, default=1, help="RePaint jump length in grid steps")
    p.add_argument(
        "--label",
        default=None,
        metavar="SPEC",
        help="labels of a conditional model: drawn (default: from the training class frequencies, "
        "a sample of p(x)), balanced, random, none (the null label), a class K or a list 0,1,2",
    )
    p.add_argument("--guidance", type=_nonneg_float, default=0.0, help="classifier-free guidance weight w")
    p.add_argument(
        "--classifier",
        default=None,
        metavar="NAME",
        help="classifier guidance by this noise-conditional classifier (file or shipped name, e.g. mnist-classifier): "
        "the score model runs unconditionally (the null label of a conditional model) and --label names the "
        "target classes (default: drawn from the training frequencies, random for an unconditional model)",
    )
    p.add_argument(
        "--classifier-weight",
        type=_nonneg_float,
        default=1.0,
        metavar="W",
        help="classifier guidance weight w: score + w·∇ log p(y | x_t, t)",
    )
    p.add_argument("--save-every", type=_positive_int, default=None, help="save every k-th state (default ~50)")
    p.add_argument("--t-min", type=_positive_float, default=1e-3, help="last time of the reverse solve")
    p.add_argument("--denoise", action="store_true", help="finish with Tweedie's E[x0 | x_t_min] (1 NFE)")
    p.add_argument(
        "--option",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="solver option (repeatable), e.g. --option snr=0.16 --option method=dopri5",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output netCDF file (streamed as OUT.partial until the run completes); "
        "under torchrun rank r of N writes OUT-0000r-of-0000N.nc (open all with sdegen.open_trajectory)",
    )
    p.add_argument("--resume", action="store_true", help="skip when OUT (this rank's shard) is already complete")
    p.add_argument(
        "--chunking",
        default="time",
        choices=["time", "sample"],
        help="netCDF chunks: one saved state per chunk (time) or a block of sample paths (sample)",
    )
    p.add_argument(
        "--compression",
        type=int,
        default=0,
        choices=range(10),
        metavar="LEVEL",
        help="zlib level 0..9 of the trajectory file (0: none)",
    )

    p = sub.add_parser("likelihood", help="bits/dim of test images through the PF ODE", formatter_class=fmt)
    p.add_argument("model", help="checkpoint path or shipped model name")
    p.add_argument("--data", required=True, help="directory with t10k-images-idx3-ubyte(.gz) (MNIST IDX files)")
    p.add_argument(
        "--num",
        "--num-images",
        dest="num",
        type=_positive_int,
        default=64,
        help="number of test images (under torchrun: --num-images; torchrun takes --num as --numa-binding)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=32, help="images per ODE solve")
    p.add_argument("--rtol", type=_positive_float, default=1e-5, help="ODE relative tolerance")
    p.add_argument("--atol", type=_positive_float, default=1e-5, help="ODE absolute tolerance")
    p.add_argument("--probes", type=_positive_int, default=1, help="Hutchinson probes per image")
    at = p.add_mutually_exclusive_group()
    at.add_argument(
        "--t-min",
        type=_positive_float,
        default=None,
        help="time of the model density p_t_min (default: where sigma/alpha is a quarter 8-bit bin)",
    )
    at.add_argument(
        "--t-min-bins",
        type=_positive_float,
        default=None,
        help="t_min where sigma/alpha is this many 8-bit bins (0.25 is the default t_min)",
    )
    p.add_argument(
        "--clip-x0",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="project the model's denoiser onto its data range (sdegen.score.clip_denoised)",
    )
    p.add_argument("--seed", type=_seed, default=0, help="seed for probes and dequantisation, 0 <= seed < 2**63")
    p.add_argument(
        "--out",
        required=True,
        help="output netCDF file with per-image bits/dim (streamed as OUT.partial); "
        "under torchrun rank r of N streams its whole batches to OUT-0000r-of-0000N.nc, merged into OUT",
    )
    p.add_argument("--resume", action="store_true", help="skip the ranks whose result shard (or OUT) is complete")

    p = sub.add_parser("plot", help="plot a stored trajectory", formatter_class=fmt)
    p.add_argument("path", help="trajectory netCDF file")
    p.add_argument("--kind", default="grid", choices=["grid", "animation", "paths", "marginals"], help="figure")
    p.add_argument("--out", required=True, help="output file (.png; .gif for animation)")

    p = sub.add_parser("demo", help="the main job: sample digits with several solvers and report", formatter_class=fmt)
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--num-samples", type=_positive_int, default=36, help="digits per solver")
    p.add_argument("--seed", type=_seed, default=0, help="random seed, 0 <= seed < 2**63")
    return parser


def parse_options(pairs: list[str]) -> dict:
    """Parse KEY=VALUE pairs; values are read as JSON when possible (numbers, true/false), else strings.

    Raises:
        ValueError: a pair without "=" (named).
    """
    return dict(parse_key_value(pair, "--option") for pair in pairs)


def cmd_train(args) -> int:
    from sdegen.config import config_to_json, load_config
    from sdegen.training import train

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        print(config_to_json(cfg))
        return 0
    train(cfg, resume=not args.no_resume, progress=True, force=args.force)
    return 0


def cmd_sample(args) -> int:

    import sdegen
    from sdegen.model import load_model

    options = parse_options(args.options)
    inpaint = _inpaint_inputs(args)  # test digits, mask and condition; sets args.num_samples
    block = _rank_block(args.num_samples)  # under torchrun: this rank's samples (sdegen.shards)
    out = args.out if block is None else shards.shard_path(args.out, block.rank, block.world_size)
    _io.check_output_file(out, "--out")
    model = load_model(args.model)
    labels = None
    if inpaint and tuple(model.data_shape) != (1, 28, 28):
        raise ValueError(
            f"--inpaint completes 28x28 MNIST digits; model {args.model!r} has data shape {model.data_shape}"
        )
    if model.num_classes:
        default_label = "none" if inpaint else "drawn"  # inpainting: the digit is whatever the known part says
        try:
            labels = model.labels(args.label or default_label, args.num_samples, seed=args.seed)
        except (ValueError, TypeError) as err:
            raise SystemExit(f"error: --label {args.label}: {err}") from None
    elif args.guidance or (args.label is not None and not args.classifier):
        raise SystemExit(f"error: model {args.model!r} is unconditional; --label/--guidance need a conditional model")
    mine = labels if labels is None or block is None else labels[block.start : block.stop]
    score = model.score_fn(labels=mine, guidance=args.guidance)
    guide_attrs = {}
    if args.classifier:
        labels, mine, score, guide_attrs = _classifier_guided(args, model, block)
    save_every = args.save_every or max(1, args.steps // 50)
    t0 = time.perf_counter()
    ds = sdegen.sample(
        model.sde,
        score,
        (args.num_samples, *model.data_shape),
        solver=args.solver,
        steps=args.steps,
        seed=args.seed,
        save_every=save_every,
        t_min=args.t_min,
        labels=labels,
        denoise=args.denoise,
        progress=True,
        score_source=model.sha256,
        data_range=model.data_range,
        out=args.out,
        resume=args.resume,
        chunking=args.chunking,
        compression=args.compression,
        extra_attrs={
            "guidance": float(args.guidance),
            "label_spec": str(args.label or ("none" if inpaint else "drawn")) if labels is not None else "none",
            **guide_attrs,
            **(inpaint or {}).get("attrs", {}),
        },
        **{k: v for k, v in (inpaint or {}).items() if k != "attrs"},
        **options,
    )
    seconds = time.perf_counter() - t0
    extra = f" (+ {score.classifier_evals} classifier gradients)" if args.classifier else ""
    print(f"{args.solver}: {ds.sizes['sample']} samples, NFE {ds.attrs['nfe']}{extra}, {seconds:.1f} s -> {out}")
    return 0


def _inpaint_inputs(args) -> dict | None:
    """`sample --inpaint`: the keyword arguments of `sdegen.sample` for completing test digits START..STOP-1."""
    import numpy as np
    import torch

    from sdegen.data import DEFAULT_MNIST_ROOT, load_mnist, mnist_available
    from sdegen.inpaint import Known, mask_from_name

    if args.inpaint is None:
        if args.from_test or args.resample != 1 or args.jump != 1 or args.impute != "replace":
            raise ValueError("--from-test, --impute, --resample and --jump go with --inpaint")
        args.num_samples = args.num_samples or 64
        return None
    if not args.from_test:
        raise ValueError("--inpaint needs --from-test START:STOP (the test digits to complete)")
    try:
        start, stop = (int(v) for v in args.from_test.split(":"))
    except ValueError:
        raise ValueError(f"--from-test must be START:STOP, got {args.from_test!r}") from None
    roots = [Path(args.data)] if args.data else [DEFAULT_MNIST_ROOT, Path("../shared/data/mnist")]
    root = next((r for r in roots if mnist_available(r, split="test")), None)
    if root is None:
        raise FileNotFoundError(f"no MNIST test split (t10k-*-idx?-ubyte[.gz]) in {', '.join(map(str, roots))}")
    test = load_mnist(root, split="test")
    if not 0 <= start < stop <= len(test.data):
        raise ValueError(f"--from-test {args.from_test}: need 0 <= START < STOP <= {len(test.data)}")
    if args.num_samples not in (None, stop - start):
        raise ValueError(f"--num-samples {args.num_samples} differs from the {stop - start} digits of --from-test")
    args.num_samples = stop - start
    if args.inpaint.endswith(".npy"):
        try:
            mask = np.load(args.inpaint, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(f"--inpaint {args.inpaint}: cannot read a .npy mask ({err})") from None
        if mask.shape not in ((28, 28), (1, 28, 28), (stop - start, 1, 28, 28)):
            raise ValueError(
                f"--inpaint {args.inpaint}: mask shape {mask.shape}, need (28, 28), (1, 28, 28) or (N, 1, 28, 28)"
            )
        if mask.dtype.kind not in "biuf":
            raise ValueError(f"--inpaint {args.inpaint}: mask dtype {mask.dtype}, need bool or 0/1 numbers")
        mask = mask.reshape((-1, 1, 28, 28) if mask.ndim == 4 else (1, 28, 28))
    else:
        mask = mask_from_name(args.inpaint, (1, 28, 28))
    images = test.data[start:stop]
    condition = Known(images, torch.as_tensor(mask))  # a bad mask (values other than 0/1) is named here
    return {
        "condition": condition, "impute": args.impute, "resample": args.resample, "jump": args.jump,
        "test_index": np.arange(start, stop), "test_label": test.labels[start:stop].numpy(),
        "attrs": {"inpaint": args.inpaint, "test_data": str(root)},
    }  # fmt: skip


def _classifier_guided(args, model, block):
    """(labels, this rank's labels, guided score, attrs) for `sample --classifier`: score of the unconditional model
    (null label) + w·∇ log p(y | x_t, t) with the classifier's target labels y."""
    from sdegen.classifier import load_classifier
    from sdegen.guidance import classifier_guidance
    from sdegen.labels import resolve_labels

    if args.guidance:
        raise ValueError("--classifier and --guidance are two kinds of guidance: use one of them")
    clf = load_classifier(args.classifier)
    if tuple(clf.data_shape) != tuple(model.data_shape):
        raise ValueError(
            f"--classifier {args.classifier}: trained on data of shape {clf.data_shape}, "
            f"the model {args.model!r} on {tuple(model.data_shape)}"
        )
    if model.num_classes is not None and model.num_classes != clf.num_classes:
        raise ValueError(f"--classifier has {clf.num_classes} classes, the model {model.num_classes}")
    try:
        if model.num_classes:
            labels = model.labels(args.label or "drawn", args.num_samples, seed=args.seed)
        else:
            labels = resolve_labels(args.label or "random", args.num_samples, clf.num_classes, seed=args.seed)
    except (ValueError, TypeError) as err:
        raise ValueError(f"--label {args.label}: {err}") from None
    if (labels >= clf.num_classes).any():
        raise ValueError("--label none: classifier guidance needs target classes")
    mine = labels if block is None else labels[block.start : block.stop]
    unconditional = model.score_fn("none") if model.num_classes else model.score_fn()
    guided = classifier_guidance(unconditional, clf, mine, args.classifier_weight)
    attrs = {"classifier": clf.sha256, "classifier_weight": float(args.classifier_weight)}
    return labels, mine, guided, attrs


def _rank_block(total: int, what: str = "samples"):
    """Under torchrun (WORLD_SIZE > 1): join the process group (gloo on CPU) and return this rank's block."""
    import torch

    from sdegen._distributed import DistInfo, init_process_group

    info = DistInfo.from_env()
    if info.world_size == 1:
        return None
    init_process_group(info, torch.device("cpu"))
    return shards.split_range(total, info.rank, info.world_size, what)


def _likelihood_inputs(args):
    """Everything `likelihood` needs, checked before any ODE is solved: model, images, labels, t_min."""
    from sdegen.data import load_mnist, mnist_available
    from sdegen.dequantization import default_t_min
    from sdegen.model import load_model

    _io.check_output_file(args.out, "--out")
    if args.seed + args.num > SEED_LIMIT:  # batch i is seeded with seed + i
        raise ValueError(f"--seed {args.seed} + --num {args.num} must stay below 2**63")
    model = load_model(args.model)
    if model.data_range is None or tuple(model.data_shape) != (1, 28, 28):
        raise ValueError(
            f"model {args.model!r} was trained on data of shape {model.data_shape} with range {model.data_range}; "
            "likelihood needs a model of 8-bit 28x28 images (MNIST), e.g. mnist-likelihood"
        )
    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data}: no such directory")
    if not mnist_available(args.data, split="test"):
        raise FileNotFoundError(f"--data {args.data}: no t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz)")
    test = load_mnist(args.data, split="test")
    if args.num > len(test.data):
        raise ValueError(f"--num {args.num} exceeds the {len(test.data)} images in {args.data}")
    t_min = args.t_min
    if args.t_min_bins is not None:
        t_min = default_t_min(model.sde, model.data_range, bins=args.t_min_bins)
    return model, test, t_min


def cmd_likelihood(args) -> int:
    import numpy as np
    import torch

    import sdegen
    from sdegen.results import ResultWriter
    from sdegen.score import clip_denoised

    model, test, t_min = _likelihood_inputs(args)
    starts = list(range(0, args.num, args.batch_size))  # whole batches: each rank solves a single run's batches
    block = _rank_block(len(starts), "batches of --batch-size")
    out = args.out if block is None else shards.shard_path(args.out, block.rank, block.world_size)
    starts = starts if block is None else starts[block.start : block.stop]
    lo, hi = model.data_range
    images = lo + (hi - lo) * test.data[: args.num]  # the test digits on the model's 8-bit grid
    labels = test.labels[: args.num].numpy()
    score = model.score_fn()
    if args.clip_x0:
        score = clip_denoised(score, model.sde, model.data_range)
    attrs = {"model": str(args.model), "score_source": model.sha256, "rtol": args.rtol, "atol": args.atol,
             "probes": args.probes, "seed": args.seed, "clip_x0": int(args.clip_x0), "batch_size": args.batch_size,
             "sdegen_version": sdegen.__version__, "num": args.num, "t_min_arg": str(args.t_min),
             "t_min_bins_arg": str(args.t_min_bins), "noise": "per_image", **model.sde.attrs(),
             **({} if block is None else {"shard_rank": block.rank, "shard_world": block.world_size})}  # fmt: skip
    if args.resume and shards.results_complete(out, attrs):
        print(f"{out} is complete: skipped (--resume)")
        return _merge_likelihood(args.out, block)
    writer = ResultWriter(out, "image", {"bpd": "f8", "label": "i8", "nfe": "i8", "index": "i8"}, attrs=attrs)
    bpd, nfe, seconds = [], [], []
    try:
        for i in starts:
            batch = images[i : i + args.batch_size]
            t0 = time.perf_counter()
            # Per-image noise: image i's dequantisation and probes depend on (seed, i) only, not on the split.
            res = sdegen.bits_per_dim(
                model.sde,
                score,
                batch,
                data_range=model.data_range,
                seed=args.seed,
                indices=range(i, i + len(batch)),
                rtol=args.rtol,
                atol=args.atol,
                probes=args.probes,
                t_min=t_min,
            )
            seconds.append(time.perf_counter() - t0)
            bpd.append(res.bpd)
            nfe.append(res.nfe)
            writer.append(
                bpd=res.bpd.double().numpy(),
                label=labels[i : i + len(batch)],
                nfe=np.full(len(batch), res.nfe),
                index=np.arange(i, i + len(batch)),
            )
            print(
                f"images {i}..{i + len(batch) - 1}: {res.bpd.mean():.4f} bits/dim, NFE {res.nfe}, "
                f"{seconds[-1] / len(batch):.2f} s per image"
            )
    except BaseException as err:
        writer.abort(err)
        raise
    bpd = torch.cat(bpd).double().numpy()
    summary = {"t_min": res.t_min, "nfe_total": int(sum(nfe)), "seconds_per_image": float(sum(seconds) / len(bpd)),
               "bpd_mean": float(bpd.mean()),
               "bpd_stderr": float(bpd.std(ddof=1) / np.sqrt(len(bpd))) if len(bpd) > 1 else float("nan")}  # fmt: skip
    writer.close({**attrs, **summary}, complete=True)
    print(
        f"bits/dim {summary['bpd_mean']:.4f} ± {summary['bpd_stderr']:.4f} over {len(bpd)} test images; "
        f"NFE per batch {np.mean(nfe):.0f}; {summary['seconds_per_image']:.2f} s per image -> {out}"
    )
    return _merge_likelihood(args.out, block)


def _merge_likelihood(out, block) -> int:
    """Under torchrun: once every rank's shard is complete, merge them into `out` (whichever rank sees it)."""
    if block is not None and shards.merge_results(out, block.world_size, "image") is not None:
        print(f"merged the {block.world_size} rank shards -> {out}")
    return 0


def cmd_plot(args) -> int:
    import sdegen
    from sdegen import plots

    _io.check_output_file(args.out, "--out")
    ds = sdegen.open_trajectory(args.path)
    plots.plot_kind(ds, args.kind, args.out)  # written atomically by sdegen.plots
    print(f"{args.kind} -> {args.out}")
    return 0


def cmd_demo(args) -> int:
    from sdegen.demo import run_demo

    _io.check_output_dir(args.out, "--out")
    return run_demo(Path(args.out), num_samples=args.num_samples, seed=args.seed)


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "likelihood": cmd_likelihood, "plot": cmd_plot, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sdegen.runtime import tune_allocator

    tune_allocator()  # the command owns its process: keep freed activation memory (~25% faster CPU forwards)
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:
        # The reader of stdout went away (`sdegen train --dry-run | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _io.EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print(f"sdegen {args.command}: interrupted", file=sys.stderr)
        return _io.EXIT_INTERRUPTED
    except Exception as err:
        code, message = _classify(err)
        if code == _io.EXIT_FAILURE:
            raise  # not an error of the user's input or environment: show the traceback
        notes = "; ".join(getattr(err, "__notes__", []))
        print(f"sdegen {args.command}: error: {message}{'; ' + notes if notes else ''}", file=sys.stderr)
        return code


def _classify(err: Exception) -> tuple[int, str]:
    """(exit code, one-line message) of an error; see the module docstring for the codes."""
    from sdegen.checkpoint import CheckpointError
    from sdegen.training import RunDirectoryError, TrainingDivergedError
    from sdegen.trajectory import TrajectoryError

    one_line = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, _io.FileLockedError | RunDirectoryError):
        return _io.EXIT_BUSY, one_line
    if isinstance(err, TrainingDivergedError):
        return _io.EXIT_DIVERGED, one_line
    if isinstance(err, CheckpointError | TrajectoryError):
        return _io.EXIT_INPUT, one_line
    if isinstance(err, FileNotFoundError) and err.errno is None:
        return _io.EXIT_INPUT, one_line  # raised by sdegen with its own message
    if isinstance(err, OSError):
        return _io.os_error_exit_code(err), _io.describe_os_error(err)
    if isinstance(err, ValueError | KeyError | TypeError):
        return _io.EXIT_USAGE, one_line
    return _io.EXIT_FAILURE, one_line


if __name__ == "__main__":
    sys.exit(main())
