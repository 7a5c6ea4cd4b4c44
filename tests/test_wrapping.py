"""wrap: a torchvision-style model cut into stages computes the original function exactly, fails on a bad
cut with the valid names, is priced by the same MAC table as the registry's backbones, and runs every
rule through the real early-exit engine with the offline evaluator's decisions."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from earlyexit.data import tensor_batches
from earlyexit.evaluate import evaluate_policy
from earlyexit.inference import inference_form
from earlyexit.macs import mac_table
from earlyexit.methods.class_exclusion import ClassExclusion
from earlyexit.outputs import collect_outputs
from earlyexit.policies import Entropy, MaxProbability, NeverExit, Patience
from earlyexit.wrapping import cut_points, wrap

torchvision = pytest.importorskip("torchvision")

# The smallest member of every torchvision classification family, at the smallest input it accepts here.
# ViT (its encoder keeps a token sequence, which no exit head reads) is left out; Swin's stages give
# channels-last maps, which the exit heads would pool over the wrong axes: its equality is still checked.
FAMILIES = {"alexnet": 64, "convnext_tiny": 32, "densenet121": 32, "efficientnet_b0": 32, "efficientnet_v2_s": 32,
            "googlenet": 32, "inception_v3": 75, "maxvit_t": 224, "mnasnet0_5": 32, "mobilenet_v2": 32,
            "mobilenet_v3_small": 32, "regnet_y_400mf": 32, "resnet18": 32, "resnext50_32x4d": 32,
            "wide_resnet50_2": 32, "shufflenet_v2_x0_5": 32, "squeezenet1_0": 32, "swin_t": 32, "vgg11": 32}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    options = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    return torchvision.models.get_model(name, num_classes=10, **options).eval()


@pytest.mark.parametrize("name", FAMILIES)
def test_the_final_exit_is_the_original_model_exactly(name):
    model, size = _model(name), FAMILIES[name]
    cuts = cut_points(model, depth=1)
    picks = sorted({cuts[len(cuts) // 3], cuts[2 * len(cuts) // 3]}, key=cuts.index)
    net = wrap(model, picks, input_shape=(3, size, size)).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = net(x)
        assert torch.equal(out.logits[-1], model(x))
    assert len(out.logits) == len(picks) + 1 and all(z.shape == (2, 10) for z in out.logits)
    assert sum(p.numel() for p in net.backbone.parameters()) == sum(p.numel() for p in model.parameters())


def test_a_bad_name_or_order_fails_with_the_valid_cuts():
    model = _model("resnet18")
    with pytest.raises(ValueError, match=r"no submodule 'layer9'; valid exits: conv1, .*layer1, .*layer3"):
        wrap(model, ["layer9"])
    with pytest.raises(ValueError, match=r"forward order .* layer1, layer2 \(valid exits in order"):
        wrap(model, ["layer2", "layer1"])
    with pytest.raises(ValueError, match=r"cannot cut ResNet after 'layer1.0.conv1' \(maxpool also reach"):
        wrap(model, ["layer1.0.conv1"])                 # inside a residual block: its input reaches past it
    with pytest.raises(ValueError, match="'fc' ends the model"):
        wrap(model, ["layer2", "fc"])
    with pytest.raises(ValueError, match="square"):
        wrap(model, ["layer2"], input_shape=(3, 32, 48))
    assert cut_points(model, depth=1) == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                          "layer4", "avgpool"]


def test_the_wrapped_mac_table_agrees_with_torchs_flop_counter():
    model = _model("mobilenet_v3_small")
    net = wrap(model, ["features.3", "features.8"], input_shape=(3, 32, 32)).eval()
    table = mac_table(net)
    x = torch.zeros(1, 3, 32, 32)
    with FlopCounterMode(display=False) as plain:
        model(x)
    with FlopCounterMode(display=False) as every_exit:
        net(x)
    assert table.backbone_macs == plain.get_total_flops() // 2
    assert table.exit_macs[-1] == every_exit.get_total_flops() // 2     # all stages, all heads, the classifier
    assert table.exit_macs[0] < table.exit_macs[1] < table.backbone_macs


def test_every_rule_exits_for_real_where_the_offline_evaluator_says():
    torch.manual_seed(0)
    net = wrap(_model("resnet18"), ["layer1", "layer2", "layer3"]).double().eval()
    for head in net.heads:        # spread the exits' logits so that rows leave at every exit
        head.fc.weight.data.normal_(0, 0.5)
    table = mac_table(net)
    x = torch.randn(32, 3, 32, 32, dtype=torch.float64) * 3 * torch.rand(32, 1, 1, 1, dtype=torch.float64)
    outputs = collect_outputs(net, tensor_batches(x, torch.zeros(32, dtype=torch.long), 16))
    confidence = torch.softmax(outputs.logits, 2).max(2).values
    rules = [MaxProbability([float(torch.quantile(confidence[k], 0.7)) for k in range(3)]), Entropy([0.9] * 3),
             Patience(2), ClassExclusion([0.5] * 3), NeverExit()]
    for form in (net, inference_form(net)):
        for rule in rules:
            offline = evaluate_policy(outputs, rule, table)
            real = form.early_exit(x.contiguous(memory_format=form.input_format), rule)
            assert torch.equal(real.exit_index, offline.exit_index), rule
            assert torch.equal(real.prediction, offline.prediction), rule
            assert real.macs.mean().item() == pytest.approx(offline.mean_macs)
    assert len(set(evaluate_policy(outputs, rules[0], table).exit_index.tolist())) >= 3


def test_the_package_offers_wrap():
    import earlyexit
    assert earlyexit.wrap is wrap


def test_a_torchvision_model_trains_and_caches_like_any_backbone(fresh_artifacts):
    from earlyexit.data import DataSpec, load_dataset
    from earlyexit.train import LossSpec, ModelSpec, RunSpec, TrainConfig, train_cached
    spec = RunSpec("tv", ModelSpec("torchvision", 0.5, backbone_options={"model": "mobilenet_v3_small",
                                                                       "cut_after": ["features.3", "features.8"]}),
                   DataSpec("synthetic10", val_size=100, train_size=256, test_size=100),
                   LossSpec("weighted_ce", {"weights": "uniform"}), TrainConfig(epochs=1, batch_size=64, lr=0.05))
    data = load_dataset(spec.data)
    run = train_cached(spec, data, progress=False)
    assert run.net.num_exits == 3 and len(run.history[-1]["val_acc"]) == 3
    again = train_cached(spec, data, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(run.net.state_dict().values(), again.net.state_dict().values()))
    with pytest.raises(ValueError, match="no width option"):
        train_cached(RunSpec("tv", ModelSpec("torchvision", 0.5, backbone_options={"model": "resnet18",
                                                                                  "cut_after": ["layer2"]}),
                             spec.data, spec.loss, spec.train), data, progress=False)
