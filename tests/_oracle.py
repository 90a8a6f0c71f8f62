"""Test helper: a 'network' that returns the exact prediction of a parametrisation for Gaussian(-mixture) data.

Used with `time_input="t"` so that it receives the SDE time; with `precondition=True` it undoes the
input scaling c_in itself. Its outputs are computed from `sdegen.analytic` (score, Tweedie denoiser)
with the definitions of ε, x0 and v written out independently of `sdegen.score`.
"""

from __future__ import annotations

import torch
from torch import nn

from sdegen.score import Parametrisation, ScoreModel


class OracleNet(nn.Module):
    def __init__(self, dist, sde, kind, precondition, sigma_data, scale=1.0, shift=0.0, per_class=None):
        super().__init__()
        self.dist, self.sde, self.kind = dist, sde, kind
        self.precondition, self.sigma_data = precondition, sigma_data
        self.scale, self.shift = scale, shift
        self.per_class = per_class  # optional list of distributions, one per class label; dist is for ∅
        self.calls = []

    def _exact(self, dist, x, t, alpha, sigma):
        score = dist.score(self.sde, x, t)
        eps = -sigma * score
        x0 = dist.denoise(self.sde, x, t)
        sd = self.sigma_data
        c = torch.sqrt(alpha**2 * sd**2 + sigma**2)
        return {
            "score": sigma * score if self.precondition else score,
            "eps": eps,
            "x0": x0,
            "v": (alpha * sd * eps - sigma / sd * x0) / c,
        }[self.kind]

    def forward(self, x_in, t, y=None):
        self.calls.append((x_in.detach().clone(), t.detach().clone(), None if y is None else y.clone()))
        shape = (-1,) + (1,) * (x_in.ndim - 1)
        alpha = self.sde.mean_scale(t, x_in).reshape(shape)
        sigma = self.sde.marginal_std(t, x_in).reshape(shape)
        x = x_in * torch.sqrt(alpha**2 * self.sigma_data**2 + sigma**2) if self.precondition else x_in
        if self.per_class is None or y is None:
            out = self._exact(self.dist, x, t, alpha, sigma)
        else:
            out = torch.stack(
                [
                    self._exact(
                        self.dist if int(k) == len(self.per_class) else self.per_class[int(k)],
                        x[i : i + 1],
                        t[i : i + 1],
                        alpha[i : i + 1],
                        sigma[i : i + 1],
                    )[0]
                    for i, k in enumerate(y)
                ]
            )
        return out * self.scale + self.shift


def oracle_model(dist, sde, kind="eps", *, precondition=False, sigma_data=1.0, scale=1.0, shift=0.0, per_class=None):
    """A ScoreModel whose network predicts the exact `kind` for data ~ dist (optionally perturbed)."""
    net = OracleNet(dist, sde, kind, precondition, sigma_data, scale, shift, per_class)
    param = Parametrisation(kind=kind, precondition=precondition, sigma_data=sigma_data, time_input="t")
    num_classes = None if per_class is None else len(per_class)
    return ScoreModel(net, sde, param, num_classes=num_classes)
