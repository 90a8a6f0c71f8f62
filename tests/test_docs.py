"""The notebooks in docs/ run top to bottom (they carry their own assertions)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("name", sorted(p.name for p in DOCS.glob("*.ipynb")))
def test_notebook_executes(name, tmp_path):
    nb = nbformat.read(DOCS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
