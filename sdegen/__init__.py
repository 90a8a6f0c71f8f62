"""sdegen: score-based generative modelling with stochastic differential equations.

Forward SDEs (`VPSDE`, `SubVPSDE`, `VESDE`, `PowerVESDE`) build their reverse-time SDE as a torchsde
system and their probability-flow ODE as a torchdiffeq system; `sdegen.sample` runs any solver and returns
the path as an xarray Dataset, `sdegen.log_likelihood` integrates the augmented PF ODE. `__all__` holds the
verbs and nouns a user calls (docs/guide.md, "Public API"); the modules (`sdegen.analytic`, `sdegen.grids`,
`sdegen.processes`, `sdegen.plots`, ...) are imported by name.
"""

from sdegen import analytic as analytic  # modules reachable as sdegen.analytic, sdegen.grids
from sdegen import grids as grids
from sdegen.classifier import load_classifier
from sdegen.config import TrainConfig, load_config
from sdegen.dequantization import BitsPerDimResult, bits_per_dim
from sdegen.guidance import classifier_guidance
from sdegen.inpaint import Known
from sdegen.likelihood import LikelihoodResult, decode, encode, log_likelihood
from sdegen.metrics import fld
from sdegen.model import Model, load_model
from sdegen.samplers import sample, solvers
from sdegen.score import Parametrisation, ScoreModel
from sdegen.sdes import VESDE, VPSDE, AbstractSDE, PowerVESDE, SubVPSDE
from sdegen.training import train
from sdegen.trajectory import open_trajectory, save_trajectory

__version__ = "0.1.0"

__all__ = [
    "AbstractSDE",
    "BitsPerDimResult",
    "Known",
    "LikelihoodResult",
    "Model",
    "Parametrisation",
    "PowerVESDE",
    "ScoreModel",
    "SubVPSDE",
    "TrainConfig",
    "VESDE",
    "VPSDE",
    "bits_per_dim",
    "classifier_guidance",
    "decode",
    "encode",
    "fld",
    "load_classifier",
    "load_config",
    "load_model",
    "log_likelihood",
    "open_trajectory",
    "sample",
    "save_trajectory",
    "solvers",
    "train",
]
