"""sdegen: score-based generative modelling with stochastic differential equations.

Forward SDEs (`VPSDE`, `SubVPSDE`, `VESDE`, `PowerVESDE`) build their reverse-time SDE as a torchsde
system and their probability-flow ODE as a torchdiffeq system; `sdegen.analytic` gives closed-form
oracles for Gaussian and Gaussian-mixture data.
"""

from sdegen import analytic, checkpoint, config, data, losses, metrics, nets, schedules, score, training
from sdegen.checkpoint import Model, export_ema, load_model
from sdegen.config import TrainConfig, load_config
from sdegen.dequantization import BitsPerDimResult, bits_per_dim
from sdegen.likelihood import LikelihoodResult, decode, encode, log_likelihood
from sdegen.metrics import fld
from sdegen.samplers import sample, solvers
from sdegen.score import Parametrisation, ScoreModel
from sdegen.sdes import VESDE, VPSDE, AbstractSDE, PowerVESDE, SubVPSDE
from sdegen.training import train
from sdegen.trajectory import open_trajectory, save_trajectory

__version__ = "0.1.0"

__all__ = [
    "AbstractSDE",
    "BitsPerDimResult",
    "LikelihoodResult",
    "Model",
    "Parametrisation",
    "PowerVESDE",
    "ScoreModel",
    "SubVPSDE",
    "TrainConfig",
    "VESDE",
    "VPSDE",
    "analytic",
    "bits_per_dim",
    "checkpoint",
    "config",
    "data",
    "decode",
    "encode",
    "export_ema",
    "fld",
    "load_config",
    "load_model",
    "log_likelihood",
    "losses",
    "metrics",
    "nets",
    "open_trajectory",
    "sample",
    "save_trajectory",
    "schedules",
    "score",
    "solvers",
    "train",
    "training",
]
