"""The ``qlora-sweep`` command line: ``validate``, ``run``, ``resume``, ``status``,
``tensorboard``, ``report``, ``promote``, ``generate`` and ``serve``.

User errors print one message and exit non-zero without a traceback; nothing heavy (torch,
Ray) is imported for ``--help`` or for schema validation.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .errors import INTERRUPTED_EXIT, UserError


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qlora-sweep")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qlora-sweep",
        description="Ray-distributed QLoRA hyperparameter sweeps: Optuna TPE proposes, ASHA "
                    "stops the weak, the best adapter is named.")
    parser.add_argument("--version", action="version", version=f"qlora-sweep {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (("validate", "check a sweep config and its data and model; Ray never "
                                    "starts"),
                       ("run", "run a sweep (local Ray unless --address / RAY_ADDRESS)")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("config", help="sweep YAML file, e.g. examples/demo_cpu.yaml")
        p.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                       help="dotted overrides, e.g. search.num_trials=16 training.max_steps=300 "
                            "(quote values with spaces or braces: 'search_space.lora.r={choice: "
                            "[8, 16]}')")
        p.add_argument("--address", default=None,
                       help=("Ray cluster to join ('auto', or ray://host:port); default: "
                             "RAY_ADDRESS, else a local Ray bound to 127.0.0.1" if name == "run"
                             else "the Ray cluster the sweep will run on; without it (and "
                             "without RAY_ADDRESS) a trial's resources must fit this machine"))
    text = ("finish a sweep whose driver was stopped (Ctrl-C) or died: finished trials are "
            "kept, unfinished ones go on from their checkpoints, the Optuna study and ASHA's "
            "rungs carry over")
    p = sub.add_parser("resume", help=text, description=(
        f"{text}. Resuming loads the pickles Ray and the Trainer wrote into the sweep dir "
        f"(tuner.pkl, searcher-state*.pkl, optimizer.pt, ...); a pickle can run code, so resume "
        f"only sweep dirs you or someone you trust wrote. status, report, tensorboard, promote "
        f"and generate never load them."))
    p.add_argument("sweep_dir", help="the sweep dir printed by `qlora-sweep run`")
    p.add_argument("overrides", nargs="*", default=[], metavar="search.num_trials=N",
                   help="add trials to the sweep (Optuna): its study goes on from the trials "
                        "it has; nothing else may change (the search space with "
                        "--allow-space-change)")
    p.add_argument("--allow-space-change", action="store_true",
                   help="accept search_space.* overrides: new trials come from a new Optuna "
                        "study, seeded with the earlier trials that lie inside the new space; "
                        "results from the two spaces are no longer strictly comparable")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (as for run); default: RAY_ADDRESS, else local Ray")
    p.add_argument("--force", action="store_true",
                   help="resume a sweep that still looks running (its driver's heartbeat is "
                        "fresh) because you know its driver is gone; without it, a driver on "
                        "another host counts as gone once its heartbeat is stale")
    p = sub.add_parser("promote", help="bundle the winning adapter with a model card and push "
                       "it to the Hub if it beats the adapter already there",
                       description="Write SWEEP_DIR/promoted (adapter, tokenizer, model card, "
                       "sweep_summary.json); with --repo-id (or promote.repo_id in the sweep), "
                       "compare it with the adapter in the repo on the sweep's eval data and "
                       "push it in one commit only if it wins. The token comes from HF_TOKEN or "
                       "`hf auth login`; HF_ENDPOINT is honoured.")
    p.add_argument("sweep_dir", help="the sweep dir printed by `qlora-sweep run`")
    p.add_argument("--repo-id", default=None, help="Hub model repo, e.g. acme/pricing-qlora")
    p.add_argument("--address", default=None,
                   help="Ray cluster to evaluate champion and challenger on (e.g. one with "
                        "GPUs: 'auto', or ray://host:port), as one task with the sweep's "
                        "per-trial resources; the adapters and eval rows go with it. Default: "
                        "this process")
    p.add_argument("--private", action="store_true", default=None,
                   help="create the repo as private when it does not exist")
    p.add_argument("--min-improvement", default=None, metavar="X",
                   help="how much the winner must beat the current adapter: 0.02 (absolute) or "
                        "2%% (relative); default: promote.min_improvement of the sweep, else 0")
    p.add_argument("--force", action="store_true",
                   help="push even if the current adapter is better or for another base model")
    p.add_argument("--dry-run", action="store_true",
                   help="do everything (bundle, compare, verdict) except the push")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load the repo's current adapter even if it is stored only as a pickle "
                        "(adapter_model.bin), which can run code; only for repos you trust")
    text = ("complete prompts with an adapter (a sweep dir's winner, a promoted bundle, a "
            "sweep's checkpoint folder or a Hub repo) on its base model, in its training prompt format; the model is loaded "
            "once. One prompt: the completion is printed; several (or --file): one JSON line "
            "{prompt, completion} each")
    p = sub.add_parser("generate", help=text, description=text)
    p.add_argument("adapter", help="a sweep dir (its promoted bundle, else its winner), "
                   "SWEEP_DIR/promoted, a checkpoint folder, or a Hub repo id")
    p.add_argument("prompts", nargs="*", default=[], metavar="prompt",
                   help="prompts, as a user would write them")
    p.add_argument("--file", default=None, metavar="PROMPTS.jsonl",
                   help='more prompts: a JSONL file, one {"prompt": ...} per line')
    p.add_argument("--revision", default=None, help="Hub revision: branch, tag or commit")
    p.add_argument("--base-model", default=None,
                   help="load the adapter on this base model instead of the one it names")
    p.add_argument("--max-new-tokens", type=int, default=64,
                   help="the most tokens to generate (default 64)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load an adapter stored only as a pickle (adapter_model.bin), which can "
                        "run code; only for adapters you trust")
    text = ("serve adapters and their base model behind an OpenAI-compatible HTTP API "
            "(/v1/models, /v1/completions, /v1/chat/completions) on Ray Serve; the base model "
            "is loaded once, as the sweep's trials load it, and concurrent requests for "
            "different adapters are answered in one batch")
    p = sub.add_parser("serve", help=text, description=(
        f"{text}. Prints one line with its URL once it answers; Ctrl-C or SIGTERM stops it. "
        f"A request's 'model' picks what answers: 'base', or an adapter's name."))
    p.add_argument("source", help="the adapter to serve: a sweep dir (its promoted bundle, else "
                   "its winner), a promoted bundle, a checkpoint folder, or a Hub repo id")
    p.add_argument("--name", default="adapter",
                   help="the name SOURCE is served as (the request's 'model'; default adapter)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=SOURCE",
                   help="one more adapter on the same base model, e.g. "
                        "--adapter challenger=sweeps/other (repeat it for more)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one)")
    p.add_argument("--max-tokens-limit", type=int, default=256, metavar="N",
                   help="the most tokens one request may ask for (default 256)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load adapters stored only as a pickle (adapter_model.bin), which can "
                        "run code; only for adapters you trust")
    text = ("leaderboard of a running or finished sweep, read from "
                       "its sweep dir (works from any terminal or machine that sees it)")
    p = sub.add_parser("status", help=text, description=text)
    p.add_argument("sweep_dir", help="the sweep dir printed by `qlora-sweep run`")
    p.add_argument("--watch", action="store_true", help="refresh until the sweep ends")
    p.add_argument("--interval", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between refreshes with --watch (default 10)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="table for people (default); json or csv for scripts")
    text = ("start TensorBoard on a sweep and print its URL")
    p = sub.add_parser("tensorboard", help=text, description=text)
    p.add_argument("sweep_dir", help="the sweep dir printed by `qlora-sweep run`")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=6006, help="port (default 6006; 0: any free one)")
    text = ("write SWEEP_DIR/report/report.html (opens offline) and "
                       "its PNGs: curves, Optuna history, importances, parallel coordinates, "
                       "slices, leaderboard")
    p = sub.add_parser("report", help=text, description=text)
    p.add_argument("sweep_dir", help="the sweep dir printed by `qlora-sweep run`")
    return parser


def _warn_untested_versions() -> None:
    """Once, at the commands that start work: libraries outside the tested versions."""
    from trainables.compat.versions import TESTED, untested

    lines = untested()
    if lines:
        pins = " ".join(f"'{name}=={TESTED[name]}.*'" for name in TESTED
                        if any(line.startswith(f"{name} ") for line in lines))
        logging.getLogger("orchestrator.cli").warning(
            "warning: qlora-sweep was tested with other versions of %s. It may work; if a trial "
            "fails inside one of them, install the tested ones: pip install %s",
            ", ".join(lines), pins)


def _promote(args) -> int:
    from .promotion.promote import promote

    started = False
    if args.address:  # the comparison runs there, as one task with a trial's resources
        from .run.ray_session import init_ray, quiet_ray_output

        quiet_ray_output()
        started = init_ray(args.address)
    try:
        promote(args.sweep_dir, repo_id=args.repo_id, private=args.private,
                min_improvement=args.min_improvement, force=args.force, dry_run=args.dry_run,
                allow_pickle=args.allow_pickle)
    finally:
        if started:
            import ray

            ray.shutdown()
    return 0


def _generate(args) -> int:
    from .promotion.generation import run_generate

    import json

    from .promotion.generation import read_prompts

    prompts = read_prompts(args.prompts, args.file)
    answers = run_generate(args.adapter, prompts, revision=args.revision,
                           base_model=args.base_model, max_new_tokens=args.max_new_tokens,
                           allow_pickle=args.allow_pickle)
    if len(prompts) == 1 and not args.file:
        print(answers[0])
    else:
        for prompt, answer in zip(prompts, answers):
            print(json.dumps({"prompt": prompt, "completion": answer}))
    return 0


def _serve(args) -> int:
    from .serving.command import main_args

    _warn_untested_versions()
    return main_args(args)


def _status(args) -> int:
    from .observe.status import show_status

    return show_status(args.sweep_dir, fmt=args.format, watch=args.watch, interval=args.interval)


def _tensorboard(args) -> int:
    from .observe.dashboard import serve

    return serve(args.sweep_dir, host=args.host, port=args.port)


def _report(args) -> int:
    from .observe.report import write_report

    print(f"writing the report of {args.sweep_dir} ...", flush=True)
    path = write_report(args.sweep_dir)
    print(f"report: {path}")
    print(f"open it: file://{path}")
    return 0


def _resume(args) -> int:
    from .run.resume import resume_sweep

    _warn_untested_versions()
    return resume_sweep(args.sweep_dir, args.overrides, address=args.address,
                        allow_space_change=args.allow_space_change, force=args.force)


def _validate(args) -> int:
    from .config.loading import load_config
    from .config.preflight import preflight_report, require_local_fit

    _warn_untested_versions()
    cfg, derived = load_config(args.config, args.overrides)
    require_local_fit(cfg, derived, args.address)
    spec, fit = preflight_report(cfg, derived)
    space = derived.domains
    print(f"{args.config}: valid")
    print(f"  model:   {cfg.model.name_or_path} ({cfg.model.quantization.mode})")
    print(f"  data:    {spec.data['train']['path']} (format: {spec.data_format})")
    trials = f"{cfg.search.num_trials} trial{'s' if cfg.search.num_trials != 1 else ''}"
    print(f"  search:  {cfg.search.algorithm}, {trials}, "
          f"{cfg.search.metric} ({derived.mode}); scheduler: {cfg.scheduler.type}")
    if derived.budget is not None:
        print(f"  {derived.budget.describe()}")
    print(f"  metrics: {', '.join(cfg.reported_metrics)}")
    if derived.auto_space is not None:
        from .config.auto_space import explain

        for line in explain(derived.auto_space, space, cfg.search.initial_points):
            print(f"  {line}")
    else:
        for name, dom in space.items():
            print(f"  {name}: {dom.describe()}")
    for key, modules in spec.target_groups.items():
        print(f"  targets {key}: {', '.join(modules)}")
    for line in fit.table:
        print(f"  {line}")
    for warning in fit.warnings:
        print(f"warning: {warning}")
    return 0


def _run(args) -> int:
    from .config.loading import load_config
    from .run.sweep import run_sweep

    _warn_untested_versions()
    cfg, derived = load_config(args.config, args.overrides)
    return run_sweep(cfg, derived, address=args.address)


def _console() -> None:
    """What the project's modules log (``orchestrator``, ``trainables``, ``search_spaces``)
    reaches the console as plain lines on stdout: they log, and only this layer decides where
    it goes."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("orchestrator", "trainables", "search_spaces"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Progress reaches a log file or a pipe line by line, as it does a terminal.
    sys.stdout.reconfigure(line_buffering=True)
    _console()
    try:
        return {"validate": _validate, "run": _run, "promote": _promote,
                "generate": _generate, "serve": _serve, "status": _status,
                "tensorboard": _tensorboard, "report": _report,
                "resume": _resume}[args.command](args)
    except UserError as err:
        print(err.render(), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except BrokenPipeError:
        # The reader went away (`status --format csv | head`): stop quietly. Python's own
        # flush at exit would fail again, so stdout is pointed at nothing first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
