"""sdegen: score-based generative modelling with stochastic differential equations.

Forward SDEs (`VPSDE`, `SubVPSDE`, `VESDE`, `PowerVESDE`) build their reverse-time SDE as a torchsde
system and their probability-flow ODE as a torchdiffeq system; `sdegen.analytic` gives closed-form
oracles for Gaussian and Gaussian-mixture data.
"""

from sdegen import analytic, schedules
from sdegen.sdes import AbstractSDE, PowerVESDE, SubVPSDE, VESDE, VPSDE

__version__ = "0.1.0"

__all__ = [
    "AbstractSDE",
    "PowerVESDE",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "analytic",
    "schedules",
]
