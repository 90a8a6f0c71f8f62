"""The public surface: the names of the API contract in DESIGN.md exist and keep their signatures."""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import sdegen

GUIDE = Path(__file__).parents[1] / "docs" / "guide.md"
CONTRACT = {
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "PowerVESDE",
    "sample",
    "solvers",
    "log_likelihood",
    "bits_per_dim",
    "save_trajectory",
    "open_trajectory",
    "encode",
    "decode",
}
SOLVER_NAMES = {"euler", "milstein", "srk", "heun", "midpoint", "reversible_heun", "pc", "ode", "ancestral", "ddim"}


def documented_api() -> set[str]:
    """The names listed in docs/guide.md, section "Public API"."""
    section = GUIDE.read_text().split("## 10. Public API", 1)[1].split("\n## ", 1)[0]
    bullets = [line for line in section.splitlines() if line.startswith("- ")]
    return {name for line in bullets for name in re.findall(r"`([A-Za-z_]+)`", line)}


def test_all_is_exactly_the_documented_api():
    assert set(sdegen.__all__) == documented_api()
    assert len(sdegen.__all__) == len(set(sdegen.__all__))
    assert CONTRACT <= set(sdegen.__all__)
    assert all(hasattr(sdegen, name) for name in sdegen.__all__)
    assert not any(inspect.ismodule(getattr(sdegen, name)) for name in sdegen.__all__)


def test_modules_reachable_by_name():
    assert sdegen.analytic.GaussianMixture and sdegen.grids.karras
    from sdegen import processes

    assert callable(processes.sample_backward)


def test_sde_methods_and_defaults():
    for cls, params in [
        (sdegen.VPSDE, {"beta_min": 0.1, "beta_max": 20.0}),
        (sdegen.SubVPSDE, {"beta_min": 0.1, "beta_max": 20.0}),
        (sdegen.VESDE, {"sigma_min": 0.01, "sigma_max": 50.0}),
        (sdegen.PowerVESDE, {"sigma": 25.0}),
    ]:
        sde = cls()
        assert sde.T == 1.0 and sde.params() == params
        for method in ("drift", "diffusion", "marginal", "prior_sample", "prior_logp", "reverse", "probability_flow"):
            assert callable(getattr(sde, method))


def test_sample_and_likelihood_signatures():
    sig = inspect.signature(sdegen.sample)
    assert list(sig.parameters)[:8] == ["sde", "score", "shape", "solver", "steps", "seed", "save_every", "t_min"]
    assert sig.parameters["solver"].default == "euler" and sig.parameters["steps"].default == 500
    assert sig.parameters["t_min"].default == 1e-3
    sig = inspect.signature(sdegen.log_likelihood)
    defaults = {k: p.default for k, p in sig.parameters.items()}
    assert defaults["divergence"] == "hutchinson" and defaults["probe"] == "rademacher"
    assert defaults["rtol"] == defaults["atol"] == 1e-5 and defaults["method"] == "dopri5"
    assert defaults["t_min"] == 1e-5 and defaults["probes"] == 1
    assert SOLVER_NAMES <= set(sdegen.solvers())


def test_cli_help_for_every_command(capsys):
    from sdegen.cli import main

    for cmd in ([], ["train"], ["sample"], ["likelihood"], ["plot"], ["demo"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*cmd, "--help"])
        assert exit_info.value.code == 0
        assert "usage: sdegen" in capsys.readouterr().out


def test_cli_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "sdegen.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "sample" in out.stdout, out.stderr
