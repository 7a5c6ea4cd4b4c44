"""The real early-exit engine and the inference form: folding, compaction, the batch-of-one path,
MAC costs computed once. Speed is measured by ``make bench``, never asserted here."""
import subprocess
import sys

import pytest
import torch

from earlyexit import macs as macs_module
from earlyexit import multiexit
from earlyexit.backbones import build_backbone
from earlyexit.methods.class_exclusion import ClassExclusion, SingleConfident
from earlyexit.data import tensor_batches
from earlyexit.evaluate import evaluate_policy
from earlyexit.inference import count_batchnorm, fold_batchnorm, inference_form, prediction_agreement
from earlyexit.macs import mac_table
from earlyexit.multiexit import MultiExitNet, compact_rows
from earlyexit.outputs import collect_outputs
from earlyexit.policies import Entropy, GateThreshold, MaxProbability, NeverExit, Patience


def _randomise_bn(net):
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net


def _net(backbone="vgg_small", width=0.125, seed=0, **kw):
    torch.manual_seed(seed)
    return _randomise_bn(MultiExitNet(build_backbone(backbone, width=width), **kw)).double().eval()


def _quantile_policies(outputs, k):
    probs = torch.softmax(outputs.logits, 2).max(2).values
    mp = [float(torch.quantile(probs[j], 0.8 - 0.1 * j)) for j in range(k - 1)]
    return [MaxProbability(mp), Entropy([0.99] * (k - 1)), Patience(2), NeverExit(),
            ClassExclusion([0.3] * (k - 1)), SingleConfident([0.15] * (k - 1))]


def test_folding_removes_batchnorm_and_keeps_the_function():
    for backbone, kw in (("vgg_small", {}), ("resnet18_cifar", {"head": "conv"}), ("airnet", {})):
        net = _net(backbone, 0.125 if backbone != "airnet" else 0.25, **kw)
        folded = fold_batchnorm(net)
        assert count_batchnorm(net) > 0 and count_batchnorm(folded) == 0, backbone
        x = torch.randn(8, 3, 32, 32, dtype=torch.float64)
        for a, b in zip(net(x).logits, folded(x).logits):
            assert torch.allclose(a, b, atol=1e-9, rtol=1e-9), backbone
    assert count_batchnorm(net) > 0  # the original is left alone


def test_bn_after_max_pool_is_folded_only_for_positive_scales():
    net = _net("airnet", 0.25)
    bn = net.backbone.stages[1].body[2]
    assert isinstance(bn, torch.nn.BatchNorm2d)
    with torch.no_grad():
        bn.weight[0] = -1.0
    folded = fold_batchnorm(net)
    assert isinstance(folded.backbone.stages[1].body[2], torch.nn.BatchNorm2d)
    assert count_batchnorm(folded) == 1
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    assert torch.allclose(net(x).logits[-1], folded(x).logits[-1], atol=1e-9)


@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_real_early_exit_equals_folded_offline(channels_last):
    net = _net()
    for head in net.heads:  # spread logits so that every rule lets rows out at several exits
        head.fc.weight.data.normal_(0, 2.5)
    table = mac_table(net)
    form = inference_form(net, channels_last=channels_last)
    torch.manual_seed(1)
    x = torch.randn(80, 3, 32, 32, dtype=torch.float64) * 3 * torch.rand(80, 1, 1, 1, dtype=torch.float64)
    y = torch.randint(0, 10, (80,))
    outputs = collect_outputs(form, tensor_batches(x, y, 16))
    for policy in _quantile_policies(outputs, form.num_exits):
        offline = evaluate_policy(outputs, policy, table)
        real = form.early_exit(x, policy)
        assert torch.equal(real.prediction, offline.prediction), policy
        assert torch.equal(real.exit_index, offline.exit_index), policy
        assert real.macs.mean().item() == pytest.approx(offline.mean_macs)
        ones = [form.early_exit(x[i:i + 1], policy) for i in range(0, 80, 7)]  # the batch-of-one path
        assert [r.exit_index.item() for r in ones] == offline.exit_index[::7].tolist(), policy
        assert [r.prediction.item() for r in ones] == offline.prediction[::7].tolist(), policy
    assert len(set(evaluate_policy(outputs, _quantile_policies(outputs, 7)[0], table).exit_index.tolist())) > 3


def test_gated_folded_real_equals_offline():
    net = _net("resnet18_cifar", head="gated", features="linear")
    for head in net.heads:
        head.gate.weight.data.normal_(0, 3.0)
    form = inference_form(net)
    x = torch.randn(48, 3, 32, 32, dtype=torch.float64)
    outputs = collect_outputs(form, tensor_batches(x, torch.zeros(48, dtype=torch.long), 16))
    t = float(torch.quantile(torch.sigmoid(outputs.gates[:-1]).flatten(), 0.9))
    rule = GateThreshold([t] * (net.num_exits - 1))
    offline = evaluate_policy(outputs, rule, mac_table(net))
    real = form.early_exit(x, rule)
    assert torch.equal(real.exit_index, offline.exit_index) and torch.equal(real.prediction, offline.prediction)
    assert sum(c > 0 for c in offline.exit_counts) > 2


def test_compacting_and_carrying_give_the_same_answers(monkeypatch):
    net = _net()
    for head in net.heads:  # mostly negative logits, as BCE training gives: exclusion bites
        head.fc.weight.data.normal_(0, 2.5)
        head.fc.bias.data.fill_(-5.0)
    table = mac_table(net)
    x = torch.randn(64, 3, 32, 32, dtype=torch.float64) * 3 * torch.rand(64, 1, 1, 1, dtype=torch.float64)
    policy = ClassExclusion([0.3] * 6)
    results, x_before = [], x.clone()
    for copy_macs in (0.0, 1e30):  # always compact / always carry the finished rows
        monkeypatch.setattr(multiexit, "COPY_MACS", copy_macs)
        results.append(net.early_exit(x, policy, table.exit_macs))
    assert torch.equal(x, x_before)          # compaction moves rows of the engine's activations only
    assert torch.equal(results[0].exit_index, results[1].exit_index)
    assert torch.equal(results[0].prediction, results[1].prediction)
    assert len(set(results[0].exit_index.tolist())) > 2


@pytest.mark.parametrize("channels_last", [False, True])
def test_compact_rows_moves_only_the_kept_rows_beyond_the_new_size_and_keeps_memory_format(channels_last):
    h = torch.randn(8, 4, 5, 5)
    h = h.contiguous(memory_format=torch.channels_last) if channels_last else h
    before = h.clone()
    pos = torch.tensor([6, 1, 7, 3, 0])                      # rows 2, 4 and 5 left; rows 6 and 7 move
    out, new_pos = compact_rows(h, pos)
    assert len(out) == 5 and out.data_ptr() == h.data_ptr()  # a view of h: nothing allocated for the rows
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert sorted(new_pos.tolist()) == list(range(5)) and new_pos[[1, 3, 4]].tolist() == [1, 3, 0]
    assert all(torch.equal(out[new_pos[j]], before[pos[j]]) for j in range(5))
    assert torch.equal(h[[0, 1, 3]], before[[0, 1, 3]])       # rows already in place were not touched
    kept = h[:2].clone()
    same, unmoved = compact_rows(h, torch.tensor([1, 0]))   # nobody beyond the new size: only a view
    assert unmoved.tolist() == [1, 0] and same.data_ptr() == h.data_ptr() and torch.equal(same, kept)


def test_exit_costs_come_from_one_mac_table(monkeypatch):
    net = _net()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    assert net.early_exit(x, NeverExit()).macs is None  # costs unknown: nothing is profiled
    table = mac_table(net)
    assert net.exit_costs == table.exit_macs

    def no_profiling(*args, **kwargs):
        raise AssertionError("profiled again")
    monkeypatch.setattr(macs_module, "count_macs", no_profiling)
    assert mac_table(net) is table
    r = net.early_exit(x, NeverExit())
    assert r.macs.tolist() == [float(table.exit_macs[-1])] * 4
    assert inference_form(net).exit_costs == table.exit_macs


@pytest.mark.parametrize("backbone, head, options", [("vgg_small", "linear", {}), ("vgg_small", "linear", {"pool": 2}),
                                                     ("resnet18_cifar", "gated", {"features": "conv"}),
                                                     ("resnet18_cifar", "gated", {"features": "linear"})])
def test_inference_heads_compute_the_same_function_with_the_same_macs(backbone, head, options):
    from earlyexit.inference import InferenceHead
    net = _net(backbone, head=head, **options)
    form = inference_form(net, channels_last=False)
    assert all(isinstance(h, InferenceHead) for h in form.heads)
    assert mac_table(form).head_macs == mac_table(net).head_macs
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    a, b = net(x), form(x)
    for za, zb in zip(a.logits + [g for g in a.gates if g is not None], b.logits + [g for g in b.gates if g is not None]):
        assert za.shape == zb.shape and torch.allclose(za, zb, atol=1e-9, rtol=1e-9)
    assert [g is None for g in a.gates] == [g is None for g in b.gates]


def test_real_inference_does_not_import_mac_counting():
    code = "import sys, earlyexit.multiexit, earlyexit.inference; print('earlyexit.macs' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_float32_folded_predictions_match_the_original_on_nearly_all_rows():
    torch.manual_seed(0)
    net = _randomise_bn(MultiExitNet(build_backbone("vgg_small", width=0.125))).eval()
    report = prediction_agreement(net, inference_form(net), torch.randn(64, 3, 32, 32))
    assert report["same_prediction_every_exit"] >= 63 and report["max_abs_logit_diff"] < 1e-3


def test_bench_calibration_sends_the_chosen_shares_out():
    from earlyexit.benchmark import _calibrated, _scenario_shares
    from earlyexit.speed import speed_rows
    torch.manual_seed(0)
    net = MultiExitNet(build_backbone("vgg_small", width=0.125)).eval()
    table = mac_table(net)
    x = torch.randn(40, 3, 32, 32) * 2 * torch.rand(40, 1, 1, 1)
    gated = MultiExitNet(build_backbone("vgg_small", width=0.125), head="gated").eval()
    for rule, model in (("max-softmax", net), ("class exclusion", net), ("gates >= 0.5", gated)):
        form = inference_form(model)
        policy = _calibrated(form, x, rule, _scenario_shares("half at middle exit", 6))
        counts = torch.bincount(form.early_exit(x, policy).exit_index, minlength=7).tolist()
        assert counts[3] == 20 and counts[6] == 20, (rule, counts)
    row = speed_rows(form, x, policy, table, 256, 1, {"network": "tiny"})
    assert row["predicted"] > 1 and row["exit shares"][3] == 0.5


@pytest.mark.parametrize("batch", [1, 8])
def test_exit_breakdown_times_every_exit_with_its_macs(batch):
    from earlyexit.speed import exit_breakdown
    net = MultiExitNet(build_backbone("vgg13", width=0.0625)).eval()
    table = mac_table(net)
    form = inference_form(net)
    rows = exit_breakdown(form, torch.randn(8, 3, 32, 32), ClassExclusion([0.0] * (net.num_exits - 1)), table,
                          batch, repeats=2)
    assert [r["exit"] for r in rows] == list(range(1, net.num_exits + 1))
    assert all(r["stages us"] > 0 and r["head us"] > 0 and r["decision us"] > 0 for r in rows)
    stages_and_heads = sum(r["stages MACs %"] + r["head MACs %"] for r in rows)
    assert stages_and_heads == pytest.approx(100 * table.exit_macs[-1] / table.backbone_macs)


def test_inference_form_has_flat_stages_without_identities_and_one_row_results_like_the_batch():
    net = _net()
    mac_table(net)                                   # exit costs, which the form keeps
    form = inference_form(net)
    assert not any(isinstance(m, torch.nn.Identity) for m in form.backbone.modules())
    assert all(not any(isinstance(c, torch.nn.Sequential) for c in s) for s in form.backbone.stages)
    x = torch.randn(12, 3, 32, 32, dtype=torch.float64)
    assert torch.allclose(net.backbone(x), form.backbone(x), atol=1e-9)
    policy = ClassExclusion([0.2] * (net.num_exits - 1))
    batch = form.early_exit(x, policy)
    for i in range(12):
        one = form.early_exit(x[i:i + 1], policy)
        assert (one.prediction.tolist(), one.exit_index.tolist()) == ([batch.prediction[i].item()],
                                                                      [batch.exit_index[i].item()])
        assert one.macs.tolist() == [batch.macs[i].item()] and one.macs.dtype == torch.float64


def test_batch_of_one_answers_as_early_exit_does_inside_and_outside_inference_mode():
    net = _net()
    for head in net.heads:  # spread logits so that rows leave at several exits
        head.fc.weight.data.normal_(0, 2.5)
    form = inference_form(net)
    policy = ClassExclusion([0.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    x = torch.randn(12, 3, 32, 32, dtype=torch.float64) * 3
    batch = form.early_exit(x, policy)
    run = form.batch_of_one(policy)
    with torch.inference_mode():
        inside = [run(x[i:i + 1]) for i in range(12)]
    outside = [run(x[i:i + 1].contiguous()) for i in range(12)]   # NCHW in: made channels_last
    expected = list(zip(batch.prediction.tolist(), batch.exit_index.tolist()))
    assert inside == outside == expected and len(set(k for _, k in expected)) > 1
    assert all(type(p) is int and type(k) is int for p, k in inside)
    with pytest.raises(ValueError, match="one input"):
        run(x[:2])
    with pytest.raises(RuntimeError, match="eval"):
        MultiExitNet(build_backbone("vgg13", width=0.0625)).train().batch_of_one(policy)


def test_paired_rows_times_each_function_on_every_row_in_alternating_order():
    import time
    from earlyexit.speed import paired_rows
    calls = []

    def fast(r):
        calls.append(("fast", r))

    def slow(r):
        calls.append(("slow", r))
        time.sleep(0.002)

    a, b = paired_rows(fast, slow, list(range(6)), repeats=3)
    assert len(a) == len(b) == 3 and all(tb > ta and tb >= 6 * 0.002 for ta, tb in zip(a, b))
    timed = calls[4:]                                        # two warm-up rows first
    assert len(timed) == 36 and [c[1] for c in timed[:4]] == [0, 0, 1, 1]
    assert [c[0] for c in timed[:4]] == ["slow", "fast", "fast", "slow"]


def test_time_predicted_speedup_weighs_each_row_by_the_stages_it_runs():
    from earlyexit.speed import time_predicted_speedup
    net = MultiExitNet(build_backbone("vgg_small", width=0.125)).eval()   # exits after stages 0..5
    per_stage = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0]                         # six stages, then the classifier
    exits = torch.tensor([1, 1, 6, 6])                                       # two rows after stage 1, two at the end
    assert time_predicted_speedup(net, exits, per_stage) == pytest.approx(8 / ((2 + 2 + 8 + 8) / 4))
    assert time_predicted_speedup(net, torch.tensor([6]), per_stage) == 1.0


def test_interleaved_alternates_the_order_of_the_two_functions():
    from earlyexit.speed import interleaved
    calls = []
    a, b = interleaved(lambda: calls.append("a"), lambda: calls.append("b"), repeats=3)
    assert len(a) == len(b) == 3
    assert calls == list("aabb" "bbaa" "aabb")     # per repeat each call warmed up once: a b | b a | a b


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc settings")
def test_timings_take_big_activations_from_the_heap_instead_of_fresh_mappings():
    """A 64 MB activation: glibc maps it afresh (and unmaps it when freed, so its pages fault in again at
    the next call) unless ``keep_freed_memory`` has run (every speed table calls it), which serves it from
    the heap that keeps freed memory."""
    code = """
import ctypes, torch
from earlyexit.speed import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
def mapped_mb():
    t = torch.ones(16 * 2 ** 20)                   # alive while glibc reports its mapped bytes
    return libc.mallinfo2().hblkhd >> 20
default = mapped_mb()
print(default, keep_freed_memory(), mapped_mb())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode and "mallinfo2" in out.stderr:
        pytest.skip("a glibc older than 2.33")
    default, kept, after = out.stdout.split()
    if kept == "False":
        pytest.skip("the C library is not glibc")
    assert int(default) >= 64 and int(after) < 64, out.stdout


def test_bench_selects_speed_networks_by_notebook_and_name():
    from earlyexit.benchmark import selected_networks
    chosen = selected_networks(only="01", network="VGG_SMALL")
    assert [(e["notebook"], e["name"]) for e in chosen] == [("01", "vgg_small x0.25, 6 exits")]
    assert {e["notebook"] for e in selected_networks(only="00,03")} == {"00", "03"}
    with pytest.raises(ValueError, match="no speed network matches.*vgg_small x0.25, 6 exits"):
        selected_networks(only="03", network="vgg_small")


def test_bench_random_rows_time_every_scenario_at_both_batches_with_its_exit_mix():
    from types import SimpleNamespace
    from earlyexit.benchmark import SCENARIOS, _random_rows
    from earlyexit.train import ModelSpec
    entry = {"spec": SimpleNamespace(model=ModelSpec("vgg_small", 0.125, None, "linear", {"pool": 1})),
             "rule": "class exclusion"}
    rows = _random_rows(entry, repeats=1, batch1_rows=8, label={"network": "tiny"}, device=torch.device("cpu"))
    assert [(r["weights"], r["batch"]) for r in rows] == [(f"random, {s}", b) for s in SCENARIOS for b in (1, 256)]
    assert all(r["network"] == "tiny" for r in rows)
    for r in rows:
        middle = r["exit shares"][(len(r["exit shares"]) - 1) // 2]
        if "half" in r["weights"]:
            assert abs(middle - 0.5) <= 1 / 8, r   # calibrated on the batch: a row on the cut may go either way alone
        elif "no exit" in r["weights"]:
            assert r["exit shares"][-1] == 1.0 and r["predicted"] <= 1.0, r   # every head run, none paid back
