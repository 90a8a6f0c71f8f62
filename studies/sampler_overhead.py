"""Sampler overhead: wall time of `sdegen.sample` ÷ (NFE × one bare network forward), same batch, same run.

Command (from the repository root):

    .venv/bin/python studies/sampler_overhead.py --batch 64 --threads 1

A ratio of 1.00 means the sampler costs nothing beyond its network evaluations; the target is ≤ 1.10 for
euler, pc, ode, ddim, dpmpp_2m and edm_heun. The network is `sdegen.nets.TutorialUNet` (untrained: the cost
of a forward does not depend on the weights) on 1×28×28 images; `--net fallback` (or a checkout without
`sdegen.nets`) uses the small conv net defined below instead. The score is the tutorial's net(x, t)/sigma(t),
so the division is part of the measured overhead, as it would be in use.

The bare forward is timed on the same batch right before and right after each sampler run (median of
`--repeats` calls each, under no_grad like the samplers) and the two are averaged, so a machine whose load
drifts (2 shared cores here) shifts numerator and denominator together. The network time spent inside
each run is also summed, giving an "in-run" ratio that load drift cannot skew, and the non-network time
per solver step. The extra row "euler, batch BrownianInterval" shows what the per-sample noise streams
(`brownian="grid"`, the default) cost against one batch-wide `torchsde.BrownianInterval`.

On a machine shared with other jobs the bare forward drifts by ±30% within minutes, so the definition ratio
scatters (values below 1 are seen, which is impossible without noise); the in-run ratio is the same
quotient with the forward timed inside the run and is the figure to trust there. Use one thread on 2 shared
cores: with two, every small tensor op waits at a thread barrier for a descheduled core (~5 ms per op seen).

The script measures the library path as a user's script gets it: `sdegen.sample` raises glibc's malloc
thresholds on first use (`sdegen.runtime.tune_allocator_once`); the warm-up run comes first, so the bare
forwards are timed under the same allocator. `--default-allocator` sets SDEGEN_TUNE_ALLOCATOR=0 and keeps
glibc's defaults: then every forward page-faults fresh pages for its activations, and more so inside the
adaptive ODE, whose own allocations interleave with the network's: seen, ode 1.30 (in-run 1.04) with the
defaults against 1.06 tuned, and a bare forward of 69 ms against 52 ms.

Prints a Markdown table and writes it, with the numbers as netCDF, to studies/results/ (or --out DIR).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from torch import nn

import sdegen
from sdegen.results import save_results, save_text

# (label, solver, steps, options): step counts typical of each solver's use, NFE between 20 and 150 so that
# per-run constants (prior draw, grid, Dataset assembly) are included but do not dominate.
RUNS = [
    ("euler", "euler", 100, {}),
    ("pc", "pc", 50, {"snr": 0.16, "corrector_steps": 1}),
    ("ode", "ode", 10, {"method": "dopri5", "rtol": 1e-3, "atol": 1e-3}),
    ("ddim", "ddim", 100, {}),
    ("dpmpp_2m", "dpmpp_2m", 20, {}),
    ("edm_heun", "edm_heun", 10, {}),
    ("ancestral", "ancestral", 100, {}),
    ("srk", "srk", 30, {}),
    ("euler, batch BrownianInterval", "euler", 100, {"brownian": "interval"}),
]
TARGETS = {"euler", "pc", "ode", "ddim", "dpmpp_2m", "edm_heun"}  # the solvers with the ≤ 1.10 target


class FallbackNet(nn.Module):
    """A small conv net called as net(x, t, y=None), used when `sdegen.nets` is not available."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.inp = nn.Conv2d(1, width, 3, padding=1)
        self.mid = nn.Sequential(*[nn.Conv2d(width, width, 3, padding=1) for _ in range(4)])
        self.out = nn.Conv2d(width, 1, 3, padding=1)
        self.time = nn.Linear(1, width)

    def forward(self, x, t, y=None):
        h = torch.relu(self.inp(x) + self.time(t[:, None].log())[:, :, None, None])
        for layer in self.mid:
            h = torch.relu(layer(h))
        return self.out(h)


def make_net(kind: str) -> nn.Module:
    if kind == "tutorial":
        try:
            from sdegen.nets import TutorialUNet
        except ImportError:
            print("sdegen.nets not available: using the fallback conv net")
            return FallbackNet()
        return TutorialUNet()
    return FallbackNet()


def forward_seconds(net: nn.Module, x: torch.Tensor, t: torch.Tensor, repeats: int) -> float:
    """Median wall time of one bare forward net(x, t) under no_grad."""
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(x, t)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="samples per batch")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--net", choices=["tutorial", "fallback"], default="tutorial", help="network")
    parser.add_argument("--repeats", type=int, default=15, help="timed bare forwards before and after each run")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--out", default="studies/results", help="output directory")
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="keep glibc's malloc thresholds (by default raised, see sdegen.runtime)",
    )
    args = parser.parse_args()
    if args.default_allocator:
        os.environ["SDEGEN_TUNE_ALLOCATOR"] = "0"  # before the library's first use (sdegen.runtime)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    sde = sdegen.VPSDE()
    net = make_net(args.net).to(device).eval()
    shape = (args.batch, 1, 28, 28)

    net_seconds = [0.0]  # wall time spent inside the network during the current run

    def score(x, t):
        # Tutorial parametrisation: the network predicts sigma(t)·score.
        t0 = time.perf_counter()
        out = net(x, t)
        sync()
        net_seconds[0] += time.perf_counter() - t0
        return out / sde.marginal_std(t, x)[:, None, None, None]

    x_probe = torch.randn(shape, device=device)
    t_probe = torch.full((args.batch,), 0.5, device=device)
    sdegen.sample(sde, score, shape, solver="euler", steps=3, seed=0, device=device)  # first use: allocator
    forward_seconds(net, x_probe, t_probe, 5)  # warm-up (kernels)

    rows = []
    for label, solver, steps, opts in RUNS:
        before = forward_seconds(net, x_probe, t_probe, args.repeats)
        net_seconds[0] = 0.0
        sync()
        t0 = time.perf_counter()
        ds = sdegen.sample(sde, score, shape, solver=solver, steps=steps, seed=0, device=device, **opts)
        sync()
        wall = time.perf_counter() - t0
        after = forward_seconds(net, x_probe, t_probe, args.repeats)
        fwd = 0.5 * (before + after)
        nfe = int(ds.attrs["nfe"])
        # ratio: the definition; in-run: wall over the network time measured inside this very run, which a
        # drifting machine load cannot skew; per step: everything that is not the network, per solver step.
        rows.append((label, steps, nfe, wall, fwd, wall / (nfe * fwd), wall / net_seconds[0],
                     (wall - net_seconds[0]) / steps))  # fmt: skip
        print(
            f"{label:32s} NFE {nfe:4d}  {wall:7.2f} s  forward {1e3 * fwd:6.2f} ms  ratio {rows[-1][5]:.3f}  "
            f"in-run {rows[-1][6]:.3f}  other {1e3 * rows[-1][7]:.2f} ms/step"
        )

    name = type(net).__name__
    lines = [
        f"Sampler overhead = wall / (NFE × bare forward); {name}, batch {args.batch}, 1×28×28, "
        f"{args.threads} threads, device {device}, VP SDE. Target ≤ 1.10 for {', '.join(sorted(TARGETS))}. "
        "in-run = wall / network time inside the same run; other = non-network time per solver step.",
        "",
        "| run | steps | NFE | seconds | forward (ms) | ratio | in-run ratio | other (ms/step) | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, steps, nfe, wall, fwd, ratio, inrun, other in rows:
        verdict = ("met" if ratio <= 1.10 else "MISSED") if label in TARGETS else "-"
        lines.append(
            f"| {label} | {steps} | {nfe} | {wall:.2f} | {1e3 * fwd:.2f} | {ratio:.3f} | {inrun:.3f} | "
            f"{1e3 * other:.2f} | {verdict} |"
        )
    table = "\n".join(lines)
    print("\n" + table)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_text(out / "sampler_overhead.md", table + "\n")
    columns = ["steps", "nfe", "seconds", "forward_seconds", "ratio", "in_run_ratio", "other_seconds_per_step"]
    results = xr.Dataset(
        {c: ("run", np.array([r[i + 1] for r in rows])) for i, c in enumerate(columns)},
        coords={"run": [r[0] for r in rows]},
        attrs={"net": name, "batch": args.batch, "threads": args.threads, "device": str(device), "sde": "vp"},
    )
    save_results(results, out / "sampler_overhead.nc")
    print(f"\n-> {out / 'sampler_overhead.md'}, {out / 'sampler_overhead.nc'}")


if __name__ == "__main__":
    main()
