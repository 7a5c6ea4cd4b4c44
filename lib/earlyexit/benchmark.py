"""Benchmarks printed as tables (``make bench``), never asserted by timed tests. Nothing is trained here.

0. Real early-exit speed (the first table): realised / MAC-predicted speed-up of the real early-exit
   forward (``MultiExitNet.early_exit`` on ``inference.inference_form``: BN folded, channels_last) against
   the plain backbone in the same form, for the cpu networks of notebooks 00, 01 and 03 with their rules,
   at batch 1 and 256, on the CPU (one thread) and on every accelerator present, median [min-max] of ms
   per image over interleaved repeats (at batch 1 row by row, ``speed.paired_rows``), the realised
   speed-up as the median of the repeats' paired ratios with its 95% interval, beside the speed-up the
   plain network's own stage times predict and realised over it (what the engine keeps of what the exits
   make possible). Trained networks are used when their checkpoints are complete in artifacts/; random weights always, with each
   rule's thresholds (for gates: the gate biases) calibrated so that chosen shares of the timed rows leave
   at chosen exits: none, half at the middle exit, 60% spread evenly over the early exits. Then every
   rule of notebook 05 at its operating points nearest the costs that notebook times (fronts fitted on
   validation as there), on its first seed's cpu networks; and every rule of notebook 06 at its operating
   point on its wrapped torchvision ResNet-18.

1. Training throughput of the primer network (notebook 00, cpu profile) in float32 vs bf16 autocast +
   channels_last, 2 threads, batch 256: the measured gain of the mixed-precision option.
2. Backbone quality at CPU scale: the primer's run, the shared reference network (multi-exit form, first
   seed; trained once and cached, the same run every notebook uses) on the CIFAR-10 copy: training minutes
   and test accuracy of the final exit, plain and with horizontal-flip test-time augmentation. Goal: at
   least 85% final-exit test accuracy, the bar for a network whose numbers carry a verdict.
3. Seconds per notebook of the latest smoke and cpu runs (``reproduce`` records them with the machine).

``--breakdown`` prints instead, for the speed table's networks, where the early exit's time goes exit by
exit when no row leaves (``speed.exit_breakdown``): the fixed cost each exit adds.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
import statistics
import time

import torch

from .losses import build_loss
from .studies import primer
from .studies.plots import network_title
from .reproduce import _table, call_plan, default_parameters, notebooks
from .device import autocast, bf16_supported, cpu_model, describe_device, maybe_compile, resolve_device, synchronize
from .speed import display, interleaved, speed_rows, timings
from .train import ModelSpec, build_model, train_cached

__all__ = ["primer_spec", "throughput", "flip_tta_accuracy", "speed_networks", "selected_networks", "speed_table",
           "method_speed_table", "notebook_minutes", "breakdown_tables", "copy_cost_in_macs", "main"]


def primer_spec():
    return call_plan(primer.plan, default_parameters(notebooks()["00"]))[0]


def throughput(spec, bf16: bool, channels_last: bool, steps: int = 6, batch: int = 256,
               device: torch.device | str = "cpu", compile: bool = False) -> float:
    """Training images per second on random data on ``device`` (after warm-up steps)."""
    device = resolve_device(device)
    net = build_model(spec.model, 10, 3, 32).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    forward = maybe_compile(net, compile)
    loss_fn = build_loss(spec.loss.name, net.num_exits, **spec.loss.options)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x, y = torch.randn(batch, 3, 32, 32, device=device), torch.randint(0, 10, (batch,), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    warm = 10 if compile else 2
    for i in range(steps + warm):
        if i == warm:
            synchronize()
            t0 = time.perf_counter()
        with autocast(device, bf16):
            loss = loss_fn(forward(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    synchronize()
    return steps * batch / (time.perf_counter() - t0)



def devices_present() -> list[torch.device]:
    found = [torch.device("cpu")]
    if torch.cuda.is_available():
        found.append(torch.device("cuda"))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append(torch.device("mps"))
    return found


def throughput_table(threads: int) -> list[dict]:
    """The primer network on every device present, float32 and bf16 autocast + channels_last; on an
    accelerator also ResNet-18 and torch.compile."""
    rows = []
    for device in devices_present():
        accelerator = device.type != "cpu"
        specs = [primer_spec()] + ([replace(primer_spec(), model=replace(primer_spec().model, backbone="resnet18_cifar"))]
                                   if accelerator else [])
        for spec in specs:
            modes = [(False, False, False)] + ([(True, True, False)] if bf16_supported(device) else [])
            if accelerator:
                modes += [(True, True, True)]
            for bf16, cl, comp in modes:
                rows.append({"device": describe_device(device)["device_name"], "network": spec.model.backbone,
                             "precision": "bf16 autocast" if bf16 else "float32", "channels_last": cl, "compile": comp,
                             "threads": threads if not accelerator else "-",
                             "img/s": throughput(spec, bf16, cl, steps=30 if accelerator else 6, device=device,
                                                 compile=comp)})
    return rows


@torch.no_grad()
def flip_tta_accuracy(net, loader) -> float:
    """Final-exit accuracy averaging the logits of each image and its mirror image."""
    correct = n = 0
    for x, y in loader:
        z = net(x).logits[-1] + net(x.flip(3)).logits[-1]
        correct += (z.argmax(1) == y).sum().item()
        n += len(y)
    return correct / n


# ---------------------------------------------------------------- real early-exit speed
SCENARIOS = ("no exit", "half at middle exit", "60% spread")
PRIMER_THRESHOLD = 0.625   # a max-softmax threshold for the random-weight primer network (never leaves)
GATE_THRESHOLD = 0.5       # notebook 03's hard-gate threshold


def speed_networks() -> list[dict]:
    """The cpu-profile networks of notebooks 00, 01 and 03 with their rules, as run specs, and the
    class-exclusion paper's VGGsmall x0.25 with its 6 exits (random weights only: the engine's test
    case for many exits on a small network)."""
    from .studies import class_exclusion as p01, differentiable_branching as p03
    primer_run = primer_spec()
    primer = default_parameters(notebooks()["00"])
    out = [{"notebook": "00", "name": f"primer {primer_run.model.backbone} x{primer_run.model.width:g}", "rule": "max-softmax",
            "spec": primer_run, "tolerance": primer["tolerance"]}]
    params = default_parameters(notebooks()["01"])
    setups = call_plan(p01.setup_runs, params)
    first = params["setups"][0]
    out.append({"notebook": "01", "name": f"{first['backbone']} x{first.get('width', 1.0):g}",
                "rule": "class exclusion", "spec": setups[first["name"]]["BC"],
                "tolerance": first.get("bc_tolerance", 0.001)})
    vgg_small = replace(setups[first["name"]]["BC"], name="vggsmall_x0.25_random",
                        model=ModelSpec("vgg_small", 0.25, None, "linear", {"pool": 1}))
    out.append({"notebook": "01", "name": "vgg_small x0.25, 6 exits", "rule": "class exclusion", "spec": vgg_small,
                "random_only": True})
    params = default_parameters(notebooks()["03"])
    for (dataset, backbone), runs in p03.layout(**params).items():
        spec = runs.proposed[min(runs.proposed)]
        out.append({"notebook": "03", "name": f"{backbone} x{params['width']:g}, gated ({dataset})",
                    "rule": f"gates >= {GATE_THRESHOLD}", "spec": spec})
    return out


def selected_networks(only: str | None = None, network: str | None = None) -> list[dict]:
    """The speed networks of the notebooks in ``only`` ("01,03"; None: all) whose name contains ``network``
    (case-insensitive; None: any); an error naming the choices when nothing matches."""
    entries = speed_networks()
    chosen = [e for e in entries if (not only or e["notebook"] in only.split(","))
              and (not network or network.lower() in e["name"].lower())]
    if not chosen:
        names = "; ".join(f"{e['notebook']} {e['name']}" for e in entries)
        raise ValueError(f"no speed network matches only={only!r}, network={network!r}; the networks: {names}")
    return chosen


def _trained(spec) -> bool:
    from .paths import artifacts_root
    path = artifacts_root() / spec.key / "checkpoint.pt"
    if not path.exists():
        return False
    try:
        return torch.load(path, weights_only=False)["epoch"] >= spec.train.epochs
    except Exception:
        return False


def _leaving_thresholds(scores: torch.Tensor, shares: list[float]) -> list[float]:
    """Per early exit k, the threshold on scores[k] (higher = readier) that lets share_k of all rows
    leave at k, walking the exits in order (inf: nobody leaves there)."""
    n, remaining, out = scores.shape[1], torch.ones(scores.shape[1], dtype=torch.bool), []
    for k, share in enumerate(shares):
        count = min(int(round(share * n)), int(remaining.sum()))
        t = torch.topk(scores[k, remaining], count).values[-1].item() if count else float("inf")
        out.append(t)
        remaining &= ~(scores[k] >= t)
    return out


def _scenario_shares(scenario: str, early: int) -> list[float]:
    shares = [0.0] * early
    if scenario == "half at middle exit":
        shares[early // 2] = 0.5
    elif scenario == "60% spread":
        shares = [0.6 / early] * early
    return shares


def _calibrated(form, x: torch.Tensor, rule: str, shares: list[float]):
    """The notebook's rule on a random-weight network, tuned so that ``shares`` of ``x`` leave at each
    early exit. Gates: the gate biases move (the hard-gate rule keeps its fixed t)."""
    from .methods.class_exclusion import ClassExclusion
    from .methods.differentiable_branching import hard_gate_rule
    from .policies import MaxProbability
    with torch.no_grad():
        out = form(x.contiguous(memory_format=form.input_format))
    all_logits = [z.float().cpu() for z in out.logits]            # the device's own values, on the CPU
    gates = [None if g is None else g.float().cpu() for g in out.gates]
    logits = torch.stack(all_logits[:-1])
    if rule == "max-softmax":
        return MaxProbability(_leaving_thresholds(torch.softmax(logits, 2).max(2).values, shares))
    if rule.startswith("gates"):
        t = _leaving_thresholds(torch.stack(gates[:-1]), shares)
        with torch.no_grad():
            for head, tk in zip(form.heads, t):   # InferenceHead: the gate's bias follows the class biases
                head.bias[head.num_classes] -= tk if tk != float("inf") else 1e4
        return hard_gate_rule(form.num_exits, GATE_THRESHOLD)
    # class exclusion: beta_k by bisection, exit by exit (more exclusion = more rows leave at k)
    from .outputs import CachedOutputs
    from .policies import run_exit_policy
    cached = CachedOutputs(torch.stack(all_logits), torch.zeros(len(x), dtype=torch.long))
    betas, n = [0.0] * len(shares), len(x)

    def leaving(b):
        _, exits = run_exit_policy(ClassExclusion(b), cached.num_exits, n, lambda k, a, keep: (cached.logits[k, a], None))
        return torch.bincount(exits, minlength=cached.num_exits)

    for k, share in enumerate(shares):
        if share == 0:
            continue
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            if leaving(betas[:k] + [mid] + betas[k + 1:])[k] < share * n:
                lo = mid
            else:
                hi = mid
        betas[k] = hi
    return ClassExclusion(betas)


def speed_table(networks: list[dict], repeats: int = 5, batch1_rows: int = 128,
                devices: list[torch.device] | None = None) -> list[dict]:
    """The real early-exit speed rows of ``networks`` (``selected_networks``) on every device present
    (``devices``; the CPU first): trained weights when complete, random weights always."""
    rows = []
    for entry in networks:
        trained = not entry.get("random_only") and _trained(entry["spec"])
        if not entry.get("random_only") and not trained:
            print(f"{entry['notebook']} {entry['name']}: not trained: run make reproduce ONLY={entry['notebook']} "
                  f"(showing random weights)")
        for device in devices or devices_present():
            label = {"nb": entry["notebook"], "network": entry["name"], "rule": entry["rule"], "device": str(device)}
            if trained:
                rows += _trained_rows(entry, repeats, batch1_rows, label, device)
            rows += _random_rows(entry, repeats, batch1_rows, label, device)
    return rows


def _random_rows(entry: dict, repeats: int, batch1_rows: int, label: dict, device: torch.device) -> list[dict]:
    """Random weights, the rule calibrated on the rows timed for each scenario (the same exit mix at
    both batches)."""
    from .inference import inference_form
    from .macs import mac_table
    torch.manual_seed(0)
    net = build_model(entry["spec"].model, 10, 3, 32).eval()
    table = mac_table(net)
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(256, 3, 32, 32, generator=gen) * 2 * torch.rand(256, 1, 1, 1, generator=gen)).to(device)
    rows = []
    for scenario in SCENARIOS:
        shares = _scenario_shares(scenario, net.num_exits - 1)
        for batch in (1, 256):
            xb = x[:batch1_rows] if batch == 1 else x
            form = inference_form(net).to(device)
            policy = _calibrated(form, xb, entry["rule"], shares)
            rows.append(speed_rows(form, xb, policy, table, batch, repeats,
                                   {**label, "weights": f"random, {scenario}"}, stage_timed=True))
    return rows


def _trained_rows(entry: dict, repeats: int, batch1_rows: int, label: dict, device: torch.device) -> list[dict]:
    from .inference import inference_form
    from .methods.differentiable_branching import hard_gate_rule
    from .policies import MaxProbability
    run = train_cached(entry["spec"], progress=False)
    if entry["rule"] == "max-softmax":   # the threshold notebook 00 chooses on validation
        from .studies.primer import maxprob_choice
        _, choice = maxprob_choice(run.outputs("val"), run.outputs("test"), run.macs, entry["tolerance"])
        policy = MaxProbability(choice["thresholds"])
    elif entry["rule"] == "class exclusion":
        from .methods.class_exclusion import fit_operating_point
        policy = fit_operating_point("BC", run.outputs("val"), run.outputs("test"), run.macs,
                                     entry["tolerance"]).policy
    else:
        policy = hard_gate_rule(run.net.num_exits, GATE_THRESHOLD)
    x, _ = next(iter(run.loader("test", batch_size=256)))
    form, x = inference_form(run.net).to(device), x.to(device)
    return [speed_rows(form, x if b > 1 else x[:batch1_rows], policy, run.macs, b, repeats,
                       {**label, "weights": "trained"}, stage_timed=True) for b in (1, 256)]


def default_costs_row(repeats: int = 5, rows: int = 64) -> dict:
    """``early_exit`` called without ``exit_costs`` reads the ones ``mac_table`` stored on the network
    and never profiles: the same batch-1 forward of the primer network (random weights) timed both
    ways, interleaved, ms per image."""
    from .inference import inference_form
    from .macs import mac_table
    from .policies import MaxProbability
    torch.manual_seed(0)
    net = build_model(primer_spec().model, 10, 3, 32).eval()
    table = mac_table(net)
    form = inference_form(net)
    x = torch.randn(rows, 3, 32, 32).contiguous(memory_format=form.input_format)
    policy = MaxProbability([PRIMER_THRESHOLD] * (net.num_exits - 1))
    with torch.no_grad():
        given, default = interleaved(lambda: [form.early_exit(x[i:i + 1], policy, table.exit_macs) for i in range(rows)],
                                     lambda: [form.early_exit(x[i:i + 1], policy) for i in range(rows)], repeats)
    given_ms, default_ms = (1e3 * statistics.median(t) / rows for t in (given, default))
    return {"network": "primer (random weights)", "batch": 1, "costs given ms": round(given_ms, 3),
            "default costs ms": round(default_ms, 3), "default / given": round(default_ms / given_ms, 2)}


def copy_cost_in_macs(repeats: int = 7) -> dict:
    """How many 3x3-conv MACs take as long as moving one activation element (``multiexit.COPY_MACS``):
    every other row leaves a batch of 256, so compacting moves 64 rows."""
    from .multiexit import compact_rows
    h = torch.randn(256, 32, 32, 32).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(32, 32, 3, padding=1, bias=True).to(memory_format=torch.channels_last).eval()
    index = torch.arange(0, 256, 2)
    with torch.no_grad():
        t_conv = statistics.median(timings(lambda: conv(h), repeats)) / (256 * 32 * 32 * 32 * 32 * 9)
        t_copy = statistics.median(timings(lambda: compact_rows(h, index), repeats)) / (64 * 32 * 32 * 32)
    return {"ns per MAC": 1e9 * t_conv, "ns per copied element": 1e9 * t_copy, "copy in MACs": t_copy / t_conv}


def breakdown_tables(networks: list[dict], repeats: int = 5, batch1_rows: int = 64) -> dict[str, list[dict]]:
    """``speed.exit_breakdown`` of the speed table's networks (trained when their checkpoints are complete,
    random weights otherwise), batch 1 and 256, with the rule each is timed with; the title names the case."""
    from .inference import inference_form
    from .macs import mac_table
    from .speed import exit_breakdown
    out = {}
    for entry in networks:
        trained = not entry.get("random_only") and _trained(entry["spec"])
        if trained:
            run = train_cached(entry["spec"], progress=False)
            net, table = run.net, run.macs
            x, _ = next(iter(run.loader("test", batch_size=256)))
        else:
            torch.manual_seed(0)
            net = build_model(entry["spec"].model, 10, 3, 32).eval()
            table = mac_table(net)
            x = torch.randn(256, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        form = inference_form(net)
        policy = _calibrated(form, x, entry["rule"], [0.0] * (net.num_exits - 1))   # nobody leaves
        for batch in (1, 256):
            name = (f"{entry['notebook']} {entry['name']} ({'trained' if trained else 'random weights'}), "
                    f"{entry['rule']}, batch {batch}")
            out[name] = exit_breakdown(form, x[:batch1_rows] if batch == 1 else x, policy, table, batch, repeats)
    return out


def method_speed_table(repeats: int = 5, batch1_rows: int = 128) -> list[dict] | None:
    """Notebook 05's rules on its first seed's cpu networks (fronts fitted on validation as the notebook
    fits them): realised / predicted speed-up at the points nearest its ``speed_costs``, batch 1 and 256,
    one thread. None when a network is not trained yet."""
    from .methods.eenet import EENetConfig
    from .studies import benchmark as p05
    params = default_parameters(notebooks()["05"])
    specs = {name: runs[0] for name, runs in call_plan(p05.networks, params).items()}
    if not all(_trained(s) for s in specs.values()):
        return None
    runs = {name: train_cached(s, progress=False) for name, s in specs.items()}
    recipe = {key: params[f"recipe_{key}"] for key in ("optimizers", "lrs", "epochs", "budgets")}
    _, fronts = p05.benchmark_fronts({name: [run] for name, run in runs.items()}, params["seeds"][:1],
                                     params["vectors"], params["shared_grid"],
                                     EENetConfig(**params["scheduler"]), params["eenet_budgets"],
                                     params["scheduler_seeds"], recipe, params["e2cm_prediction"],
                                     params["restrict_final"])
    rows = []
    for front in fronts[params["seeds"][0]].values():
        rows += p05.speed_points(front, runs[front.network], params["speed_costs"], repeats, batch1_rows)
    return rows


def own_network_speed_table(repeats: int = 5, batch1_rows: int = 128) -> list[dict] | None:
    """Notebook 06's rules on its cpu network (a torchvision ResNet-18 with heads on the frozen model, fronts
    fitted on validation as the notebook fits them): realised / predicted speed-up at each rule's operating
    point, batch 1 and batched, one thread. None when the network is not trained yet."""
    from .studies import own_network as p06
    params = default_parameters(notebooks()["06"])
    specs = call_plan(p06.plan, params)
    if not all(_trained(s) for s in specs):
        return None
    _, heads, e2cm = (train_cached(s, progress=False) for s in specs)
    found, points = p06.fit_rules(heads, e2cm, network_title(params["model"], params["width"]), params["rules"],
                                  params["vectors"], params["grid"], params["seed"], params["eenet_budgets"],
                                  params["eenet_epochs"], params["scheduler_seeds"], params["within"])
    return p06.time_points(found, points, heads, e2cm, repeats, batch1_rows, params["speed_batches"])


def notebook_minutes() -> list[dict]:
    """Minutes per notebook of the latest smoke and cpu runs (``reproduce`` records them in
    reports/<profile>/timings.json), with the machine each ran on."""
    import json
    from .reproduce import TIMINGS
    from .studies.report import reports_dir
    rows = []
    for profile in ("smoke", "cpu"):
        path = reports_dir(profile) / TIMINGS
        if not path.exists():
            rows.append({"profile": profile, "notebook": f"not run here: make reproduce PROFILE={profile}"})
            continue
        for name, r in json.loads(path.read_text()).items():
            rows.append({"profile": profile, "notebook": name, "status": r["status"], "seconds": 60 * r["minutes"],
                         "trained": r["trained"], "reused": r["reused"], "cpu": r["cpu"], "threads": r["threads"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m earlyexit.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for the training throughput table")
    parser.add_argument("--speed-only", action="store_true", help="only the real early-exit speed table")
    parser.add_argument("--skip-speed", action="store_true", help="skip the real early-exit speed table")
    parser.add_argument("--skip-training", action="store_true", help="skip the backbone quality table")
    parser.add_argument("--only", default=None, help="notebooks for the speed table, e.g. 01,03")
    parser.add_argument("--network", default=None,
                        help="only the speed networks whose name contains this, e.g. vgg_small "
                             "(with --only: within those notebooks)")
    parser.add_argument("--repeats", type=int, default=7,
                        help="interleaved repeats per timing (a 95%% interval for a speed-up needs 6 or more)")
    parser.add_argument("--breakdown", action="store_true",
                        help="only the per-exit time breakdown (stages, head, decision) of the speed networks")
    args = parser.parse_args(argv)
    with_05 = "05" in (args.only or "").split(",") or not (args.only or args.network)
    with_06 = "06" in (args.only or "").split(",") or not (args.only or args.network)
    try:
        networks = selected_networks(args.only, args.network)
    except ValueError as exc:
        if args.network:
            parser.error(str(exc))
        networks = []                                  # --only 05 / 06: those notebooks' tables alone
    if args.breakdown:
        torch.set_num_threads(1)
        print(f"where the early exit's time goes when no row leaves: microseconds per image, median of "
              f"{args.repeats} repeats, 1 thread, {cpu_model()}, inference form")
        for name, rows in breakdown_tables(networks, args.repeats).items():
            print(f"\n{name}\n{_table(rows)}")
        return 0
    if not args.skip_speed:
        torch.set_num_threads(1)
        cpu = cpu_model()
        print(f"real early exit vs plain backbone, inference form (BN folded, channels_last), float32, 1 CPU thread "
              f"({cpu}) and every accelerator present; ms/img median [min-max] of {args.repeats} repeats; batch 1 = "
              f"rows timed one by one; realised speed-up = median of the repeats' paired plain / early-exit ratios, "
              f"with its 95% interval; both columns with freed memory kept for reuse (speed.keep_freed_memory: "
              f"glibc's mallopt, as under a caching allocator), not glibc's default, which maps every block over "
              f"32 MB afresh")
        if networks:
            print(_table(display(speed_table(networks, args.repeats))))
        if with_05:
            methods = method_speed_table(args.repeats)
            print("\nnotebook 05: every rule at its operating points nearest the costs timed there (first seed's "
                  "networks, fronts fitted on validation)")
            print(_table(display(methods)) if methods else "not trained: run make reproduce ONLY=05")
        if with_06:
            own = own_network_speed_table(args.repeats)
            print("\nnotebook 06: every rule at its operating point on a wrapped torchvision ResNet-18 (heads on the "
                  "frozen model, fronts fitted on validation)")
            print(_table(display(own)) if own else "not trained: run make reproduce ONLY=06")
        print(f"\nearly_exit without exit_costs reads the stored MAC table, never profiles (median of {args.repeats}):")
        print(_table([default_costs_row(args.repeats)]))
        print("\ncopying one activation element costs about as much as MACs of a 3x3 conv "
              "(multiexit.COPY_MACS drives compact-or-carry):")
        print(_table([copy_cost_in_macs()]))
        if args.speed_only:
            return 0
    print("\nseconds per notebook, latest run of each profile (reports/<profile>/timings.json)")
    print(_table(notebook_minutes()))
    torch.set_num_threads(args.threads)
    spec = primer_spec()
    rows = throughput_table(args.threads)
    print("\ntraining throughput per device present, batch 256, random data (img/s)")
    print(_table(rows))
    if args.skip_training:
        return 0
    if not _trained(spec):
        print("\nbackbone quality: not trained: run make reproduce ONLY=00")
        return 0
    run = train_cached(spec)
    test = run.outputs("test")
    result = [{"network": f"{spec.model.backbone} x{spec.model.width}", "epochs": spec.train.epochs,
               "train min": run.train_seconds / 60, "threads": run.history[-1]["threads"],
               "bf16": run.history[-1]["bf16"], "test acc": f"{100 * test.exit_accuracies()[-1]:.2f}%",
               "test acc (flip TTA)": f"{100 * flip_tta_accuracy(run.net, run.loader('test')):.2f}%",
               "goal": ">= 85% final exit"}]
    print(f"\nbackbone quality on {run.data.describe()}")
    print(_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
