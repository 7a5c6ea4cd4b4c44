"""Backbone registry and the MAC convention (thop at batch 1, conv + linear only)."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from earlyexit.backbones import build_backbone, list_backbones
from earlyexit.macs import count_macs, mac_table
from earlyexit.multiexit import MultiExitNet

SMALL = {"alexnet": 0.125}


@pytest.mark.parametrize("name", list_backbones())
def test_thop_macs_equal_flop_counter_half(name):
    bb = build_backbone(name, width=SMALL.get(name, 0.25)).eval()
    with FlopCounterMode(display=False) as counter:
        bb(torch.zeros(1, *bb.input_shape))
    assert mac_table(MultiExitNet(bb)).backbone_macs == counter.get_total_flops() // 2


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_runs_with_exits_and_classes(name):
    bb = build_backbone(name, num_classes=7, width=SMALL.get(name, 0.25))
    net = MultiExitNet(bb).eval()
    out = net(torch.randn(2, *bb.input_shape))
    assert len(out.logits) == len(bb.default_exits) + 1
    assert all(z.shape == (2, 7) for z in out.logits)


def test_torchvision_resnet50_reference():
    torchvision = pytest.importorskip("torchvision")
    macs = count_macs(torchvision.models.resnet50(), (3, 224, 224))
    assert abs(macs - 4.09e9) / 4.09e9 < 0.005


def test_vgg_small_matches_analytic_count():
    """The spec's analytic count for VGGsmall (N=10): 616.97 M MACs; backbone share at exits 0.57% ... 98.5%."""
    table = mac_table(MultiExitNet(build_backbone("vgg_small")))
    assert table.backbone_macs / 1e6 == pytest.approx(616.97, abs=0.01)
    backbone_share = [100 * sum(table.stage_macs[:s + 1]) / table.backbone_macs for s in table.exit_stage[:6]]
    assert backbone_share == pytest.approx([0.57, 25.0, 37.3, 61.8, 74.0, 98.5], abs=0.06)


def test_exit_cost_is_stages_so_far_plus_heads_so_far():
    net = MultiExitNet(build_backbone("resnet18_cifar", width=0.25), exit_after=[0, 4])
    t = mac_table(net)
    assert t.exit_macs[0] == t.stage_macs[0] + t.head_macs[0]
    assert t.exit_macs[1] == sum(t.stage_macs[:5]) + t.head_macs[0] + t.head_macs[1]
    assert t.exit_macs[2] == sum(t.stage_macs) + sum(t.head_macs)
    assert t.exit_macs[2] > t.backbone_macs  # heads are paid for by samples reaching the end


def test_width_scales_macs_roughly_quadratically():
    small = mac_table(MultiExitNet(build_backbone("vgg13", width=0.25))).backbone_macs
    big = mac_table(MultiExitNet(build_backbone("vgg13", width=0.5))).backbone_macs
    assert 3.5 < big / small < 4.5


@pytest.mark.parametrize("bad", [{"name": "resnet1000"}, {"name": "vgg13", "width": 0}, {"name": "vgg13", "num_classes": 1},
                                 {"name": "vgg13", "depth": 3}])
def test_bad_backbone_arguments_fail_clearly(bad):
    with pytest.raises(ValueError, match="unknown backbone|width|num_classes|no option"):
        build_backbone(**bad)


def test_bad_exit_positions_fail_clearly():
    with pytest.raises(ValueError, match="exit_after"):
        MultiExitNet(build_backbone("vgg13", width=0.25), exit_after=[3, 1])


def test_global_average_pooling_of_the_heads_is_the_mean_with_its_gradient():
    """The heads' pooling (a cheap broadcast gradient, avg_pool2d for bf16) computes the spatial mean
    and its exact gradient, in float64 and on a bf16 channels_last map as training feeds it."""
    from earlyexit.heads import GlobalAvgPool
    pool = GlobalAvgPool()
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pool, (x,))
    assert torch.equal(pool(x), x.mean((2, 3)))
    h = torch.randn(8, 16, 32, 32).to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_()
    ref = h.detach().float().requires_grad_()
    g = torch.randn(8, 16)
    pool(h).float().backward(g)
    ref.mean((2, 3)).backward(g)
    assert torch.allclose(pool(h).float(), ref.mean((2, 3)), atol=1e-2)
    assert torch.allclose(h.grad.float(), ref.grad, atol=1e-4, rtol=1e-2)
