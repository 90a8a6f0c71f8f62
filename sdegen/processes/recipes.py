"""Bridge-training recipes: a forward process, its target data and its x0-predictor network, by name.

`sdegen train` trains a recipe when the config's `process.name` is set (see `sdegen.processes.trainer`):

================  =====================================  ===============================================
recipe            process                                data / network
================  =====================================  ===============================================
circle_mixture    WrappedBrownian(rate)                  four wrapped normals (docs/processes.md) / CircleMLP
rotation_curve    RotationBrownian(rate)                 rotations on a closed curve in SO(3) / RotationMLP
mnist_label       Joint(OU(0, √2, rate), Uniform(rate, 10))  `data.name` images in [−1, 1] + labels / ImageLabelNet
================  =====================================  ===============================================

A literal registry (no import-time registration). Targets are drawn once per run from the run seed, so the
training set is finite and seeded like an image dataset.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sdegen.processes.circle import WrappedBrownian, wrap
from sdegen.processes.discrete import UniformDiscrete
from sdegen.processes.euclidean import OrnsteinUhlenbeck
from sdegen.processes.joint import Joint
from sdegen.processes.nets import CircleMLP, ImageLabelNet, RotationMLP
from sdegen.processes.rotation import RotationBrownian, canonical, from_axis_angle

# The circle study's target: wrapped normals (weight, mean, sd).
CIRCLE_WEIGHTS = (1 / 8, 1 / 8, 1 / 4, 1 / 2)
CIRCLE_MEANS = (9 * math.pi / 10, math.pi, math.pi / 2, 0.0)
CIRCLE_SDS = (0.5, 0.2, 0.05, 1.0)


def circle_mixture(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n angles (float64) from the mixture of four wrapped normals."""
    w = torch.tensor(CIRCLE_WEIGHTS, dtype=torch.float64)
    k = torch.multinomial(w, n, replacement=True, generator=generator)
    means, sds = torch.tensor(CIRCLE_MEANS, dtype=torch.float64), torch.tensor(CIRCLE_SDS, dtype=torch.float64)
    return wrap(means[k] + sds[k] * torch.randn(n, generator=generator, dtype=torch.float64))


def rotation_curve(u: torch.Tensor) -> torch.Tensor:
    """Quaternions (n, 4) of the closed curve R(u): angle 1.2 + 0.8 sin 2πu about (cos 2πu, sin 2πu, ½)/‖·‖."""
    phi = 2 * math.pi * u.double()
    axis = torch.stack((torch.cos(phi), torch.sin(phi), torch.full_like(phi, 0.5)), -1)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    return canonical(from_axis_angle(axis, 1.2 + 0.8 * torch.sin(phi)))


def rotation_curve_samples(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n rotations (float64 quaternions) uniform in the curve parameter."""
    return rotation_curve(torch.rand(n, generator=generator, dtype=torch.float64))


def _mnist_label_data(data_name: str, root: str | None, num_samples: int, seed: int):
    from sdegen.data import get_dataset

    ds = get_dataset(data_name, root=root, num_samples=num_samples, seed=seed, verbose=False)
    if ds.labels is None or ds.data_range is None or ds.data_shape != (1, 28, 28):
        raise ValueError(f"recipe mnist_label needs labelled 28×28 images, got {ds.name} {ds.data_shape}")
    return (ds.to_range(-1.0, 1.0).data, ds.labels)


@dataclass(frozen=True)
class Recipe:
    """What a bridge training run is made of.

    Attributes:
        make_process: rate → the forward process.
        make_net: (width, rate) → the x0-predictor network.
        load_data: (data name, root, num_samples, seed) → the clean training states (a tuple for Joint).
        self_condition: whether the network takes the previous estimate (self-conditioning).
    """

    make_process: Callable
    make_net: Callable[[int, float], torch.nn.Module]
    load_data: Callable
    self_condition: bool = False


RECIPES: dict[str, Recipe] = {
    "circle_mixture": Recipe(
        make_process=lambda rate: WrappedBrownian(rate),
        make_net=lambda width, rate: CircleMLP(width),
        load_data=lambda name, root, n, seed: circle_mixture(n, torch.Generator().manual_seed(seed)).float(),
    ),
    "rotation_curve": Recipe(
        make_process=lambda rate: RotationBrownian(rate),
        make_net=lambda width, rate: RotationMLP(width),
        load_data=lambda name, root, n, seed: rotation_curve_samples(n, torch.Generator().manual_seed(seed)).float(),
    ),
    "mnist_label": Recipe(
        make_process=lambda rate: Joint(OrnsteinUhlenbeck(0.0, math.sqrt(2.0), rate), UniformDiscrete(rate, 10)),
        make_net=lambda width, rate: ImageLabelNet(width, reversion=rate),
        load_data=_mnist_label_data,
        self_condition=True,
    ),
}
