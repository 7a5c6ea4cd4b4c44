"""Differentiable branching: the recursion against its closed form, the cost regulariser, the loss,
the hard-gate exit, and batch-1 timing through the real early exit."""
import math

import pytest
import torch

from earlyexit.backbones import build_backbone
from earlyexit.methods.differentiable_branching import (SoftConditionalLoss, ensemble_accuracy, exit_probabilities,
                                  expected_cost, normalised_exit_costs, soft_conditional)
from earlyexit.evaluate import evaluate_policy
from earlyexit.losses import build_loss
from earlyexit.macs import mac_table
from earlyexit.multiexit import MultiExitNet
from earlyexit.outputs import CachedOutputs
from earlyexit.policies import GateThreshold


def _random(n=7, k=4, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    probs = [torch.softmax(torch.randn(n, c, generator=g), 1) for _ in range(k)]
    gates = [torch.rand(n, generator=g) for _ in range(k - 1)]
    return probs, gates


def test_recursion_equals_closed_form_mixture():
    probs, gates = _random()
    pi = exit_probabilities(gates)
    assert torch.allclose(pi.sum(1), torch.ones(len(pi)))
    closed = sum(pi[:, b:b + 1] * p for b, p in enumerate(probs))
    assert torch.allclose(soft_conditional(probs, gates), closed, atol=1e-6)
    g = torch.stack(gates, 1)
    assert torch.allclose(pi[:, 2], g[:, 2] * (1 - g[:, 0]) * (1 - g[:, 1]))
    assert torch.allclose(pi[:, -1], (1 - g).prod(1))


def test_mixture_of_probabilities_is_a_distribution():
    probs, gates = _random(seed=1)
    mix = soft_conditional(probs, gates)
    assert torch.allclose(mix.sum(1), torch.ones(len(mix)), atol=1e-6)
    assert (mix >= 0).all()


def test_gate_one_selects_that_exit_and_gate_zero_skips_it():
    probs, gates = _random(seed=2)
    first = [torch.ones_like(gates[0])] + gates[1:]
    assert torch.allclose(soft_conditional(probs, first), probs[0])
    closed = [torch.zeros_like(g) for g in gates]
    assert torch.allclose(soft_conditional(probs, closed), probs[-1])


def test_expected_cost_is_mixture_of_costs():
    _, gates = _random(seed=3)
    costs = [0.1, 0.3, 0.6, 1.0]
    pi = exit_probabilities(gates)
    assert torch.allclose(expected_cost(gates, costs), (pi * torch.tensor(costs)).sum(1), atol=1e-6)
    with pytest.raises(ValueError):
        expected_cost(gates, costs[:-1])


def _gated_net():
    torch.manual_seed(0)
    bb = build_backbone("vgg13", num_classes=10, width=0.0625)
    return MultiExitNet(bb, [0, 3, 6], "gated", features="linear", pool=1).eval()


def test_normalised_costs_full_network_costs_one():
    macs = mac_table(_gated_net())
    final = normalised_exit_costs(macs, "final")
    assert final[-1] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(final, final[1:]))
    backbone = normalised_exit_costs(macs, "backbone")
    assert backbone[-1] > 1.0 and backbone == pytest.approx(macs.exit_fractions)
    with pytest.raises(ValueError):
        normalised_exit_costs(macs, "gpu")


def test_loss_is_ce_of_soft_output_plus_lambda_cost():
    net = _gated_net()
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 5])
    out = net(x)
    costs = normalised_exit_costs(mac_table(net))
    plain = build_loss("soft_conditional", net.num_exits, costs=costs, lam=0.0)(out, y)
    gates = [torch.sigmoid(g) for g in out.gates[:-1]]
    mix = soft_conditional([torch.softmax(z, 1) for z in out.logits], gates)
    assert plain.item() == pytest.approx(-torch.log(mix[torch.arange(6), y]).mean().item(), rel=1e-5)
    lam = 0.1
    reg = SoftConditionalLoss(net.num_exits, costs, lam=lam)(out, y)
    assert reg.item() == pytest.approx(plain.item() + lam * expected_cost(gates, costs).mean().item(), rel=1e-5)
    mixed_logits = SoftConditionalLoss(net.num_exits, costs, mixing="logits")(out, y)
    assert mixed_logits.item() != pytest.approx(plain.item())
    with pytest.raises(ValueError):
        SoftConditionalLoss(net.num_exits, costs[:-1])
    with pytest.raises(ValueError):
        SoftConditionalLoss(net.num_exits, costs, mixing="features")


def test_cost_gradient_pushes_gates_open():
    """With lambda > 0 and nothing else, the gradient raises the first gate (exit earlier, cheaper)."""
    gate_logit = torch.zeros(4, requires_grad=True)
    loss = expected_cost([torch.sigmoid(gate_logit), torch.full((4,), 0.5)], [0.1, 0.5, 1.0]).mean()
    loss.backward()
    assert (gate_logit.grad < 0).all()


def test_ensemble_and_hard_gate_on_cached_outputs():
    # three exits, two samples; sample 0: gate 1 open -> exit 0; sample 1: all gates shut -> final
    logits = torch.tensor([[[5.0, 0.0], [0.0, 5.0]], [[0.0, 5.0], [0.0, 5.0]], [[0.0, 5.0], [5.0, 0.0]]])
    gates = torch.tensor([[4.0, -4.0], [-4.0, -4.0], [math.inf, math.inf]])
    out = CachedOutputs(logits, torch.tensor([0, 0]), gates)
    macs = mac_table(MultiExitNet(build_backbone("vgg13", width=0.0625), [0, 1], "gated", features="linear"))
    r = evaluate_policy(out, GateThreshold([0.5, 0.5]), macs)
    assert r.exit_index.tolist() == [0, 2] and r.accuracy == 1.0
    assert sum(r.exit_shares) == pytest.approx(1.0)
    assert ensemble_accuracy(out) == 1.0


def test_batch1_timing_uses_real_early_exit():
    from earlyexit.speed import display, speed_rows
    net = _gated_net().eval()
    macs = mac_table(net)
    images = torch.randn(6, 3, 32, 32)
    rule = GateThreshold([0.5] * (net.num_exits - 1))
    row = speed_rows(net, images, rule, macs, 1, 2, {"model": "gated"})
    real = net.early_exit(images, rule, macs.exit_macs)
    shares = torch.bincount(real.exit_index, minlength=net.num_exits).double() / 6
    assert row["images"] == 6 and len(row["plain ms"]) == len(row["early exit ms"]) == 2
    assert row["exit shares"] == shares.tolist()
    assert row["predicted"] == pytest.approx(macs.backbone_macs / real.macs.double().mean().item())
    shown = display([row])[0]
    assert shown["plain ms"].count("[") == 1 and shown["model"] == "gated"
    assert shown["realised/predicted 95% CI"] == "n/a"                     # 2 repeats: no 95% interval
    row = speed_rows(net, images, rule, macs, 1, 6, {"model": "gated"})
    ratios = sorted(p / e for p, e in zip(row["plain ms"], row["early exit ms"]))
    assert row["realised"] == pytest.approx((ratios[2] + ratios[3]) / 2)   # the median of paired ratios
    assert row["realised 95% CI"] == pytest.approx([ratios[0], ratios[5]])
    low, high = display([row])[0]["realised/predicted 95% CI"].split("-")
    assert float(low) == pytest.approx(ratios[0] / row["predicted"], abs=1e-3)


def test_hard_gate_real_forward_reaches_final_exit_and_matches_offline():
    """Shut gates send every image to the final classifier, which has no gate, in both modes."""
    from earlyexit.data import Split, TensorLoader
    from earlyexit.outputs import collect_outputs
    net = _gated_net()
    with torch.no_grad():
        net.heads[0].gate.bias.fill_(-50.0)
        net.heads[2].gate.bias.fill_(-50.0)
    macs = mac_table(net)
    images = (torch.rand(8, 3, 32, 32) * 255).to(torch.uint8)
    loader = TensorLoader(Split(images, torch.zeros(8, dtype=torch.long)), (0.5,) * 3, (0.25,) * 3, batch_size=8)
    for bias, expected in ((50.0, 1), (-50.0, 3)):
        with torch.no_grad():
            net.heads[1].gate.bias.fill_(bias)
        offline = collect_outputs(net, loader)
        x, _ = next(iter(loader))
        rule = GateThreshold([0.5] * (net.num_exits - 1))
        real = net.early_exit(x, rule, macs.exit_macs)
        assert real.exit_index.tolist() == [expected] * 8
        assert torch.equal(real.exit_index, evaluate_policy(offline, rule, macs).exit_index)
