"""LeNet-5 for 28x28 digits (LeCun et al. 1998), the classifier behind the Frechet LeNet Distance.

The modern variant: ReLU activations and 2x2 max pooling (the 1998 net used tanh and average pooling).
It is trained by `studies/train_lenet.py` and shipped as sdegen/models/lenet.pt; `sdegen.metrics` loads it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LeNet5(nn.Module):
    """LeNet-5 for 28x28 digits: conv(6, 5x5, pad 2) -> pool -> conv(16, 5x5) -> pool -> fc120 -> fc84 -> fc10.

    Spatial sizes: 28 -> conv1 28 -> pool 14 -> conv2 10 -> pool 5, so fc1 sees 16 * 5 * 5 = 400 inputs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.metadata: dict = {}  # filled by sdegen.metrics.load_lenet from the file's JSON metadata
        self.sha256 = ""  # the file's payload checksum, set by load_lenet (identifies the yardstick)
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, (N, 1, 28, 28) in [0, 1] -> (N, 84), taken before the fc2 ReLU."""
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 6, 14, 14)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (N, 16, 5, 5)
        h = F.relu(self.fc1(h.flatten(1)))  # (N, 120)
        return self.fc2(h)  # (N, 84)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, (N, 1, 28, 28) -> (N, 10)."""
        return self.fc3(F.relu(self.features(x)))
