"""Networks: shapes (unconditional and class-conditional), parameter counts, the calling convention."""

import pytest
import torch

from sdegen.nets import MLP, NETS, TutorialUNet, UNet, build_net, num_parameters

SMALL_UNET = dict(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,), num_heads=2)


def _check(net, shape, num_classes=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    t = torch.rand(shape[0], generator=g)
    assert net(x, t).shape == x.shape
    if num_classes:
        y = torch.tensor([0, num_classes - 1, num_classes][: shape[0]])  # last is the null label ∅
        out = net(x, t, y)
        assert out.shape == x.shape
        return out
    return None


def test_tutorial_unet_matches_the_tutorial_size_and_shapes():
    net = TutorialUNet()
    assert num_parameters(net) == 1_115_297  # the score-SDE tutorial's ScoreNet, 1.1 M parameters
    _check(net, (3, 1, 28, 28))
    _check(TutorialUNet(num_classes=10), (3, 1, 28, 28), num_classes=10)
    _check(TutorialUNet(in_channels=3, channels=(8, 16, 32, 32)), (2, 3, 32, 32))
    with pytest.raises(ValueError, match="20×20"):
        net(torch.zeros(1, 1, 8, 8), torch.zeros(1))


def test_unet_shapes_and_attention_placement():
    _check(UNet(image_size=8, **SMALL_UNET), (3, 1, 8, 8))
    _check(UNet(image_size=8, num_classes=10, **SMALL_UNET), (3, 1, 8, 8), num_classes=10)
    _check(
        UNet(
            in_channels=2,
            image_size=28,
            model_channels=8,
            channel_mult=(1, 2, 2),
            num_res_blocks=1,
            attention_resolutions=(7, 14),
            num_heads=1,
        ),
        (2, 2, 28, 28),
    )
    with pytest.raises(ValueError, match="attention_resolutions"):
        UNet(image_size=28, attention_resolutions=(5,))
    with pytest.raises(ValueError, match="divisible"):
        UNet(image_size=8, **SMALL_UNET)(torch.zeros(1, 1, 9, 9), torch.zeros(1))


def test_extra_input_channels_are_read_but_not_predicted():
    g = torch.Generator().manual_seed(1)
    t = torch.rand(2, generator=g)
    tutorial, unet = TutorialUNet(extra_in_channels=4), UNet(image_size=8, extra_in_channels=4, **SMALL_UNET)
    assert tutorial.conv[0].in_channels == 5 and unet.stem.in_channels == 5
    for net, size in ((tutorial, 28), (unet, 8)):
        assert net(torch.randn(2, 5, size, size, generator=g), t).shape == (2, 1, size, size)


def test_mlp_shapes():
    _check(MLP(), (5, 2))
    _check(MLP(data_shape=(3, 4), hidden=32, depth=2, num_classes=2), (3, 3, 4), num_classes=2)
    with pytest.raises(ValueError, match="data shape"):
        MLP()(torch.zeros(2, 3), torch.zeros(2))


@pytest.mark.parametrize(
    ("net", "shape"),
    [
        (UNet(image_size=8, num_classes=3, **SMALL_UNET), (3, 1, 8, 8)),
        (MLP(hidden=16, depth=2, num_classes=3), (3, 2)),
        (TutorialUNet(channels=(8, 16, 32, 32), num_classes=3), (3, 1, 20, 20)),
    ],
    ids=["unet", "mlp", "tutorial_unet"],
)
def test_conditional_nets_use_every_parameter_and_the_label(net, shape):
    # DDP needs every parameter in the graph; CFG needs the label (incl. ∅) to change the output.
    x, t = torch.randn(shape), torch.rand(shape[0])
    with torch.no_grad():  # zero-initialised output layers: give them weights so the label shows
        for p in net.parameters():
            if not p.abs().sum():
                p.normal_(0, 0.1)
    net.eval()  # no dropout: outputs must depend on the inputs only
    out = net(x, t, torch.tensor([0, 1, 3]))
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    other = net(x, t, torch.tensor([1, 2, 3]))
    assert not torch.allclose(out[:2], other[:2]) and torch.allclose(out[2], other[2])


def test_zero_initialised_outputs_and_input_checks():
    assert UNet(image_size=8, **SMALL_UNET)(torch.randn(2, 1, 8, 8), torch.rand(2)).abs().max() == 0
    assert MLP()(torch.randn(2, 2), torch.rand(2)).abs().max() == 0
    net = MLP()
    with pytest.raises(ValueError, match="t must have shape"):
        net(torch.zeros(2, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="without num_classes"):
        net(torch.zeros(2, 2), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="long tensor"):
        MLP(num_classes=2)(torch.zeros(2, 2), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="unknown network"):
        build_net("resnet")
    assert set(NETS) == {"tutorial_unet", "unet", "mlp"}
