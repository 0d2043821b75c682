"""The ``qlora-sweep`` command line: ``validate`` and ``run``.

User errors print one message and exit non-zero without a traceback; nothing heavy (torch,
Ray) is imported for ``--help`` or for schema validation.
"""

from __future__ import annotations

import argparse
import sys

from .errors import UserError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qlora-sweep",
        description="Ray-distributed QLoRA hyperparameter sweeps: Optuna TPE proposes, ASHA "
                    "stops the weak, the best adapter is named.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("validate", "check a sweep config and its data and model; Ray never "
                                    "starts"),
                       ("run", "run a sweep (local Ray unless --address / RAY_ADDRESS)")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("config", help="sweep YAML file, e.g. examples/demo_cpu.yaml")
        p.add_argument("overrides", nargs="*", metavar="key=value",
                       help="dotted overrides, e.g. search.num_trials=16 training.max_steps=300")
        if name == "run":
            p.add_argument("--address", default=None,
                           help="Ray cluster to join ('auto', or ray://host:port); default: "
                                "RAY_ADDRESS, else a local Ray bound to 127.0.0.1")
    return parser


def _validate(args) -> int:
    from .loading import load_config
    from .sweep import preflight

    cfg, derived = load_config(args.config, args.overrides)
    settings = preflight(cfg, derived)
    space = derived["domains"]
    print(f"{args.config}: valid")
    print(f"  model:   {cfg.model.name_or_path} ({cfg.model.quantization.mode})")
    print(f"  data:    {settings['data']['train']['path']} (format: {settings['data_format']})")
    print(f"  search:  {cfg.search.algorithm}, {cfg.search.num_trials} trials, "
          f"{cfg.search.metric} ({derived['mode']}); scheduler: {cfg.scheduler.type}")
    for name, dom in space.items():
        print(f"  {name}: {dom.describe()}")
    for key, modules in settings["target_groups"].items():
        print(f"  targets {key}: {', '.join(modules)}")
    return 0


def _run(args) -> int:
    from .loading import load_config
    from .sweep import run_sweep

    cfg, derived = load_config(args.config, args.overrides)
    return run_sweep(cfg, derived, address=args.address)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"validate": _validate, "run": _run}[args.command](args)
    except UserError as err:
        print(err.render(), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
