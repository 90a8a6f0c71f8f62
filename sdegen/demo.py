"""`sdegen demo`: the main job. Sample MNIST digits from the shipped model with several solvers, write
each full path as a netCDF trajectory with figures, score the samples with the shipped LeNet, compute the
bits/dim of a few test digits, and print a table. A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

# (solver, steps, options): a cross-section of the families, with step counts that give clean digits on
# this model at demo speed (studies/mnist_quality.py measures FLD per solver and step count).
DEMO_RUNS = [
    ("euler", 250, {}),
    ("pc", 125, {"snr": 0.1, "corrector_steps": 1}),
    ("ode", 0, {"method": "dopri5", "rtol": 1e-3, "atol": 1e-3}),
    ("ddim", 50, {}),
    ("dpmpp_2m", 20, {}),
    ("edm_heun", 12, {}),
]
GUIDANCE = 0.5  # classifier-free guidance weight for the class-conditional model (0 = plain conditional)
LIKELIHOOD_IMAGES = 32  # test digits whose bits/dim the demo computes (CLI `sdegen likelihood` for more)
LIKELIHOOD_MODEL = "mnist-likelihood-fast"
LIKELIHOOD_T_MIN_BINS = 0.0625  # its t_min: sigma/alpha = 1/16 bin, chosen on held-out training digits (guide §5)


def _mnist_test_dir() -> Path | None:
    """The MNIST test split: data/mnist in the working directory, else ../shared/data/mnist."""
    from sdegen.data import mnist_available

    for root in (Path("data/mnist"), Path("../shared/data/mnist")):
        if mnist_available(root, split="test"):
            return root
    return None


def run_demo(out: Path, *, num_samples: int = 36, seed: int = 0) -> int:
    import sdegen
    from sdegen import plots
    from sdegen.metrics import class_spread, predict_classes
    from sdegen.model import load_model
    from sdegen.results import save_text

    out.mkdir(parents=True, exist_ok=True)
    model = load_model("mnist")
    labels = torch.arange(num_samples) % model.num_classes if model.num_classes else None
    score = model.score_fn(labels=labels, guidance=GUIDANCE if labels is not None else 0.0)
    print(
        f"model: {model.path.name} ({model.config.sde.name} SDE, {model.config.net.name}, step {model.step}); "
        f"{num_samples} digits per solver, seed {seed}"
    )
    header = [
        "| solver | steps | NFE | seconds | class entropy | LeNet agrees with label |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(header), flush=True)
    rows = []
    for solver, steps, options in DEMO_RUNS:
        t0 = time.perf_counter()
        ds = sdegen.sample(
            model.sde,
            score,
            (num_samples, *model.data_shape),
            solver=solver,
            steps=steps or 1,
            seed=seed,
            save_every=max(1, (steps or 1) // 25),
            labels=labels,
            denoise=solver in ("euler", "pc"),
            score_source=model.sha256,
            data_range=model.data_range,
            **options,
        )
        seconds = time.perf_counter() - t0
        sdegen.save_trajectory(ds, out / f"{solver}.nc")
        plots.sample_grid(ds, out / f"{solver}.png")
        final = ds.x.isel(time=-1).values.clip(*model.data_range)
        predicted = predict_classes(final)
        counts = torch.bincount(torch.from_numpy(predicted), minlength=10).numpy()
        agree = float((predicted == labels.numpy()).mean()) if labels is not None else float("nan")
        rows.append(
            f"| {solver} | {ds.attrs['steps']} | {ds.attrs['nfe']} | {seconds:.1f} | "
            f"{class_spread(counts).entropy:.3f} | {agree:.2f} |"
        )
        print(rows[-1], flush=True)  # each solver as it finishes
    plots.animation(sdegen.open_trajectory(out / "euler.nc"), out / "euler.gif")
    plots.component_paths(sdegen.open_trajectory(out / "euler.nc"), out / "euler_paths.png")
    likelihood = _likelihood_line()
    print("\n" + likelihood)
    save_text(out / "summary.md", "\n".join([*header, *rows, "", likelihood]) + "\n")
    print(f"\ntrajectories, grids (*.png), euler.gif and summary.md in {out}/")
    return 0


def _likelihood_line() -> str:
    """Bits/dim of a few test digits under the shipped likelihood model, if it and the test split are here."""
    import sdegen
    from sdegen.data import load_mnist
    from sdegen.dequantization import default_t_min
    from sdegen.model import load_model, shipped_models
    from sdegen.score import clip_denoised

    root = _mnist_test_dir()
    if root is None or LIKELIHOOD_MODEL not in shipped_models():
        return "bits/dim: skipped (needs the MNIST test split in data/mnist or ../shared/data/mnist)"
    model = load_model(LIKELIHOOD_MODEL)
    images = load_mnist(root, split="test").data[:LIKELIHOOD_IMAGES]
    t_min = default_t_min(model.sde, model.data_range, bins=LIKELIHOOD_T_MIN_BINS)
    t0 = time.perf_counter()
    score = clip_denoised(model.score_fn(), model.sde, model.data_range)
    res = sdegen.bits_per_dim(model.sde, score, images, data_range=model.data_range, seed=0, t_min=t_min)
    seconds = time.perf_counter() - t0
    return (
        f"bits/dim of {LIKELIHOOD_IMAGES} test digits (model {LIKELIHOOD_MODEL}, t_min at "
        f"{LIKELIHOOD_T_MIN_BINS} bin, clipped x0, Hutchinson, rtol=atol=1e-5): "
        f"{res.bpd.mean():.3f}, NFE {res.nfe}, {seconds / LIKELIHOOD_IMAGES:.2f} s per image"
    )
