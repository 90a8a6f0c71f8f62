"""Class labels for conditional sampling: a label spec resolved to one label per sample.

A class-conditional model trained with label dropout samples p(x | y) for a label y in 0..K−1 and its
unconditional mode p(x | ∅) for the null label K. The best sample of the data distribution p(x) is
ancestral: draw y from the training class frequencies, then x | y ("drawn", the default). Specs:

* "drawn": y_i ~ the class frequencies (i.i.d.); "random": y_i uniform over the K classes;
* "balanced": y_i = i mod K; "none": the null label K (the unconditional mode);
* an int k, or its string "k": every sample gets class k; a list/tuple or the string "0,1,2": sample i gets
  entry i mod len (so "0,1,2" cycles); a (num,) integer tensor or array: taken as it is.

Random specs are per sample: y_i depends on (seed, i) only, so a run's labels do not depend on its batch
size, and the same seed gives the same labels. A process of a split run that holds the global samples
start..start + num − 1 passes `offset=start` and gets exactly those samples' labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sdegen.samplers._noise import derive_seed

SPECS = ("drawn", "random", "balanced", "none")
_LABELS = 4  # stream id for label draws (sdegen.samplers._noise uses 1–3)


def resolve_labels(
    spec, num: int, num_classes: int, *, class_frequencies=None, seed: int = 0, offset: int = 0
) -> torch.Tensor:
    """One label per sample for `spec` (module docstring), as a (num,) long tensor in [0, num_classes].

    Args:
        spec: "drawn", "random", "balanced", "none", an int, "k", "k1,k2,...", a sequence or a (num,) tensor.
        num: number of samples.
        num_classes: K, the classes of the model (label K is the null label).
        class_frequencies: (K,) non-negative weights for "drawn".
        seed: for "drawn" and "random".
        offset: the global index of sample 0 (a block of a run split over processes): labels of samples
            offset..offset + num − 1 of the global run, for every spec.

    Raises:
        ValueError: an unknown spec, a label outside [0, K] (K only through "none" or an explicit K), a
            tensor of the wrong shape, or "drawn" without valid class frequencies.
    """
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("drawn", "random"):
            weights = _frequencies(class_frequencies, num_classes) if text == "drawn" else torch.ones(num_classes)
            return _draw(weights.double(), num, seed, offset)
        if text == "balanced":
            return torch.arange(offset, offset + num) % num_classes
        if text == "none":
            return torch.full((num,), num_classes, dtype=torch.long)
        try:
            spec = [int(part) for part in text.split(",")]
        except ValueError:
            raise ValueError(
                f"unknown label spec {spec!r}; use one of {list(SPECS)}, a class 0..{num_classes - 1}, "
                "or a comma-separated list of classes"
            ) from None
        if len(spec) == 1:
            spec = spec[0]
    if isinstance(spec, bool):
        raise TypeError(f"labels must be a spec string, an int or integers, got {spec!r}")
    if isinstance(spec, int | np.integer):
        labels = torch.full((num,), int(spec), dtype=torch.long)
    elif isinstance(spec, torch.Tensor | np.ndarray):
        labels = torch.as_tensor(np.asarray(spec) if isinstance(spec, np.ndarray) else spec)
        if labels.shape != (num,) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be {num} integers, got shape {tuple(labels.shape)} dtype {labels.dtype}")
        labels = labels.long()
    elif isinstance(spec, Sequence) and spec and all(isinstance(v, int | np.integer) for v in spec):
        labels = torch.tensor([int(spec[i % len(spec)]) for i in range(offset, offset + num)], dtype=torch.long)
    else:
        raise TypeError(f"labels must be a spec string, an int or integers, got {spec!r}")
    if ((labels < 0) | (labels > num_classes)).any():
        bad = labels[(labels < 0) | (labels > num_classes)][0].item()
        raise ValueError(f"label {bad} is out of range: classes are 0..{num_classes - 1}, {num_classes} = null label")
    return labels


def _frequencies(class_frequencies, num_classes: int) -> torch.Tensor:
    if class_frequencies is None:
        raise ValueError("labels 'drawn' need the class frequencies of the training data")
    w = torch.as_tensor(class_frequencies, dtype=torch.float64)
    if w.shape != (num_classes,) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"class frequencies must be {num_classes} non-negative numbers, not all 0; got {w.tolist()}")
    return w


def _draw(weights: torch.Tensor, num: int, seed: int, offset: int = 0) -> torch.Tensor:
    """y_i ~ Categorical(weights), sample i from its own generator seeded by (seed, offset + i)."""
    out = torch.empty(num, dtype=torch.long)
    for i in range(num):
        g = torch.Generator().manual_seed(derive_seed(seed, _LABELS, offset + i))
        out[i] = torch.multinomial(weights, 1, generator=g)[0]
    return out
