"""Guidance: classifier guidance and classifier-free guidance against the exact labelled Gaussian mixture,
the noise-conditional classifier (SDE invariance, training, files) and clear errors for bad input."""

import math

import numpy as np
import pytest
import torch
from _moments import moment_failures

import sdegen
from sdegen import analytic
from sdegen.classifier import NoisyClassifier, load_classifier
from sdegen.config import load_config
from sdegen.guidance import classifier_free_guidance, classifier_guidance
from sdegen.nets.noisy_classifier import NoisyClassifierNet
from sdegen.training import train

N = 4000
SDE = sdegen.VPSDE()
# Two labelled classes (component k = class k) that overlap at moderate noise, so the guidance term matters.
MIX = analytic.GaussianMixture([0.3, 0.7], [[-2.0, 1.0], [2.0, 0.0]], [0.5, 0.8])


def _final(score, solver="dpmpp_2m", steps=60):
    ds = sdegen.sample(SDE, score, (N, 2), solver=solver, steps=steps, seed=3, denoise=True)
    return ds, ds["x"].isel(time=-1).values


def _class0_failures(x):
    return moment_failures(x, MIX.means[0].numpy(), MIX.stds[0].numpy())


@pytest.mark.parametrize("solver", ["dpmpp_2m", "ancestral"])
def test_classifier_guidance_with_the_exact_classifier_at_w1_is_the_class_conditional_law(solver):
    guided = classifier_guidance(MIX.score_fn(SDE), MIX.class_logits_fn(SDE), 0, 1.0)
    ds, x = _final(guided, solver, 60 if solver == "dpmpp_2m" else 300)
    assert _class0_failures(x) == []
    # NFE counts the guided score's calls; the classifier ran forward + backward once per call.
    assert guided.classifier_evals == ds.attrs["nfe"] > 0


def test_classifier_guidance_negative_controls_fail_the_same_check():
    for w in (0.5, 2.0):  # too weak: mass of class 1 leaks in; too strong: sharpened (p·p(y|x)^2)
        _, x = _final(classifier_guidance(MIX.score_fn(SDE), MIX.class_logits_fn(SDE), 0, w))
        assert _class0_failures(x), w
    _, x = _final(MIX.score_fn(SDE))  # unguided
    assert _class0_failures(x)


def test_classifier_free_guidance_at_w0_is_the_class_conditional_law_and_w1_is_not():
    cond, uncond = MIX.component(0).score_fn(SDE), MIX.score_fn(SDE)
    _, x0 = _final(classifier_free_guidance(cond, uncond, 0.0))
    assert _class0_failures(x0) == []
    _, x1 = _final(classifier_free_guidance(cond, uncond, 1.0))
    assert _class0_failures(x1)
    # Theory: (1 + w)·s(x|y) − w·s(x) = s(x) + (1 + w)·∇ log p(y|x), so CFG at w equals classifier guidance at
    # 1 + w with the exact classifier, pointwise (the same seed gives the same samples).
    _, x2 = _final(classifier_guidance(uncond, MIX.class_logits_fn(SDE), 0, 2.0))
    np.testing.assert_allclose(x1, x2, atol=2e-4)


def test_guidance_weight_zero_costs_no_classifier_evaluation():
    guided = classifier_guidance(MIX.score_fn(SDE), MIX.class_logits_fn(SDE), 1, 0.0)
    ds, _ = _final(guided, steps=10)
    assert guided.classifier_evals == 0 and ds.attrs["nfe"] == 11


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_bad_guidance_weights_are_refused(weight):
    with pytest.raises(ValueError, match="finite number >= 0"):
        classifier_guidance(MIX.score_fn(SDE), MIX.class_logits_fn(SDE), 0, weight)
    with pytest.raises(ValueError, match="finite number >= 0"):
        classifier_free_guidance(MIX.score_fn(SDE), MIX.score_fn(SDE), weight)


def test_bad_labels_and_mismatched_classifiers_are_named():
    score, clf = MIX.score_fn(SDE), MIX.class_logits_fn(SDE)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        classifier_guidance(score, clf, 2, 1.0)
    with pytest.raises(ValueError, match="integer"):
        classifier_guidance(score, clf, torch.tensor([0.5, 1.0]), 1.0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        classifier_guidance(score, clf, torch.tensor([0, 1]), 1.0)(torch.zeros(3, 2), torch.full((3,), 0.5))
    image_clf = NoisyClassifier(
        NoisyClassifierNet(1, 10, (8,)), SDE, sigma_data=0.5, data_shape=(1, 8, 8), num_classes=10
    )
    with pytest.raises(ValueError, match=r"trained on data of shape \(1, 8, 8\), got \(2,\)"):
        sdegen.sample(SDE, classifier_guidance(score, image_clf, 3, 1.0), (4, 2), solver="ddim", steps=2, seed=0)


def test_noisy_classifier_is_the_same_function_of_x0_and_noise_ratio_under_every_sde():
    torch.manual_seed(0)
    net = NoisyClassifierNet(1, 10, (8, 16))
    ve = sdegen.VESDE(sigma_min=0.01, sigma_max=50.0)
    vp_clf = NoisyClassifier(net, SDE, sigma_data=0.34, data_shape=(1, 8, 8), num_classes=10)
    ve_clf = NoisyClassifier(net, ve, sigma_data=0.34, data_shape=(1, 8, 8), num_classes=10)
    t_vp = torch.tensor([0.1, 0.4, 0.8], dtype=torch.float64)
    alpha, sigma = SDE.alpha_sigma(t_vp)
    ratio = sigma / alpha  # VE has alpha = 1 and sigma(t) = σmin·(σmax/σmin)^t: the same σ̃ at t_ve
    t_ve = torch.log(ratio / 0.01) / math.log(50.0 / 0.01)
    x_vp = torch.randn(3, 1, 8, 8)
    a = vp_clf(x_vp, t_vp.float())
    b = ve_clf(x_vp / alpha.float()[:, None, None, None], t_ve.float())
    torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


def test_classifier_trains_through_sdegen_train_and_loads(tmp_path):
    cfg = load_config(
        "mnist_classifier",
        ["data.name=digits8", "data.val_size=64", "classifier.channels=16,32", "classifier.embed_dim=16",
         "batch_size=64", "steps=300", "optim.lr=5e-3", "optim.warmup_steps=5", "log_every=50", "val_every=300",
         "ema_decay=0.9", "checkpoint_every=150", "device=cpu", f"out_dir={tmp_path}"],
    )  # fmt: skip
    result = train(cfg, resume=False, progress=False)
    assert result.val_loss < math.log(10) - 0.1  # held-out cross entropy (nats), averaged over t, below chance
    clf = load_classifier(tmp_path / "model.pt")
    # At low noise it reads the digits: accuracy on the (8x8) digits far above chance (0.1).
    from sdegen.data import get_dataset

    ds = get_dataset("digits8", verbose=False)
    x, y = ds.data[:500], ds.labels[:500]
    assert (clf(x, 0.01).argmax(1) == y).float().mean() > 0.5
    assert clf.data_shape == (1, 8, 8) and clf.num_classes == 10 and len(clf.sha256) == 64
    logits = clf(torch.rand(5, 1, 8, 8), 0.3)
    assert logits.shape == (5, 10) and torch.isfinite(logits).all()
    with pytest.raises(sdegen.checkpoint.CheckpointError, match="noise-conditional classifier"):
        sdegen.load_model(tmp_path / "model.pt")
    with pytest.raises(sdegen.checkpoint.CheckpointError, match="not a noise-conditional classifier"):
        load_classifier("toy")


@pytest.mark.parametrize(
    ("override", "message"),
    [("data.conditional=false", "needs labels"), ("loss.label_dropout=0.1", "label_dropout = 0")],
)
def test_classifier_config_errors(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("mnist_classifier", [override])


def test_shipped_classifier_guides_the_shipped_model_on_every_call():
    model = sdegen.load_model("mnist")
    clf = load_classifier("mnist-classifier")
    assert "mnist-classifier" not in sdegen.model.shipped_models()
    assert "mnist-classifier" in sdegen.model.shipped_classifiers()
    guided = classifier_guidance(model.score_fn("none"), clf, torch.tensor([3, 7]), 2.0)
    ds = sdegen.sample(model.sde, guided, (2, 1, 28, 28), solver="dpmpp_2m", steps=4, seed=0, labels=[3, 7])
    assert guided.classifier_evals == ds.attrs["nfe"] == 4
