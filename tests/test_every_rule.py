"""Every rule on one network of your own: fronts chosen on validation only, one operating point per rule, and
each chosen rule exits for real (on the wrapped network) where the offline evaluator says."""
import pytest
import torch

from earlyexit.data import tensor_batches
from earlyexit.evaluate import evaluate_policy
from earlyexit.macs import mac_table
from earlyexit.methods.eenet import EENetConfig
from earlyexit.methods.every_rule import RULES, operating_points, rule_fronts
from earlyexit.outputs import CachedOutputs, collect_outputs
from earlyexit.wrapping import wrap

torchvision = pytest.importorskip("torchvision")


class OwnRun:
    """A wrapped network with its validation and test outputs: what the fitting functions read."""

    def __init__(self, net, splits):
        self.net, self.macs = net, mac_table(net)
        self.images = {name: x for name, (x, _) in splits.items()}
        self.cached = {name: collect_outputs(net, tensor_batches(x, y, 32)) for name, (x, y) in splits.items()}

    def outputs(self, split, features=False):
        return self.cached[split]


@pytest.fixture(scope="module")
def own_run():
    torch.manual_seed(0)
    net = wrap(torchvision.models.resnet18(num_classes=4), ["layer1", "layer2", "layer3"]).double().eval()
    for head in net.heads:          # heads that disagree with each other, so that rows leave at every exit
        head.fc.weight.data.normal_(0, 0.3)
    g = torch.Generator().manual_seed(1)
    splits = {}
    for name, n in (("val", 96), ("test", 64)):
        x = torch.randn(n, 3, 32, 32, dtype=torch.float64, generator=g) * torch.rand(n, 1, 1, 1, dtype=torch.float64,
                                                                                    generator=g) * 3
        splits[name] = (x, torch.randint(0, 4, (n,), generator=g))
    return OwnRun(net, splits)


def test_every_rule_on_a_wrapped_network_exits_for_real_where_the_offline_evaluator_says(own_run, fresh_artifacts):
    found = rule_fronts(own_run, "ResNet-18", vectors=100, grid=11, eenet_budgets=2,
                        eenet_config=EENetConfig(epochs=20, patience=20), scheduler_seeds=(0,))
    assert list(found) == list(RULES) and all(f.network == "ResNet-18" for f in found.values())
    points = operating_points(found, within=0.02)
    assert [p["rule"] for p in points] == list(RULES)
    test = own_run.outputs("test")
    for p in points:
        front = found[p["rule"]]
        assert p["val accuracy"] >= float(front.val_accuracy.max()) - 0.02 - 1e-12
        assert p["oracle point accuracy"] >= p["test accuracy"] - 1e-12     # nothing beats the oracle
        offline = evaluate_policy(test, p["policy"], own_run.macs)
        real = own_run.net.early_exit(own_run.images["test"], p["policy"])
        assert torch.equal(real.exit_index, offline.exit_index), p["rule"]
        assert torch.equal(real.prediction, offline.prediction), p["rule"]
        assert offline.accuracy == pytest.approx(p["test accuracy"]) and offline.mean_fraction == pytest.approx(p["test cost"])


def test_the_choice_reads_validation_only(own_run):
    """Poisoned test labels and logits change the test outcomes, never the chosen points."""
    rules = ("max-softmax", "patience (PABEE)", "class exclusion")
    clean = operating_points(rule_fronts(own_run, rules=rules, vectors=100, grid=11))
    test = own_run.cached["test"]
    poisoned = CachedOutputs(-test.logits.flip(2), (test.labels + 1) % 4)
    own_run.cached["test"] = poisoned
    try:
        dirty = operating_points(rule_fronts(own_run, rules=rules, vectors=100, grid=11))
    finally:
        own_run.cached["test"] = test
    for a, b in zip(clean, dirty):
        assert (a["val cost"], a["val accuracy"], repr(a["policy"])) == (b["val cost"], b["val accuracy"], repr(b["policy"]))
    assert [a["test accuracy"] for a in clean] != [b["test accuracy"] for b in dirty]


def test_an_unknown_rule_fails_with_the_choices(own_run):
    with pytest.raises(ValueError, match="unknown rule.*choose from max-softmax"):
        rule_fronts(own_run, rules=("max-softmax", "oracle"))
