"""Networks for score models, all called as net(x, t, y=None) → tensor shaped like x.

x: (batch, *data_shape); t: (batch,) the noise feature chosen by the parametrisation (`sdegen.score`);
y: (batch,) long class labels, the value `num_classes` being the null label ∅, or None (= ∅).
The output is the raw network output F; the parametrisation turns it into a score, ε, x0 or v.

`NETS` maps the config names to the classes; `build_net` creates one by name. `LeNet5` (the classifier of
the Frechet LeNet Distance, `sdegen.metrics`) is no score network and not in `NETS`.
"""

from __future__ import annotations

from torch import nn

from sdegen.nets.lenet import LeNet5
from sdegen.nets.mlp import MLP
from sdegen.nets.tutorial_unet import TutorialUNet
from sdegen.nets.unet import UNet

NETS: dict[str, type[nn.Module]] = {"tutorial_unet": TutorialUNet, "unet": UNet, "mlp": MLP}


def build_net(name: str, **kwargs) -> nn.Module:
    """Create the network `name` (a key of `NETS`) with keyword arguments for its constructor."""
    if name not in NETS:
        raise ValueError(f"unknown network {name!r}; known: {sorted(NETS)}")
    return NETS[name](**kwargs)


def num_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


__all__ = ["MLP", "NETS", "LeNet5", "TutorialUNet", "UNet", "build_net", "num_parameters"]
