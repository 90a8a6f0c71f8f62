"""Training throughput: sdegen's training loop versus a bare PyTorch loop, measured in the same run.

Command (from the repository root):

    .venv/bin/python studies/training_throughput.py --rounds 5 --window 60 --threads 1

For each workload it times `sdegen.training.train` (the real loop: data order, generators, loss through the
parametrisation, warm-up lr, gradient clipping, Adam, EMA, metric logging; validation and checkpoints off
inside the timed windows) and a bare loop written out below with the *same* network, batch, optimizer and
arithmetic (x_t = alpha·x0 + sigma·ε, preconditioned input, ε-MSE, clip, Adam, EMA). Columns:

* loop / bare img/s: wall-clock images per second over steady-state windows after a warm-up window (the
  loop's own metrics.jsonl throughput), medians over rounds that alternate loop and bare;
* step-interleaved ratio (CPU only): `Trainer.train_step` and the bare step called alternately, step by
  step, each timed with this process's CPU time, so load from other jobs on a shared machine cancels
  (the whole-run columns swing by ±20% per round there); it leaves out train()'s per-step bookkeeping
  (two counters, a modulo test, a no-op progress update);
* bare, no clip/EMA: what gradient clipping and the EMA cost.

Target: loop / bare >= 0.95. On a CPU use one thread: two OpenMP threads on two busy cores were measured
40x slower than one. Workloads: the toy recipe (2-D MLP, configs/toy.json: the step is tiny, so overhead
shows most) and the MNIST recipe (configs/mnist.json; on CPU on the offline 5000-digit subset with batch
16 and windows of window/4 steps). Prints a Markdown table and writes it to
studies/results/training_throughput.md (or --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sdegen.config import load_config, make_score_model
from sdegen.data import get_dataset
from sdegen.results import save_text
from sdegen.runtime import tune_allocator
from sdegen.score import alpha_sigma
from sdegen.training import Trainer, train


def loop_images_per_s(cfg, window: int, windows: int) -> float:
    """Median images/s that train() logs over `windows` windows of `window` steps after a warm-up window."""
    with tempfile.TemporaryDirectory() as out:
        c = dataclasses.replace(
            cfg, steps=window * (windows + 1), log_every=window, val_every=0, checkpoint_every=10**9, out_dir=out
        )
        train(c, resume=False, progress=False)
        lines = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(x["images_per_s"] for x in lines[1:])


def bare_step(cfg, *, extras: bool = True):
    """One training step as a plain PyTorch function (same net, batch, Adam); `extras` adds clipping and EMA."""
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu")
    ds = get_dataset(cfg.data.name, num_samples=cfg.data.num_samples, verbose=False)
    data = ds.data.to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = make_score_model(cfg, ds.data_shape, None).to(device)
    net, sde, sd = model.net, model.sde, cfg.score.sigma_data
    params = list(net.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=cfg.optim.lr, fused=device.type == "cuda")
    gen = torch.Generator(device).manual_seed(0)
    B, shape = cfg.batch_size, (-1,) + (1,) * len(ds.data_shape)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    def step():
        x0 = data[torch.randint(len(data), (B,), device=device, generator=gen)]
        t = cfg.loss.t_min + (1 - cfg.loss.t_min) * torch.rand(B, device=device, generator=gen, dtype=torch.float64)
        eps = torch.randn(x0.shape, device=device, generator=gen)
        alpha, sigma = alpha_sigma(sde, t, eps)  # float64 schedule maths, no host sync
        xt = alpha.view(shape) * x0 + sigma.view(shape) * eps
        c_in = torch.rsqrt(alpha**2 * sd**2 + sigma**2).view(shape)
        with autocast:
            out = net(xt * c_in, torch.log(sigma / alpha))
        loss = (out.float() - eps).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if extras:
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip, foreach=True)
        opt.step()
        if extras:
            with torch.no_grad():
                torch._foreach_lerp_(ema, params, 1 - cfg.ema_decay)

    return step, device


def bare_images_per_s(cfg, window: int, windows: int, *, extras: bool = True) -> float:
    """Median wall-clock images/s of the bare step over `windows` windows after a warm-up window."""
    step, device = bare_step(cfg, extras=extras)
    rates = []
    for w in range(windows + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(window):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if w:  # the first window is warm-up, as for the loop
            rates.append(window * cfg.batch_size / (time.perf_counter() - t0))
    return statistics.median(rates)


def interleaved_ratio(cfg, steps: int) -> float:
    """(bare CPU time)/(Trainer.train_step CPU time), the two called alternately step by step (CPU only)."""
    with tempfile.TemporaryDirectory() as out:
        tr = Trainer(dataclasses.replace(cfg, out_dir=out), verbose=False)
    bare, _ = bare_step(cfg)
    for _ in range(5):  # warm-up
        tr.train_step()
        bare()
    t_loop = t_bare = 0.0
    for _ in range(steps):
        t0 = time.process_time()
        tr.train_step()
        t1 = time.process_time()
        bare()
        t_loop, t_bare = t_loop + t1 - t0, t_bare + time.process_time() - t1
    return t_bare / t_loop


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="alternating loop/bare measurements per workload")
    ap.add_argument("--window", type=int, default=60, help="steps per timed window (image workloads on CPU: /4)")
    ap.add_argument("--windows", type=int, default=3, help="timed windows per measurement (plus one warm-up)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared CPU)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--out", type=Path, default=Path("studies/results/training_throughput.md"))
    args = ap.parse_args()
    tune_allocator()  # keep freed activation memory (sdegen.runtime)
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    common = [f"device={'cuda' if cuda else 'cpu'}", "data.conditional=false"]
    workloads = {
        "toy (MLP, 2-D spiral)": load_config("toy", common),
        # On CPU: the offline 5000-digit subset and a small batch, to keep the run short.
        "mnist recipe": load_config("mnist", common if cuda else [*common, "data.name=mnist-subset", "batch_size=16"]),
    }
    cols = [
        "workload",
        "net",
        "device",
        "batch",
        "loop img/s",
        "bare img/s (same work)",
        "loop/bare",
        "per-round",
        "step-interleaved loop/bare",
        "bare, no clip/EMA img/s",
    ]
    rows = []
    for name, cfg in workloads.items():
        window = args.window if cuda or cfg.net.name == "mlp" else max(2, args.window // 4)
        loop_images_per_s(cfg, window, 1)  # discarded: one-time costs (lazy imports, allocator)
        loop, bare, plain = [], [], []
        for _ in range(args.rounds):
            loop.append(loop_images_per_s(cfg, window, args.windows))
            bare.append(bare_images_per_s(cfg, window, args.windows))
            plain.append(bare_images_per_s(cfg, window, args.windows, extras=False))
        lm, bm, pm = statistics.median(loop), statistics.median(bare), statistics.median(plain)
        ratios = sorted(a / b for a, b in zip(loop, bare, strict=True))  # per round: both under similar load
        inter = "n/a (CUDA)" if cuda else f"{interleaved_ratio(cfg, window * args.windows):.3f}"
        rows.append(
            f"| {name} | {cfg.net.name} | {'cuda' if cuda else 'cpu'} | {cfg.batch_size} | {lm:,.0f} | "
            f"{bm:,.0f} | {lm / bm:.3f} | {ratios[0]:.2f}–{ratios[-1]:.2f} | {inter} | {pm:,.0f} |"
        )
        print(rows[-1], flush=True)
    table = "\n".join(["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|", *rows])
    print("\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_text(args.out, f"# Training throughput (target loop/bare >= 0.95)\n\n{table}\n")


if __name__ == "__main__":
    main()
