"""Notebook 06's runs: a torchvision model trained alone, heads and class means on it frozen; the checks the
notebook shows (the wrapped final exit equals the model, the MAC table equals torch's FLOP counter / 2)."""
import pytest
import torch

from earlyexit.data import load_dataset
from earlyexit.studies import own_network as study
from earlyexit.studies.plots import network_title
from earlyexit.train import train_cached
from earlyexit.wrapping import wrap

torchvision = pytest.importorskip("torchvision")

PARAMS = dict(model="resnet18", exit_after=["layer1", "layer2"], width=1.0, dataset="synthetic10", train_size=256,
              val_size=128, test_size=128, epochs=1, batch_size=64, lr=0.05, weight_decay=5e-4, head_epochs=2,
              head_lr=1e-3, head_patience=1, bf16=False, channels_last=False, seed=0)


def test_the_plan_trains_the_model_then_heads_and_class_means_on_it_frozen(fresh_artifacts):
    parent, heads, e2cm = study.plan(**PARAMS)
    assert parent.model.exit_after == () and heads.init_from == parent and e2cm.init_from == parent
    assert heads.model.exit_after == (0, 1) and heads.train.freeze_backbone and heads.train.head_inputs == "cached"
    data = load_dataset(parent.data)
    model = train_cached(parent, data, progress=False)
    with_heads = train_cached(heads, data, progress=False)
    frozen = {k: v for k, v in with_heads.net.state_dict().items() if k.startswith("backbone.")}
    assert all(torch.equal(v, model.net.state_dict()[k]) for k, v in frozen.items())   # the model is untouched
    x = next(iter(model.loader("test", 32)))[0]
    with torch.no_grad():
        assert torch.equal(with_heads.net(x).logits[-1], model.net(x).logits[-1])
    class_means = train_cached(e2cm, data, progress=False)
    assert class_means.net.num_exits == 3


def test_the_checks_the_notebook_shows():
    model = torchvision.models.resnet18(num_classes=10)
    check = study.equality_check(model, ["layer1", "layer2"], (3, 32, 32))
    assert check["bit for bit equal"] and check["max |difference|"] == 0 and check["exits"] == 3
    rows = study.mac_check(wrap(model, ["layer1", "layer2"]).eval(), (3, 32, 32))
    assert all(r["MAC table (MMACs)"] == pytest.approx(r["FLOP counter / 2 (MMACs)"]) for r in rows)
    assert network_title("mobilenet_v3_small", 0.5) == "MobileNetV3-Small ×0.5"
