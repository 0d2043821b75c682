"""Scale: a sweep of many short trials on local Ray, wall time vs the theoretical minimum.

    python benchmarks/scale.py [--trials 1000] [--seconds 0.5] [--cpu 1] [--repeats 3]

The trials are trivial (each sleeps ``--seconds`` and reports one evaluation with a
checkpoint), but everything around them is the sweep's own: the Tuner that ``run`` builds
(``orchestrator/run/tuner.py``: random search, Ray's CSV and JSON loggers, our TensorBoard
runs, ``status.json``, the disk guard, checkpoint retention, actor reuse), then the leaderboard and
``best.json``. With ``--cpu`` per trial, ``cores / --cpu`` trials run at once on this
machine's Ray (1: one per core, as Ray's release test runs them; 0.25: four per core, where
Ray's per-trial work competes with the trials for the cores); the theoretical minimum is
trials × seconds / concurrency. The same trials under a plain Ray Tune script show what Ray
itself costs here. Ray's own release test of 10,000
trials accepts 28 % over its minimum.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import record, spread, table  # noqa: E402

STEPS = 10


def trivial(config: dict, *, seconds: float) -> None:
    """A trial that takes ``seconds`` and reports once, with a small checkpoint."""
    import json
    import os

    from ray import tune

    time.sleep(seconds)
    folder = tempfile.mkdtemp(prefix="scale-ckpt-")
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(config, f)
    loss = 1.0 + float(config["training.learning_rate"]) * 100
    tune.report({"step": STEPS, "eval_loss": loss, "train_loss": loss},
                checkpoint=tune.Checkpoint.from_directory(folder))
    shutil.rmtree(folder, ignore_errors=True)


def one_sweep(root: Path, name: str, *, trials: int, seconds: float, cpu: float) -> float:
    """Wall time of ``fit`` + leaderboard of one sweep (Ray already started)."""
    import yaml
    from ray import tune

    from orchestrator.run.cluster import max_concurrent
    from orchestrator.config.loading import load_config
    from orchestrator.config.preflight import preflight
    from orchestrator.run.runner import finish
    from orchestrator.run.tuner import build_tuner

    config = root / f"{name}.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"name_or_path": "builtin:tiny-llama"},
        "data": {"train": {"path": str(Path(__file__).parent.parent / "examples/data/pricing_train.jsonl")}},
        "training": {"max_steps": STEPS, "eval_steps": STEPS},
        "search_space": {"training.learning_rate": {"loguniform": [1e-5, 1e-2]}},
        "search": {"algorithm": "random", "num_trials": trials},
        "scheduler": {"type": "none"},
        "resources": {"cpu": cpu},
        "storage": {"path": str(root), "name": name},
    }))
    cfg, derived = load_config(str(config))
    spec = preflight(cfg, derived)
    sweep_dir = root / name
    sweep_dir.mkdir()
    tuner = build_tuner(cfg, derived, spec, storage_path=str(root), name=name,
                        sweep_dir=str(sweep_dir), concurrency=max_concurrent(cfg),
                        trainable=tune.with_parameters(trivial, seconds=seconds))
    start = time.perf_counter()
    results = tuner.fit()
    code = finish(cfg, derived, results, sweep_dir=sweep_dir,
                  baseline={cfg.search.metric: float("nan")})  # no baseline evaluation here
    elapsed = time.perf_counter() - start
    assert code == 0 and len(results) == trials and not results.errors
    return elapsed


def plain_ray(root: Path, name: str, *, trials: int, seconds: float, cpu: float) -> float:
    """The same trials under a plain Ray Tune script (its default loggers and console, actor
    reuse as the sweep has it): what Ray itself costs on this machine."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trivial, seconds=seconds), {"cpu": cpu}),
        param_space={"training.learning_rate": tune.loguniform(1e-5, 1e-2)},
        tune_config=tune.TuneConfig(num_samples=trials, reuse_actors=True, metric="eval_loss",
                                    mode="min"),
        # Ray's default loggers, named because this process turned the automatic ones off.
        run_config=tune.RunConfig(storage_path=str(root), name=name, verbose=0, callbacks=[
            CSVLoggerCallback(), JsonLoggerCallback(), TBXLoggerCallback()]))
    start = time.perf_counter()
    results = tuner.fit()
    elapsed = time.perf_counter() - start
    assert len(results) == trials and not results.errors
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--cpu", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import ray

    from orchestrator.run.ray_session import init_ray, quiet_ray_output

    quiet_ray_output()
    root = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    walls, plain = [], []
    kw = {"trials": args.trials, "seconds": args.seconds, "cpu": args.cpu}

    def fresh_ray(measure, *a, **k) -> float:
        """Each sweep on a Ray of its own, as each `run` starts one."""
        init_ray(None)
        try:
            return measure(*a, **k)
        finally:
            ray.shutdown()

    init_ray(None)
    concurrency = int(ray.cluster_resources()["CPU"] / args.cpu)
    ray.shutdown()
    minimum = args.trials * args.seconds / concurrency
    try:
        for i in range(args.repeats):
            plain.append(fresh_ray(plain_ray, root, f"plain{i}", **kw))
            walls.append(fresh_ray(one_sweep, root, f"scale{i}", **kw))
            print(f"repeat {i + 1}: plain Ray Tune {plain[-1]:.1f} s, sweep {walls[-1]:.1f} s "
                  f"(minimum {minimum:.1f} s)", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    body = table(["", "seconds, median (min-max)"], [
        [f"theoretical minimum ({args.trials} × {args.seconds} s / {concurrency})",
         f"{minimum:.1f}"],
        ["plain Ray Tune script, same trials", spread(plain)],
        ["qlora-sweep's orchestration (fit, leaderboard, best.json)", spread(walls)],
        ["**qlora-sweep / minimum**", f"**{spread([w / minimum for w in walls])}**"],
        ["plain Ray Tune / minimum", spread([p / minimum for p in plain])],
        ["**qlora-sweep / plain Ray Tune**",
         f"**{spread([w / p for w, p in zip(walls, plain)])}**"]])
    body += (f"\n\n{args.trials} trivial trials per sweep, each {args.seconds} s and one "
             f"report with a checkpoint, {concurrency} at a time on local Ray (actor reuse in "
             f"both); the sweep's own Tuner, callbacks and loggers vs Ray Tune's defaults; "
             f"{args.repeats} repetitions, alternating, each on a new local Ray.")
    record(f"Scale: {args.trials} short trials", body)


if __name__ == "__main__":
    main()
