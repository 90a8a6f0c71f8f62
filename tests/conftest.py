import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests run on 2-core machines next to other work; more threads only add contention.
    torch.set_num_threads(1)
    yield
