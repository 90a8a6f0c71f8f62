"""Bridge diffusions: forward processes on R^d, the circle, SO(3) and finite sets, reversed by x0-prediction.

Every process implements the protocol of `AbstractProcess` (`sample_forward`, `sample_bridge`,
`sample_equilibrium`, `loss`), as do the Gaussian SDEs of `sdegen.sdes`; `sample_backward` runs the reverse
chain (predict x0, sample the bridge to the next time) and returns a trajectory Dataset;
`x0_prediction_loss` is the training loss (`sdegen train` uses it for configs with a `process` section,
through `sdegen.processes.trainer`). Guide and study results: docs/processes.md.

    from sdegen import processes as P
    proc = P.Joint(P.OrnsteinUhlenbeck(), P.UniformDiscrete(1.0, 10))
"""

from sdegen.processes._base import AbstractProcess
from sdegen.processes.backward import reverse_step, sample_backward, time_grid
from sdegen.processes.circle import WrappedBrownian, WrappedInterpolatedBrownian, wrap
from sdegen.processes.discrete import IndependentDiscrete, MaskedDiscrete, UniformDiscrete
from sdegen.processes.euclidean import BrownianMotion, OrnsteinUhlenbeck
from sdegen.processes.joint import Joint
from sdegen.processes.rotation import RotationBrownian, matrix_to_quaternion, quaternion_to_matrix
from sdegen.processes.training import x0_prediction_loss

__all__ = [
    "AbstractProcess",
    "BrownianMotion",
    "IndependentDiscrete",
    "Joint",
    "MaskedDiscrete",
    "OrnsteinUhlenbeck",
    "RotationBrownian",
    "UniformDiscrete",
    "WrappedBrownian",
    "WrappedInterpolatedBrownian",
    "matrix_to_quaternion",
    "quaternion_to_matrix",
    "reverse_step",
    "sample_backward",
    "time_grid",
    "wrap",
    "x0_prediction_loss",
]
