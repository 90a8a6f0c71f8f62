"""`sample`'s view of a run split over processes: this rank's block of samples, its shard file, its attrs.

See `sdegen.shards` for the layout. Outside an initialised multi-rank process group (or with split=False)
the part is the whole run, offset 0, and `sample` behaves exactly as in one process.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from sdegen import shards
from sdegen.reverse import ADAPTIVE_METHODS


def not_split_invariant(solver: str, opts: dict) -> str | None:
    """Why a run of `solver` with `opts` depends on how its samples are split into batches, or None.

    pc: the Langevin step size is a batch average. Adaptive solvers: one step size for the batch.
    brownian="interval"/"tree": one torchsde Brownian motion for the whole batch.
    """
    if solver == "pc":
        return "pc's Langevin corrector step size averages norms over the batch"
    if opts.get("adaptive") is True:
        return "adaptive steps are chosen for the batch as a whole"
    if solver == "ode" and opts.get("method") in ADAPTIVE_METHODS:
        return f"the adaptive ODE method {opts['method']!r} chooses one step size for the batch"
    if opts.get("brownian") in ("interval", "tree"):
        return f"brownian={opts['brownian']!r} draws one Brownian motion for the batch (use brownian='grid')"
    return None


@dataclass
class Part:
    """The samples this process computes: shape, labels, init and out of its block, the block's attrs."""

    shape: tuple[int, ...]
    labels: object = None
    init: object = None
    out: object = None
    offset: int = 0
    attrs: dict = field(default_factory=dict)

    @staticmethod
    def completed(out, attrs: dict) -> bool:
        return shards.completed(out, attrs)

    @staticmethod
    def open(out):
        return shards.open_lazy(out)


def local_part(shape, labels, init, out, split: bool | None, solver: str, opts: dict) -> Part:
    """This rank's `Part` of a `shape[0]`-sample run (the whole run when not split).

    Raises:
        ValueError: split=True without an initialised process group, or fewer samples than ranks.
    """
    if isinstance(split, tuple) and len(split) == 2 and all(isinstance(v, int) for v in split):
        group = split  # (rank, world size) given: a job array, or ranks simulated in one process
    elif split in (None, True, False):
        group = shards.process_group() if split is not False else None
    else:
        raise TypeError(f"split must be None, True, False or a (rank, world_size) pair, got {split!r}")
    if group is None:
        if split is True:
            raise ValueError("split=True needs an initialised torch.distributed process group of several ranks")
        return Part(tuple(shape), labels, init, out)
    block = shards.split_range(shape[0], *group)
    reason = not_split_invariant(solver, opts)
    if reason:
        warnings.warn(
            f"solver {solver!r} is not split-invariant: {reason}, so the union of the {block.world_size} shards "
            "is a valid sample but not bit-identical to a single-process run",
            UserWarning,
            stacklevel=4,
        )
    sl = slice(block.start, block.stop)
    return Part(
        (block.size, *shape[1:]),
        None if labels is None else labels[sl],
        None if init is None else init[sl],
        None if out is None else shards.shard_path(out, block.rank, block.world_size),
        block.start,
        block.attrs(),
    )
