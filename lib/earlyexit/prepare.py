"""Train every run of a profile's notebooks ahead of the notebooks, here or spread over a Ray cluster.

    python -m earlyexit.prepare --profile P [--only 00,03] [--executor local|ray] [--address ADDR]
                                [--device auto]

The runs are the notebooks' plans (the same RunSpecs a notebook asks ``train_cached`` for), each
counted once however many notebooks share it. ``local`` (the default, no extra dependency) trains
them one after another in this process. ``ray`` submits one Ray task per run (one GPU each when the
cluster has GPUs) to a local Ray instance, or to the cluster at ``--address``; a run that starts
from another run's checkpoint waits for that task. Every worker writes to the same artifacts root
(``EARLYEXIT_ARTIFACTS``, which may point at a shared filesystem), so the notebooks executed
afterwards find every training in the cache and train nothing. Ray is an optional extra:
``pip install -e .[cluster]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .paths import artifacts_root, data_root
from .reproduce import ConfigError, call_plan, default_parameters, plan_module, resolve_parameters, select
from .profiles import PROFILE_NAMES
from .train import RunSpec, train_cached

__all__ = ["profile_runs", "run_local", "run_ray", "main"]


def profile_runs(profile: str, only: str | None = None) -> list[RunSpec]:
    """Every run of the chosen notebooks' plans, parents before the runs that start from them, each once."""
    ordered: dict[str, RunSpec] = {}

    def add(spec: RunSpec) -> None:
        if spec.init_from is not None:
            add(spec.init_from)
        ordered.setdefault(spec.key, spec)

    for path in select(only).values():
        params = {**default_parameters(path), **resolve_parameters(path, profile)}
        for spec in call_plan(plan_module(path).plan, params):
            add(spec)
    return list(ordered.values())


def _train(spec: RunSpec, device: str, *parents_done) -> dict:
    """One run, trained or found in the cache; ``parents_done`` only orders Ray tasks."""
    run = train_cached(spec, progress=False, device=device)
    return {"run": spec.key, "epochs": len([h for h in run.history if h.get("epoch", 0) > 0]),
            "seconds": run.train_seconds, "device": run.history[-1].get("device", "") if run.history else ""}


def _decode_data(specs: list[RunSpec]) -> None:
    """Decode each data set once before the runs start, so parallel workers do not all decode it."""
    from .data import load_dataset
    for data in {s.data for s in specs}:
        load_dataset(data)


def run_local(specs: list[RunSpec], device: str = "auto") -> list[dict]:
    done = []
    for i, spec in enumerate(specs, 1):
        t0 = time.perf_counter()
        done.append(_train(spec, device))
        print(f"[{i}/{len(specs)}] {spec.key}: {time.perf_counter() - t0:.0f} s", flush=True)
    return done


def run_ray(specs: list[RunSpec], address: str | None = None, device: str = "auto", num_cpus: int | None = None) -> list[dict]:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("the ray executor needs Ray: pip install -e '.[cluster]'") from exc
    env = {"EARLYEXIT_ARTIFACTS": str(artifacts_root()), "EARLYEXIT_DATA": str(data_root())}
    env.update({k: v for k, v in os.environ.items() if k.startswith("EARLYEXIT_")})
    init = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
    ray.init(runtime_env={"env_vars": env}, log_to_driver=False, **init)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_gpus=gpus, num_cpus=1)(_train)
        refs: dict[str, object] = {}
        for spec in specs:  # parents come first: a child's argument is its parent's result, so it waits
            parent = [refs[spec.init_from.key]] if spec.init_from is not None else []
            refs[spec.key] = task.remote(spec, device, *parent)
        pending, results, t0 = list(refs.values()), [], time.perf_counter()
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            results += ray.get(ready)
            print(f"[{len(results)}/{len(refs)}] {results[-1]['run']} done ({time.perf_counter() - t0:.0f} s)", flush=True)
        return results
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m earlyexit.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILE_NAMES)} (default cpu)")
    parser.add_argument("--only", help="comma-separated notebook ids, e.g. 00,03")
    parser.add_argument("--executor", default="local", choices=("local", "ray"))
    parser.add_argument("--address", help="a Ray cluster's address (default: start a local Ray instance)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, ...")
    parser.add_argument("--num-cpus", type=int, help="CPUs of a local Ray instance (default: all)")
    args = parser.parse_args(argv)
    try:
        if args.profile not in PROFILE_NAMES:
            raise ConfigError(f"unknown profile {args.profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
        if args.address and args.executor != "ray":
            raise ConfigError("--address needs --executor ray")
        specs = profile_runs(args.profile, args.only)
        print(f"{len(specs)} run(s) of profile {args.profile} into {Path(artifacts_root()).name}/ "
              f"({args.executor} executor)", flush=True)
        _decode_data(specs)
        if args.executor == "ray":
            run_ray(specs, args.address, args.device, args.num_cpus)
        else:
            run_local(specs, args.device)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
