"""Training cache: resume after interruption, rebuild after corruption, argument checks."""
import pytest
import torch

from earlyexit import train as T
from earlyexit.data import DataSpec, load_dataset
from earlyexit.train import LossSpec, ModelSpec, RunSpec, TrainConfig, train_cached

SPEC = RunSpec("unit", ModelSpec("airnet", 0.25), DataSpec("synthetic10", val_size=200, train_size=1024, test_size=200),
               LossSpec("weighted_ce", {"weights": "depth", "label_smoothing": 0.1}),
               TrainConfig(epochs=3, batch_size=64, lr=0.2))


@pytest.fixture(scope="module")
def data():
    return load_dataset(SPEC.data)


def _weights(run):
    return torch.cat([p.detach().flatten() for p in run.net.parameters()])


def test_training_learns_and_is_cached(data, fresh_artifacts):
    run = train_cached(SPEC, data, progress=False)
    assert len(run.history) == 3 and run.history[-1]["val_acc"][-1] > 0.4  # 10 classes: chance is 0.1
    again = train_cached(SPEC, data, progress=False)
    assert torch.equal(_weights(run), _weights(again)) and again.history == run.history


def test_interrupted_run_resumes_to_the_same_weights(data, fresh_artifacts, monkeypatch, tmp_path):
    reference = _weights(train_cached(SPEC, data, progress=False))
    monkeypatch.setenv("EARLYEXIT_ARTIFACTS", str(tmp_path / "other"))
    calls = {"n": 0}
    real = T.exit_accuracies

    def interrupt_in_epoch_two(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(T, "exit_accuracies", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_cached(SPEC, data, progress=False)
    monkeypatch.setattr(T, "exit_accuracies", real)
    ckpt = torch.load(next((tmp_path / "other").glob("unit-*/checkpoint.pt")), weights_only=False)
    assert ckpt["epoch"] == 1
    resumed = train_cached(SPEC, data, progress=False)
    assert torch.equal(reference, _weights(resumed))


def test_truncated_checkpoint_is_moved_aside_and_rebuilt(data, fresh_artifacts, capsys):
    first = _weights(train_cached(SPEC, data, progress=False))
    path = next(fresh_artifacts.glob("unit-*/checkpoint.pt"))
    path.write_bytes(path.read_bytes()[:1000])
    rebuilt = train_cached(SPEC, data, progress=False)
    assert "unreadable" in capsys.readouterr().out
    assert list(path.parent.glob("checkpoint.pt.corrupt-*"))
    assert torch.equal(first, _weights(rebuilt))


def test_outputs_are_cached_and_match_the_network(data, fresh_artifacts):
    run = train_cached(SPEC, data, progress=False)
    out = run.outputs("val")
    assert out.logits.shape == (run.net.num_exits, 200, 10)
    assert torch.equal(run.outputs("val").logits, out.logits)
    x, _ = next(iter(run.loader("val", batch_size=8)))
    with torch.no_grad():
        assert torch.allclose(run.net(x).logits[-1], out.logits[-1, :8], atol=1e-5)


@pytest.mark.parametrize("bad", [{"epochs": -1}, {"batch_size": 0}, {"lr": 0}, {"optimizer": "lbfgs"},
                                 {"schedule": "step"}])
def test_bad_training_configuration_fails_clearly(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)


def test_unknown_loss_and_mismatched_data(data):
    with pytest.raises(ValueError, match="unknown loss"):
        train_cached(RunSpec("x", SPEC.model, SPEC.data, LossSpec("hinge")), data, progress=False)
    with pytest.raises(ValueError, match="does not match"):
        train_cached(RunSpec("x", SPEC.model, DataSpec("synthetic10", val_size=100)), data, progress=False)


def test_hash_changes_with_any_setting():
    assert SPEC.key != SPEC.with_train(epochs=SPEC.train.epochs + 1).key
    assert SPEC.key == RunSpec(**{f: getattr(SPEC, f) for f in ("name", "model", "data", "loss", "train")}).key


def test_device_choice_and_checkpoints_load_anywhere(data, fresh_artifacts):
    from earlyexit.device import describe_device, resolve_device
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")
    spec = SPEC.with_train(epochs=1)
    run = T.train_cached(spec, data, progress=False, device="cpu")
    assert run.device == torch.device("cpu") and run.history[-1]["device"] == "cpu"
    assert {"device_name", "dtype", "threads", "torch"} <= set(run.history[-1])
    state = torch.load(run.directory / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert all(v.device.type == "cpu" for v in state["model"].values())
    again = T.train_cached(spec, data, progress=False, device="auto")   # the cache does not depend on the device
    assert torch.equal(_weights(run), _weights(again))
    assert describe_device(torch.device("cpu"))["device"] == "cpu"


def test_metrics_files_say_where_they_ran(tmp_path, monkeypatch):
    import json
    from earlyexit import device as D
    from earlyexit.studies.report import save_metrics
    monkeypatch.setenv("EARLYEXIT_OUTPUT", str(tmp_path))
    monkeypatch.setattr(D, "_default", D._default)
    monkeypatch.setattr(D, "_bf16", D._bf16)
    D.set_default_device("cpu", bf16=False)
    path = save_metrics("99_test", "smoke", {"x": 1.0})
    env = json.loads((tmp_path / path).read_text())["environment"]
    assert env["device"] == "cpu" and env["dtype"] == "float32" and env["device_name"] == D.cpu_model()
    assert env["threads"] == torch.get_num_threads() and env["torch"] == torch.__version__
    D.set_default_device("cpu", bf16=True)   # bf16 is recorded only where the device runs it
    path = save_metrics("99_test", "smoke", {"x": 1.0})
    dtype = json.loads((tmp_path / path).read_text())["environment"]["dtype"]
    assert dtype == ("bf16 autocast" if D.bf16_supported("cpu") else "float32")


def test_patience_stops_at_a_validation_plateau_and_keeps_the_key(data, fresh_artifacts, monkeypatch):
    history = [{"epoch": 0, "step": "init"}] + [{"epoch": e + 1, "val_acc": [a, 0.9]} for e, a in enumerate((0.5, 0.6, 0.6, 0.55))]
    assert T.plateaued(history, 2, [0]) and not T.plateaued(history, 3, [0]) and not T.plateaued(history[:3], 1, [0])
    assert T.plateaued(history[:3], 1, [1])                       # exit 1 never improved after epoch 1
    assert "patience" not in str(SPEC.key) and SPEC.key == SPEC.with_train(patience=None).key
    assert SPEC.key != SPEC.with_train(patience=2).key
    monkeypatch.setattr(T, "exit_accuracies", lambda net, loader: [0.5] * net.num_exits)   # a flat validation curve
    run = train_cached(SPEC.with_train(epochs=10, patience=2), data, progress=False)
    assert run.epochs_trained == 3                                # best at epoch 1, two epochs without improvement
    held = train_cached(SPEC.with_train(epochs=10, patience=2, min_epochs=5), data, progress=False)
    assert held.epochs_trained == 5                               # no plateau counts before min_epochs
    assert SPEC.key == SPEC.with_train(min_epochs=0).key
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(patience=0)


def test_heads_trained_on_cached_inputs_learn_like_live_ones_and_keep_keys(data, fresh_artifacts):
    """Head-only training from inputs computed once: the cached inputs are what the full forward feeds
    each Linear, the heads learn, the pass counts as training time, and runs that do not use the option
    keep their keys; heads with trainable layers before their Linear are refused."""
    from earlyexit.head_inputs import HeadInputs, check_cacheable
    parent = train_cached(SPEC, data, progress=False)
    heads = RunSpec("heads", SPEC.model, SPEC.data, LossSpec("weighted_ce", {"weights": "uniform"}),
                    TrainConfig(epochs=4, batch_size=64, optimizer="adam", lr=1e-2, schedule="constant",
                                freeze_backbone=True, seed=1), init_from=SPEC)
    assert heads.key == heads.with_train(head_inputs="live").key
    cached = train_cached(heads.with_train(head_inputs="cached"), data, progress=False)
    live = train_cached(heads, data, progress=False)
    assert torch.equal(cached.net.backbone.stages[0][0].weight, parent.net.backbone.stages[0][0].weight)
    for run in (cached, live):     # every head learned well above chance (10 classes)
        assert min(run.history[-1]["val_acc"][:-1]) > 0.2
        assert run.history[-1]["val_acc"][-1] == pytest.approx(parent.history[-1]["val_acc"][-1], abs=1e-6)
    assert abs(sum(cached.history[-1]["val_acc"]) - sum(live.history[-1]["val_acc"])) < 0.1 * cached.net.num_exits
    val = HeadInputs(cached.net, cached.loader("val"), False, torch.device("cpu"))
    full = cached.outputs("val")
    for k, z in enumerate(val.outputs(cached.net, val.inputs).logits):
        assert torch.allclose(z, full.logits[k], atol=1e-4)
    assert val.accuracies(cached.net) == pytest.approx(cached.history[-1]["val_acc"], abs=1e-6)
    with pytest.raises(ValueError, match="freeze_backbone"):
        TrainConfig(head_inputs="cached")
    gated = train_cached(RunSpec("gated", ModelSpec("airnet", 0.25, None, "gated", {"features": "linear", "pool": 1}),
                                 SPEC.data, SPEC.loss, TrainConfig(epochs=0), init_from=SPEC), data, progress=False)
    gated.net.backbone.requires_grad_(False)
    inputs = HeadInputs(gated.net, gated.loader("val"), False, torch.device("cpu"))
    full = gated.outputs("val")
    for z, ref in zip(inputs.outputs(gated.net, inputs.inputs).gates[:-1], full.gates[:-1]):
        assert torch.allclose(z, ref, atol=1e-4)          # gates from cached inputs too (03's lambda grid)
    conv = train_cached(RunSpec("conv", ModelSpec("airnet", 0.25, None, "conv"), SPEC.data, SPEC.loss,
                                TrainConfig(epochs=0), init_from=SPEC), data, progress=False).net
    conv.backbone.requires_grad_(False)
    with pytest.raises(ValueError, match="cannot be cached"):
        check_cacheable(conv)


def test_channels_last_training_records_the_layout_it_ran_in(data, fresh_artifacts, monkeypatch):
    from earlyexit import device as D
    spec = SPEC.with_train(epochs=1, channels_last=True)
    run = train_cached(spec, data, progress=False)
    assert run.history[-1]["channels_last"] == D.channels_last_trains("cpu")
    monkeypatch.setattr(T, "channels_last_trains", lambda device: False)   # an x86 CPU without AVX-512
    fallback = train_cached(spec.with_train(seed=1), data, progress=False)
    assert fallback.history[-1]["channels_last"] is False
    assert all(p.is_contiguous() for p in fallback.net.parameters())


def test_bf16_autocast_only_where_the_cpu_has_bf16_instructions(monkeypatch):
    from earlyexit import device as D
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)   # oneDNN converts on AVX-512
    for avx512_bf16, amx, expected in ((False, False, False), (True, False, True), (False, True, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert D.bf16_supported("cpu") is expected


def test_summary_progress_prints_one_line_per_run_with_why_it_stopped(data, fresh_artifacts, capsys, monkeypatch):
    monkeypatch.setenv(T.PROGRESS_LINES, "1")    # as under the batch runner: still one line, not one per epoch
    train_cached(SPEC, data, progress="summary")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("unit: trained 3 epochs, loss ")
    assert lines[0].endswith("(stopped: epoch cap)")


def test_a_time_capped_run_never_prints_its_epoch_cap(data, fresh_artifacts, capsys, monkeypatch):
    monkeypatch.setenv(T.PROGRESS_LINES, "1")
    spec = SPEC.with_train(epochs=1000, time_budget_s=0.5, schedule="constant")
    train_cached(spec, data, progress=False)
    out = capsys.readouterr().out
    assert "unit epoch 1:" in out and "/1000" not in out and "(stopped: time budget reached)" in out
    with pytest.raises(ValueError, match="progress must be"):
        train_cached(SPEC, data, progress="bar")


def test_a_full_disk_is_named_as_such_and_leaves_no_partial_file(tmp_path, monkeypatch):
    """torch reports a short write as "unexpected pos N vs M"; the cache says what that means."""
    from earlyexit import paths

    def short_write(obj, f):
        open(f, "wb").write(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 896 vs 790")

    monkeypatch.setattr(paths.torch, "save", short_write)
    with pytest.raises(OSError, match="disk is probably full .* MB free.*EARLYEXIT_ARTIFACTS"):
        paths.atomic_save({"w": 1}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(paths.torch, "save", lambda obj, f: (_ for _ in ()).throw(RuntimeError("other")))
    with pytest.raises(RuntimeError, match="^other$"):      # any other failure is passed on unchanged
        paths.atomic_save({"w": 1}, tmp_path / "checkpoint.pt")


def test_epoch_outputs_are_kept_instead_of_epoch_weights(data, fresh_artifacts):
    spec = SPEC.with_train(epochs=2, keep_epoch_outputs=True)
    run = train_cached(spec, data, progress=False)
    assert not list(run.directory.glob("epoch_*.pt"))                      # no weights per epoch
    last = run.epoch_outputs(2)
    assert torch.equal(last.logits, run.outputs("val").logits)             # the last epoch is the finished run
    assert not torch.equal(run.epoch_outputs(1).logits, last.logits)
    with pytest.raises(FileNotFoundError, match="epoch 3 .*keep_epoch_outputs=True"):
        run.epoch_outputs(3)
    # hashed under its former name, so runs cached before the rename keep their key
    assert T._unset_dropped(spec.to_dict())["train"]["keep_epoch_checkpoints"] is True
