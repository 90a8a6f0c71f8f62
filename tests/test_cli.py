"""The command line end to end on the shipped toy and MNIST models: sample → file → plot, likelihood, errors."""

from pathlib import Path

import numpy as np
import pytest

import sdegen
from sdegen._io import EXIT_INPUT
from sdegen.cli import main
from sdegen.dequantization import default_t_min
from sdegen.model import load_model

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def test_sample_then_plot(tmp_path, capsys):
    out = tmp_path / "toy.nc"
    assert (
        main(
            [
                "sample",
                "toy",
                "--solver",
                "euler",
                "--steps",
                "20",
                "--num-samples",
                "64",
                "--seed",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    ds = sdegen.open_trajectory(out)
    assert ds.attrs["solver"] == "euler" and ds.attrs["nfe"] == 20 and ds.attrs["seed"] == 3
    assert ds.sizes["sample"] == 64 and ds.x.dims == ("time", "sample", "dim")
    # the same seed gives the same samples
    again = tmp_path / "again.nc"
    main(
        [
            "sample",
            "toy",
            "--solver",
            "euler",
            "--steps",
            "20",
            "--num-samples",
            "64",
            "--seed",
            "3",
            "--out",
            str(again),
        ]
    )
    np.testing.assert_array_equal(ds.x.values, sdegen.open_trajectory(again).x.values)
    for kind, suffix in [("grid", ".png"), ("paths", ".png"), ("marginals", ".png"), ("animation", ".gif")]:
        fig = tmp_path / f"{kind}{suffix}"
        assert main(["plot", str(out), "--kind", kind, "--out", str(fig)]) == 0
        assert fig.stat().st_size > 1000


def test_conditional_sample_with_guidance(tmp_path):
    out = tmp_path / "digits.nc"
    assert (
        main(
            [
                "sample",
                "mnist",
                "--solver",
                "dpmpp_2m",
                "--steps",
                "5",
                "--num-samples",
                "3",
                "--label",
                "7",
                "--guidance",
                "1.5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    ds = sdegen.open_trajectory(out)
    assert list(ds.label.values) == [7, 7, 7] and ds.attrs["guidance"] == 1.5
    assert ds.x.dims == ("time", "sample", "channel", "height", "width")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "no-such-model", "--out", "x.nc"], "no-such-model"),
        (["plot", "missing.nc", "--out", "x.png"], "missing.nc"),
    ],
)
def test_library_errors_are_reported(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == EXIT_INPUT  # a missing input, in every command
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "toy", "--label", "3", "--out", "x.nc"], "unconditional"),
        (["sample", "mnist", "--label", "12", "--out", "x.nc"], "--label 12: label 12 is out of range"),
        (["sample", "toy", "--guidance", "2", "--out", "x.nc"], "unconditional"),
    ],
)
def test_bad_label_arguments(argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=message):
        main(argv)
    assert not (tmp_path / "x.nc").exists() and not (tmp_path / "x.nc.partial").exists()  # refused before work


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "toy", "--steps", "0", "--out", "x.nc"],
        ["sample", "toy", "--solver", "nope", "--out", "x.nc"],
        ["likelihood", "toy", "--data", ".", "--t-min", "0.01", "--t-min-bins", "0.1", "--out", "x.nc"],
    ],
)
def test_bad_options_rejected_by_parser(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="needs the MNIST test split in ../shared/data/mnist")
def test_likelihood_command(tmp_path, capsys):
    out = tmp_path / "bpd.nc"
    assert (
        main(
            [
                "likelihood",
                "mnist-likelihood",
                "--data",
                str(SHARED_MNIST),
                "--num",
                "2",
                "--batch-size",
                "2",
                "--rtol",
                "1e-2",
                "--atol",
                "1e-2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    import xarray as xr

    ds = xr.open_dataset(out)
    assert ds.bpd.shape == (2,) and np.all(np.isfinite(ds.bpd.values)) and 0 < float(ds.bpd.mean()) < 12
    assert "bits/dim" in capsys.readouterr().out
    assert ds.attrs["t_min"] == default_t_min(load_model("mnist-likelihood").sde, (0.0, 1.0))
    assert ds.attrs["clip_x0"] == 1  # the denoiser projected onto the data range by default


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="needs the MNIST test split in ../shared/data/mnist")
def test_likelihood_command_t_min_in_bins(tmp_path):
    out = tmp_path / "bpd.nc"
    assert (
        main(
            [
                "likelihood",
                "mnist-likelihood",
                "--data",
                str(SHARED_MNIST),
                "--num",
                "1",
                "--t-min-bins",
                "0.125",
                "--no-clip-x0",
                "--rtol",
                "1e-2",
                "--atol",
                "1e-2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    import xarray as xr

    sde = load_model("mnist-likelihood").sde
    t = xr.open_dataset(out).attrs["t_min"]
    assert xr.open_dataset(out).attrs["clip_x0"] == 0
    assert t == default_t_min(sde, (0.0, 1.0), bins=0.125) < default_t_min(sde, (0.0, 1.0))


@pytest.mark.parametrize(
    ("label", "expected"),
    [(None, None), ("balanced", [0, 1, 2, 3, 4, 5]), ("none", [10] * 6), ("3,1", [3, 1, 3, 1, 3, 1])],
)
def test_sample_labels_default_to_draws_from_the_class_frequencies(label, expected, tmp_path):
    out = tmp_path / "d.nc"
    argv = [
        "sample",
        "mnist",
        "--solver",
        "ddim",
        "--steps",
        "1",
        "--num-samples",
        "6",
        "--seed",
        "4",
        "--out",
        str(out),
    ]
    assert main(argv + ([] if label is None else ["--label", label])) == 0
    ds = sdegen.open_trajectory(out)
    assert ds.attrs["label_spec"] == (label or "drawn")
    if expected is None:  # drawn per sample from (seed, i): the same labels as the API's
        expected = load_model("mnist").labels("drawn", 6, seed=4).tolist()
    assert ds.label.values.tolist() == expected


def test_inpaint_completes_test_digits_and_stores_the_condition(tmp_path, capsys):
    out = tmp_path / "top.nc"
    argv = ["sample", "mnist", "--inpaint", "top", "--from-test", "3:6", "--data", str(SHARED_MNIST), "--solver",
            "ancestral", "--steps", "4", "--resample", "2", "--denoise", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    ds = sdegen.open_trajectory(out)
    test = sdegen.data.load_mnist(SHARED_MNIST, split="test")
    assert list(ds["test_index"].values) == [3, 4, 5] and list(ds["test_label"].values) == test.labels[3:6].tolist()
    assert list(ds["label"].values) == [10, 10, 10]  # the null label: the known half alone says which digit
    assert ds["mask"].values[:, 0, :14].all() and not ds["mask"].values[:, 0, 14:].any()
    x, known = ds["x"].isel(time=-1).values, test.data[3:6].numpy()
    np.testing.assert_allclose(x[:, 0, :14], known[:, 0, :14], atol=1e-6)  # denoised known pixels are exact
    assert ds.attrs["nfe"] == 2 * 4 + 1 and ds.attrs["resample"] == 2 and ds.attrs["impute"] == "replace"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--inpaint", "middle", "--from-test", "0:2"], "unknown mask 'middle'"),
        (["--inpaint", "top"], "needs --from-test"),
        (["--inpaint", "top", "--from-test", "0:2", "--num-samples", "3"], "differs from the 2 digits"),
        (["--inpaint", "top", "--from-test", "2:1"], "START < STOP"),
        (["--inpaint", "top", "--from-test", "0:2", "--solver", "dpmpp_2m", "--resample", "2"], "losing its state"),
        (["--resample", "2"], "go with --inpaint"),
        (["--classifier", "mnist-classifier", "--guidance", "1"], "use one of them"),
        (["--classifier", "mnist-classifier", "--classifier-weight", "nan"], "finite"),
    ],
)
def test_bad_inpaint_and_classifier_arguments(extra, message, tmp_path, capsys):
    argv = ["sample", "mnist", "--data", str(SHARED_MNIST), "--steps", "2", "--out", str(tmp_path / "x.nc"), *extra]
    try:
        code = main(argv)
    except SystemExit as err:  # argparse's own errors
        code = err.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_inpaint_mask_files_are_checked(tmp_path, capsys):
    for name, array, message in [("shape.npy", np.ones((3, 3)), "mask shape (3, 3)"),
                                 ("values.npy", np.full((28, 28), 2), "only 0 and 1")]:  # fmt: skip
        np.save(tmp_path / name, array)
        argv = ["sample", "mnist", "--inpaint", str(tmp_path / name), "--from-test", "0:2", "--data", str(SHARED_MNIST),
                "--out", str(tmp_path / "x.nc")]  # fmt: skip
        assert main(argv) == 2 and message in capsys.readouterr().err


def test_classifier_guidance_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "cg.nc"
    argv = ["sample", "mnist", "--classifier", "mnist-classifier", "--classifier-weight", "2", "--label", "3",
            "--solver", "dpmpp_2m", "--steps", "3", "--num-samples", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "3 classifier gradients" in capsys.readouterr().out
    ds = sdegen.open_trajectory(out)
    assert (
        list(ds["label"].values) == [3, 3]
        and ds.attrs["classifier_weight"] == 2.0
        and len(ds.attrs["classifier"]) == 64
    )
