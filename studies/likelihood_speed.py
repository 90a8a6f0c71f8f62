"""Speed of the PF-ODE likelihood on 784-dim images: NFE and seconds, and how the Hutchinson probes are batched.

Command (from the repository root):

    .venv/bin/python studies/likelihood_speed.py --batch 32 --probes 4 --threads 2

Uses a small untrained convolutional score (timing only; an untrained net is a fair stand-in because the cost
per evaluation does not depend on the weights, while the NFE does a little) on the first MNIST test images,
VP SDE, dopri5 at rtol = atol = 1e-5. Compares, for K probes:

* shared   — `log_likelihood(probes=K)`: one solve, one network forward per step, K vector–Jacobian
             products in one batched backward (what sdegen does);
* separate — K solves with one probe each;
* stacked  — one solve on the batch repeated K times, one probe per copy;

plus one probe, and the cost of one exact-divergence evaluation (784 vector–Jacobian products).
Prints a Markdown table and writes it to studies/results/likelihood_speed.md (or --out).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

import sdegen
from sdegen.likelihood import AugmentedFlow
from sdegen.results import save_text
from sdegen.runtime import tune_allocator


class SmallConvScore(nn.Module):
    """score(x, t) = F(x, t)/σ(t) with F three 3×3 convolutions (32 channels) and an additive time feature."""

    def __init__(self, sde, channels: int = 32):
        super().__init__()
        self.sde = sde
        self.inp = nn.Conv2d(1, channels, 3, padding=1)
        self.mid = nn.Conv2d(channels, channels, 3, padding=1)
        self.out = nn.Conv2d(channels, 1, 3, padding=1)
        self.time = nn.Linear(1, channels)

    def forward(self, x, t):
        h = torch.nn.functional.silu(self.inp(x) + self.time(t[:, None].to(x.dtype))[:, :, None, None])
        h = torch.nn.functional.silu(self.mid(h))
        return self.out(h) / self.sde.marginal_std(t, x)[:, None, None, None]


def _timed(fn, repeats: int = 1):
    """(result of the last call, the fastest wall time of `repeats` calls): the least-disturbed run on a shared CPU."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--probes", type=int, default=4)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=3, help="time each variant this often, report the fastest")
    p.add_argument("--exact", action="store_true", help="also time one exact-divergence evaluation (slow on CPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", type=Path, default=Path("../shared/data/mnist"))
    p.add_argument("--out", type=Path, default=Path("studies/results"))
    args = p.parse_args(argv)
    tune_allocator()  # keep freed activation memory (sdegen.runtime)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    sde = sdegen.VPSDE()
    with torch.random.fork_rng(devices=[]):  # fixed weights without touching the caller's RNG
        torch.manual_seed(0)
        net = SmallConvScore(sde).to(device)
    images = torch.randint(0, 256, (args.batch, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    source = "random 8-bit images"
    path = args.data / "t10k-images-idx3-ubyte.gz"
    if path.exists():
        from sdegen import data

        images = torch.from_numpy(data.read_idx(path)[: args.batch].copy()).reshape(-1, 1, 28, 28)
        source = "MNIST test images"
    u = torch.rand(images.shape, generator=torch.Generator().manual_seed(1))
    x = ((images.double() + u) / 256).float().to(device)  # dequantised, in [0, 1]
    k, kw = args.probes, {"rtol": 1e-5, "atol": 1e-5}

    rows = []

    def record(name, results, seconds):
        results = results if isinstance(results, list) else [results]
        nfe = sum(r.nfe for r in results)
        rows.append((name, nfe, seconds, seconds / args.batch))
        print(f"{name:<28} NFE {nfe:5d}  {seconds:7.2f} s  {seconds / args.batch:.3f} s/image", flush=True)

    log_likelihood = sdegen.log_likelihood
    r = args.repeats
    record("1 probe", *_timed(lambda: log_likelihood(sde, net, x, probes=1, seed=0, **kw), r))
    record(f"{k} probes, shared", *_timed(lambda: log_likelihood(sde, net, x, probes=k, seed=0, **kw), r))
    record(
        f"{k} probes, separate solves",
        *_timed(lambda: [log_likelihood(sde, net, x, probes=1, seed=s, **kw) for s in range(k)], r),
    )
    xk = x.repeat(k, 1, 1, 1)
    record(f"{k} probes, stacked batch", *_timed(lambda: log_likelihood(sde, net, xk, probes=1, seed=0, **kw), r))

    # Per-evaluation costs: bare forward, one Hutchinson evaluation (forward + backward), one exact evaluation.
    t = torch.full((args.batch,), 0.5, device=device)
    with torch.no_grad():
        _, forward = _timed(lambda: net(x, t), 10)
    one = AugmentedFlow(sde, net, 1e-5, torch.ones(1, *x.shape, device=device))
    _, hutch = _timed(lambda: one(torch.tensor(0.5), (x, None)), 10)
    note = f"Bare forward {forward * 1e3:.1f} ms, one Hutchinson evaluation {hutch * 1e3:.1f} ms"
    if args.exact:
        exact = AugmentedFlow(sde, net, 1e-5, None)
        _, exact_eval = _timed(lambda: exact(torch.tensor(0.5), (x, None)))
        note += f", one exact-divergence evaluation {exact_eval:.1f} s (× NFE {rows[0][1]} for a whole solve)"
    print(note)

    table = ["| variant | NFE | seconds | s / image |", "|---|---|---|---|"]
    table += [f"| {n} | {nfe} | {s:.2f} | {s_img:.3f} |" for n, nfe, s, s_img in rows]
    table += [
        f"\nBatch {args.batch} of {source}, VP SDE, untrained SmallConvScore, dopri5, rtol = atol = 1e-5, "
        f"{args.threads} thread(s), device {device}, fastest of {r} runs. {note}."
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    save_text(args.out / "likelihood_speed.md", "\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
