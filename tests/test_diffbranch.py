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


# ---------------------------------------------------------------- initial gate bias and the collapse watch
from earlyexit.methods.differentiable_branching import (SHUT_BIAS, gate_bias_value, initial_mixture,  # noqa: E402
                                                        mixture_weights, watch_collapse)


@pytest.mark.parametrize("option", ["fair", "shut", -2.0])
def test_a_fresh_network_starts_with_the_mixture_its_gate_bias_sets(option):
    torch.manual_seed(0)
    probe = MultiExitNet(build_backbone("vgg13", num_classes=10, width=0.0625), None, "gated", features="linear", pool=1)
    k = probe.num_exits
    bias = gate_bias_value(option, k)
    net = MultiExitNet(build_backbone("vgg13", num_classes=10, width=0.0625), None, "gated", features="linear",
                       pool=1, gate_bias=bias).eval()
    with torch.no_grad():
        out = net(torch.randn(16, 3, 32, 32))
    cached = CachedOutputs(torch.stack(out.logits), torch.zeros(16, dtype=torch.long),
                           torch.stack([torch.zeros(16) if g is None else g for g in out.gates]))
    pi = mixture_weights(cached)
    assert pi.tolist() == pytest.approx(initial_mixture(bias, k), abs=1e-6)
    assert (torch.stack(out.gates[:-1]) == bias).all()          # every image starts alike
    if option == "fair":
        assert pi[-1].item() == pytest.approx(1 / k, abs=1e-6)    # the final exit's fair share
    if option == "shut":
        assert bias == SHUT_BIAS and pi[-1].item() > 0.6 and pi[0].item() == pytest.approx(0.0474, abs=1e-4)


def test_pytorch_default_gates_start_near_half_and_starve_the_final_exit():
    torch.manual_seed(0)
    assert gate_bias_value("pytorch", 10) is None
    net = MultiExitNet(build_backbone("vgg13", num_classes=10, width=0.0625), None, "gated", features="linear",
                       pool=1).eval()
    with torch.no_grad():
        out = net(torch.randn(64, 3, 32, 32))
    pi = mixture_weights(CachedOutputs(torch.stack(out.logits), torch.zeros(64, dtype=torch.long),
                                       torch.stack([torch.zeros(64) if g is None else g for g in out.gates])))
    assert pi[-1].item() < 0.01 and pi[0].item() > 0.3
    with pytest.raises(ValueError, match="gate bias"):
        gate_bias_value("open", 10)


def _committed_history(epochs=12, k=10):
    """Like the committed cpu run: gate 5 at 0.988 after epoch 1 and 0.9998 from epoch 3, gates 1-4 at 0.002;
    exits 6-10 keep a mixture weight of about 2e-4; every validation input leaves at exit 5."""
    gates = torch.full((epochs, k - 1), 0.5)
    gates[:, :4] = 0.002
    gates[0, 4], gates[1, 4], gates[2:, 4] = 0.988, 0.995, 0.9998
    mixture = torch.full((epochs, k), 2e-4)
    mixture[:, :4] = 0.002
    mixture[:, 4] = 1 - mixture[:, :4].sum(1) - mixture[:, 5:].sum(1)
    shares = [0.0] * 4 + [1.0] + [0.0] * 5
    return gates, mixture, shares


def test_the_watch_flags_a_history_like_the_committed_one():
    gates, mixture, shares = _committed_history()
    found = watch_collapse(gates, mixture, shares, early_epochs=4)
    assert found.collapsed and found.open_gates == {5: 2} and found.dominant == 5
    assert found.starved == [6, 7, 8, 9, 10]
    assert "gate 5 above 0.99 at epoch 2" in found.describe() and "exits 6, 7, 8, 9, 10 starved" in found.describe()
    late = gates.clone()
    late[:4, 4] = 0.5                       # the same gate opening only late in training is no early flag
    assert watch_collapse(late, mixture, [0.5, 0.5] + [0.0] * 8, early_epochs=4).open_gates == {}


def test_the_watch_passes_a_spread_history():
    epochs, k = 6, 10
    gates = torch.linspace(0.1, 0.6, k - 1).expand(epochs, -1)
    mixture = torch.full((epochs, k), 1 / k)
    shares = [0.05, 0.1, 0.2, 0.3, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05]
    found = watch_collapse(gates, mixture, shares, early_epochs=2)
    assert not found.collapsed and found.describe() == "no collapse" and found.starved == []
    everything_final = [0.0] * (k - 1) + [0.97]
    assert watch_collapse(gates, mixture, everything_final, early_epochs=2).dominant == k
