"""Guidance: scores of p_t(x | y) built from an unconditional score and a condition y.

Bayes' rule at every noise level, p_t(x | y) ∝ p_t(x)·p_t(y | x), gives

    ∇ₓ log p_t(x | y) = ∇ₓ log p_t(x) + ∇ₓ log p_t(y | x),

and a guidance weight w sharpens the condition, p_t(x)·p_t(y | x)^w (Dhariwal & Nichol 2021, Sec. 4):

* classifier guidance: s(x, t) + w·∇ₓ log p_φ(y | x, t) with a noise-conditional classifier p_φ trained on the
  forward marginals (`sdegen.classifier`); w = 1 is the exact conditional score when p_φ is exact.
* classifier-free guidance (Ho & Salimans 2022): with p_t(y | x) ∝ p_t(x | y)/p_t(x) the same sharpened
  score is s(x, t | y) + w·(s(x, t | y) − s(x, t)) = (1 + w)·s(x, t | y) − w·s(x, t); w = 0 is the
  conditional score itself.

The weight w is a finite number ≥ 0 in both (w = 0 turns classifier guidance off). A guided score is a plain
callable score(x, t), so every solver takes it; a run's NFE counts its calls (`sdegen.sample` wraps it once),
and `ClassifierGuided.classifier_evals` counts the classifier's forward + backward passes (one per call).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from sdegen._checks import Time


def check_weight(weight: float, name: str = "guidance weight") -> float:
    """w as a float; a negative, NaN or infinite w (or a non-number) is a ValueError naming it."""
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise TypeError(f"{name} must be a number, got {type(weight).__name__}")
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {weight}")
    return float(weight)


def combine_cfg(cond: torch.Tensor, uncond: torch.Tensor, weight: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6 in score form): (1 + w)·cond − w·uncond."""
    return (1 + weight) * cond - weight * uncond


def classifier_free_guidance(cond_score: Callable, uncond_score: Callable, weight: float) -> Callable:
    """score(x, t) = (1 + w)·cond_score(x, t) − w·uncond_score(x, t), for two separate score callables.

    A trained conditional network does this in one batched call (`sdegen.score.ScoreModel.score_fn`); this
    form combines any two scores, e.g. the exact class-conditional and unconditional scores of
    `sdegen.analytic`.
    """
    weight = check_weight(weight)

    def score(x: torch.Tensor, t: Time) -> torch.Tensor:
        return combine_cfg(cond_score(x, t), uncond_score(x, t), weight)

    return score


class ClassifierGuided:
    """score(x, t) + w·∇ₓ log p(y | x, t): classifier guidance (Dhariwal & Nichol 2021, Alg. 1 in score form).

    Args:
        score: the (unconditional) score(x, t) → tensor shaped like x.
        classifier: classifier(x, t) → (batch, K) logits of p(y | x_t = x, t) (log-probabilities up to a
            per-sample constant; log-softmax is applied here). A `sdegen.classifier.NoisyClassifier`, or an
            exact one such as `sdegen.analytic.GaussianMixture.class_logits_fn`. If it has `data_shape` and
            `num_classes` attributes, inputs and labels are checked against them.
        labels: an int class for every sample, or a (batch,) integer tensor, in [0, K).
        weight: w ≥ 0, finite.

    Attributes:
        classifier_evals: classifier forward + backward passes so far (one per call when w > 0).
        labels: the per-sample labels (a (batch,) tensor) or None, which `sdegen.sample` checks against the
            labels it stores.
    """

    def __init__(self, score: Callable, classifier: Callable, labels, weight: float):
        if not callable(score) or not callable(classifier):
            raise TypeError("score and classifier must be callables score(x, t) and classifier(x, t)")
        self.score, self.classifier = score, classifier
        self.weight = check_weight(weight)
        y = torch.as_tensor(labels)
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.ndim > 1:
            raise ValueError(
                f"labels must be an int or a (batch,) integer tensor, got {y.dtype} of shape {tuple(y.shape)}"
            )
        num_classes = getattr(classifier, "num_classes", None)
        if y.numel() and ((y < 0).any() or (num_classes is not None and (y >= num_classes).any())):
            bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
            raise ValueError(f"labels must lie in {bound} for this classifier, got {y.unique().tolist()}")
        self._y = y.long()
        self.labels = self._y if self._y.ndim == 1 else None
        self.classifier_evals = 0

    def __call__(self, x: torch.Tensor, t: Time) -> torch.Tensor:
        s = self.score(x, t)
        if not self.weight:
            return s
        shape = getattr(self.classifier, "data_shape", None)
        if shape is not None and tuple(x.shape[1:]) != tuple(shape):
            raise ValueError(f"the classifier was trained on data of shape {tuple(shape)}, got {tuple(x.shape[1:])}")
        y = self._y.to(x.device).expand(x.shape[0]) if self._y.ndim == 0 else self._y.to(x.device)
        if y.shape != (x.shape[0],):
            raise ValueError(f"labels must be an int or have shape ({x.shape[0]},), got {tuple(y.shape)}")
        return s + self.weight * self.log_prob_grad(x, t, y)

    def log_prob_grad(self, x: torch.Tensor, t: Time, y: torch.Tensor) -> torch.Tensor:
        """∇ₓ log p(y | x, t), shaped like x, by one forward and one backward pass of the classifier."""
        with torch.enable_grad():  # samplers run under no_grad
            xg = x.detach().requires_grad_(True)
            logits = self.classifier(xg, t)
            if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
                raise ValueError(f"classifier must return (batch, K) logits, got shape {tuple(logits.shape)}")
            if int(y.max()) >= logits.shape[1]:
                raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got {int(y.max())}")
            log_p = torch.log_softmax(logits.double(), dim=1).gather(1, y[:, None]).sum()
            (grad,) = torch.autograd.grad(log_p, xg)
        self.classifier_evals += 1
        return grad.to(x.dtype)

    def __repr__(self) -> str:
        return f"ClassifierGuided({self.score!r}, {self.classifier!r}, weight={self.weight})"


def classifier_guidance(score: Callable, classifier: Callable, labels, weight: float) -> ClassifierGuided:
    """The classifier-guided score s(x, t) + w·∇ₓ log p(y | x, t) (see `ClassifierGuided`)."""
    return ClassifierGuided(score, classifier, labels, weight)
