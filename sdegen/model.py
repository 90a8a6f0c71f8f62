"""The user-facing trained model: `load_model` (a checkpoint path or a shipped name) gives a `Model`.

A `Model` wraps the EMA weights of a training checkpoint or model file (`sdegen.checkpoint` holds the file
format) as a `sdegen.score.ScoreModel` with the SDE, data shape, data range and classes it was trained
on. Shipped models live in sdegen/models/ and are loaded by name (`shipped_models()` lists them).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import torch

from sdegen.checkpoint import CheckpointError, checkpoint_config, checkpoint_kind, read_checkpoint
from sdegen.labels import resolve_labels

MODEL_DIR = Path(__file__).parent / "models"


class Model:
    """A trained score model loaded from a checkpoint or model file (EMA weights, eval mode, no grad).

    Attributes:
        sde: the forward SDE it was trained with.
        net: the network with the EMA weights.
        score_model: the `sdegen.score.ScoreModel` (net + SDE + parametrisation).
        config: the resolved `TrainConfig`.
        data_shape: shape of one sample, e.g. (1, 28, 28).
        data_range: (low, high) of the training data, or None (unbounded toy data).
        num_classes: number of classes for conditional models, else None.
        sha256: checksum of the file's payload (use it as `score_source`).
        path: the file it came from; step: the training step of the weights.
    """

    def __init__(self, score_model, config, *, data_shape, data_range, num_classes, sha256, path, step):
        self.score_model = score_model
        self.sde = score_model.sde
        self.net = score_model.net
        self.config = config
        self.data_shape = tuple(data_shape)
        self.data_range = None if data_range is None else (float(data_range[0]), float(data_range[1]))
        self.num_classes = num_classes
        self.sha256 = sha256
        self.path = Path(path)
        self.step = step

    @functools.cached_property
    def class_frequencies(self) -> torch.Tensor | None:
        """(num_classes,) label counts of the training data (from the dataset its config names), or None."""
        if self.num_classes is None:
            return None
        from sdegen.data import get_dataset

        data = self.config.data
        ds = get_dataset(data.name, root=data.root or None, num_samples=data.num_samples, verbose=False)
        return torch.bincount(ds.labels, minlength=self.num_classes).double()

    def labels(self, spec="drawn", num: int = 1, *, seed: int = 0) -> torch.Tensor:
        """One label per sample for `spec` (`sdegen.labels`: "drawn" from the class frequencies by default,
        "random", "balanced", "none" = the null label, a class, or a list), a (num,) long tensor."""
        if self.num_classes is None:
            raise ValueError(f"{self.path.name} is an unconditional model: it takes no labels")
        freq = self.class_frequencies if isinstance(spec, str) and spec.strip().lower() == "drawn" else None
        return resolve_labels(spec, num, self.num_classes, class_frequencies=freq, seed=seed)

    def score_fn(self, labels=None, guidance: float = 0.0, *, seed: int = 0, self_condition: str = "carry"):
        """score(x, t) for samplers.

        For a class-conditional model `labels` defaults to "drawn": label i drawn from the training class
        frequencies (with `seed`), so the samples follow the model's p(x), its best unconditional sample;
        "none" is the null label (the weaker unconditional mode), and any spec of `sdegen.labels` works.
        `guidance` is the classifier-free guidance weight w (score = (1 + w)·s(x, y) − w·s(x, ∅)).
        String and list specs are resolved per batch size at the first call, sample i by (seed, i).
        `self_condition` says where a self-conditioned model's x0 estimate comes from
        (`sdegen.score.ScoreModel.score_fn`: "carry" for samplers, "two_pass" for likelihoods).
        """
        sc = {"self_condition": self_condition}
        if self.num_classes is None:
            if labels is not None:
                raise ValueError(f"{self.path.name} is an unconditional model: it takes no labels")
            return self.score_model.score_fn(None, guidance, **sc)
        if isinstance(labels, torch.Tensor | np.ndarray | int | np.integer) and not isinstance(labels, bool):
            if isinstance(labels, int | np.integer):
                labels = self.labels(int(labels), 1)[0]  # range-checked
            return self.score_model.score_fn(torch.as_tensor(labels), guidance, **sc)
        spec = "drawn" if labels is None else labels
        per_batch: dict[int, object] = {}

        def score(x: torch.Tensor, t) -> torch.Tensor:
            n = x.shape[0]
            if n not in per_batch:
                per_batch[n] = self.score_model.score_fn(self.labels(spec, n, seed=seed), guidance, **sc)
            return per_batch[n](x, t)

        self.labels(spec, 1, seed=seed)  # a bad spec fails here, not at the first score evaluation
        return score

    def denoise(self, x: torch.Tensor, t, labels: int | torch.Tensor | None = None) -> torch.Tensor:
        """E[x0 | x_t = x] (Tweedie), shaped like x."""
        return self.score_model.denoise(x, t, self.score_model._labels(labels, x))

    def __repr__(self) -> str:
        return (
            f"Model({self.path.name}, sde={self.sde!r}, net={type(self.net).__name__}, "
            f"data_shape={self.data_shape}, num_classes={self.num_classes}, step={self.step})"
        )


def shipped_models() -> list[str]:
    """Names of the score models shipped in sdegen/models/ (other files there, e.g. the LeNet, are skipped)."""
    return sorted(
        p.stem for p in MODEL_DIR.glob("*.pt") if checkpoint_kind(p) in ("training", "model") and not _is_classifier(p)
    )


def shipped_classifiers() -> list[str]:
    """Names of the noise-conditional classifiers shipped in sdegen/models/ (`sdegen.classifier.load_classifier`)."""
    return sorted(
        p.stem for p in MODEL_DIR.glob("*.pt") if checkpoint_kind(p) in ("training", "model") and _is_classifier(p)
    )


def _is_classifier(path: Path) -> bool:
    config = checkpoint_config(path) or {}
    return bool(config.get("classifier", {}).get("train", False)) if isinstance(config, dict) else False


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint path as given, or sdegen/models/<name>.pt for a shipped name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if (MODEL_DIR / f"{name_or_path}.pt").is_file():
        return MODEL_DIR / f"{name_or_path}.pt"
    raise FileNotFoundError(
        f"{str(name_or_path)!r} is neither a checkpoint file nor a shipped model; shipped: {shipped_models()}"
    )


def load_model(name_or_path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Model:
    """Load a training checkpoint or model file (or a shipped model by name) as a `Model` with EMA weights.

    Raises:
        FileNotFoundError: unknown name (the message lists the shipped models).
        CheckpointError: corrupt file, invalid stored config, or weights that do not fit the config's
            network (strict state-dict loading), naming the file.
    """
    from sdegen.config import ConfigError, config_from_dict, make_score_model  # config imports the nets

    ck = read_checkpoint(resolve_model_path(name_or_path), kind=("training", "model"))
    try:
        config = config_from_dict(json.loads(ck.config_json))
    except (ConfigError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{ck.path}: stored config is invalid ({e})") from e
    if config.classifier.train:
        raise CheckpointError(f"{ck.path}: is a noise-conditional classifier; load it with sdegen.load_classifier")
    st = ck.state
    try:
        with torch.random.fork_rng(devices=[]):  # the throw-away init must not advance the caller's global RNG
            model = make_score_model(config, tuple(st["data_shape"]), st["num_classes"])
        model.load_state_dict(st["ema"], strict=True)
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{ck.path}: weights do not match the network of its config ({e})") from e
    model.eval().requires_grad_(False).to(map_location)
    return Model(
        model,
        config,
        data_shape=st["data_shape"],
        data_range=st["data_range"],
        num_classes=st["num_classes"],
        sha256=ck.sha256,
        path=ck.path,
        step=st["step"],
    )
