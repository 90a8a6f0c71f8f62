"""Test helper: a tiny toy training configuration that trains in well under a second per few steps."""

from sdegen.config import load_config

TINY = [
    "net.mlp.hidden=16",
    "net.mlp.depth=1",
    "batch_size=32",
    "data.num_samples=400",
    "data.val_size=64",
    "optim.warmup_steps=3",
    "log_every=2",
    "val_every=4",
    "checkpoint_every=4",
    "device=cpu",
]


def tiny_config(out_dir, *extra):
    """The shipped toy recipe shrunk for tests, writing to out_dir."""
    return load_config("toy", [*TINY, f"out_dir={out_dir}", *extra])
