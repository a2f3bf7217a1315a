"""Command line: ``python -m include.preference <command>``.

Commands:
    services up|down|status   the local S3, MLflow and Airflow (make up / down / status), either profile
    demo                      start services, run the DAG chain through Airflow, print a summary
    land                      land one day's raw partitions directly (operators, debugging)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path


def _services(args: argparse.Namespace) -> int:
    from include.preference.services import ServiceManager, runtime_from_env

    if args.profile:
        os.environ["PREFERENCE_PROFILE"] = args.profile
    runtime = runtime_from_env()
    manager = ServiceManager(runtime)
    names = tuple(args.only.split(",")) if args.only else runtime.services
    unknown = sorted(set(names) - set(runtime.services))
    if unknown:
        print(
            f"unknown service(s) {', '.join(unknown)} in the {runtime.profile} profile: {', '.join(runtime.services)}"
        )
        return 2
    if args.action == "up":
        manager.up(names)
    elif args.action == "down":
        manager.down(names if args.only else None)
    report = manager.status()
    for name, info in report.items():
        state = "healthy" if info["healthy"] else ("running, not healthy" if info["pid"] else "stopped")
        print(f"{name:14s} {state:22s} pid={info['pid'] or '-':<8} {info['url']}  log: {info['log']}")
    if args.action == "status" or args.action == "up":
        print(f"login: admin / {runtime.admin_password} (Airflow UI {runtime.airflow_url})")
    wanted = [n for n in names if n in report]
    if args.action == "up" and not all(report[n]["healthy"] for n in wanted):
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from include.preference.demo import demo_environment, format_summary, online_retail_sample, run_demo
    from include.preference.services import runtime_from_env

    if args.profile:
        os.environ["PREFERENCE_PROFILE"] = args.profile
    # Services started by the demo (and their tasks) inherit this environment.
    for name, value in demo_environment().items():
        os.environ.setdefault(name, value)
    runtime = runtime_from_env()
    end = dt.date.fromisoformat(args.end) if args.end else None
    sample = None if args.skip_online_retail else online_retail_sample()
    result = run_demo(runtime, days=args.days, end=end, online_retail=sample)
    print(format_summary(runtime, result))
    return 0 if result.ok else 1


def _land(args: argparse.Namespace) -> int:
    from include.preference import tasks
    from include.preference.services import runtime_from_env

    source, input_path = args.source, args.input or args.mapping or ""
    if args.mapping:
        if args.source not in ("synthetic", "mapped"):
            raise SystemExit(f"--mapping lands the 'mapped' source, not --source {args.source}")
        source = "mapped"
    elif args.input and source == "synthetic":
        raise SystemExit("--input needs a file source: --source online_retail, rees46 (or --mapping FILE)")
    os.environ.update({k: v for k, v in runtime_from_env().client_env().items() if k not in os.environ})
    # The DAG's task, as it runs in Airflow: a local path or an s3:// URI in the lake.
    result = tasks.land_raw_data(
        dt.date.fromisoformat(args.date),
        run_id=args.run_id,
        source=source,
        input_path=input_path,
        date_order=args.date_order,
    )
    print(json.dumps(result, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import tempfile

    from include.preference.evaluation.protocol import Protocol, evaluate, write_report

    if not args.input.is_file():
        raise SystemExit(f"--input {args.input}: no such file")
    for option in ("horizon_days", "k", "training_anchors", "anchor_step_days", "epochs", "folds", "fold_step_days"):
        if getattr(args, option) < 1:
            raise SystemExit(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    try:
        cutoffs = tuple(dt.date.fromisoformat(c.strip()) for c in args.cutoffs.split(",") if c.strip())
    except ValueError as error:
        raise SystemExit(
            f"--cutoffs {args.cutoffs!r}: expected dates such as 2011-08-10,2011-09-09 ({error})"
        ) from None
    if args.cutoff is None and not cutoffs:
        raise SystemExit("give --cutoff (and optionally --cutoffs), or --cutoffs")
    protocol = Protocol(
        args.source,
        str(args.input),
        args.cutoff or max(cutoffs),
        args.horizon_days,
        args.k,
        training_anchors=args.training_anchors,
        anchor_step_days=args.anchor_step_days,
        epochs=args.epochs,
        cutoffs=cutoffs,
        folds=args.folds,
        fold_step_days=args.fold_step_days,
    )
    from include.preference.config import load_settings
    from include.preference.storage import ObjectStore

    store = ObjectStore(load_settings().s3)
    store.check()
    with tempfile.TemporaryDirectory(prefix="preference-evaluate-") as scratch:
        report = evaluate(protocol, store, args.work_dir or Path(scratch))
    write_report(report, args.output)
    summary = {
        "n_eval_customers": report["n_eval_customers"],
        "model": report["model"],
        "threshold_metrics": report["threshold_metrics"],
        **report["baselines"],
        "pooled": report["pooled"],
    }
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m include.preference", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    services = commands.add_parser("services", help="start, stop or inspect the embedded services")
    services.add_argument("action", choices=["up", "down", "status"])
    services.add_argument("--only", help="comma-separated subset of the profile's services (see status)")
    services.add_argument(
        "--profile",
        choices=["embedded", "production"],
        help="embedded (SQLite, LocalExecutor; the default) or production (PostgreSQL, Celery + Redis, "
        "workers for the default and gpu queues); default: PREFERENCE_PROFILE",
    )
    services.set_defaults(func=_services)

    demo = commands.add_parser("demo", help="run the DAG chain through Airflow and summarise")
    demo.add_argument("--days", type=int, default=6, help="consecutive days to run (default 6)")
    demo.add_argument("--end", help="last logical date (default: yesterday, UTC)")
    demo.add_argument("--profile", choices=["embedded", "production"], help="default: PREFERENCE_PROFILE")
    demo.add_argument(
        "--skip-online-retail", action="store_true", help="only the synthetic days (no evaluate on Online Retail)"
    )
    demo.set_defaults(func=_demo)

    land = commands.add_parser("land", help="land one day's raw partitions (without Airflow)")
    land.add_argument("--date", required=True)
    land.add_argument("--source", default="synthetic", help="synthetic, online_retail, rees46 or mapped")
    inputs = land.add_mutually_exclusive_group()
    inputs.add_argument("--input", help="the file a file source reads (local path or s3:// URI)")
    inputs.add_argument("--mapping", help="a mapping file (YAML) of the mapped source; implies --source mapped")
    land.add_argument(
        "--date-order",
        choices=["day_first", "month_first"],
        help="how to read numeric dates (03/04/2011) in a file whose dates cannot tell "
        "(default: PREFERENCE_DATE_ORDER)",
    )
    land.add_argument("--run-id", default="manual__cli")
    land.set_defaults(func=_land)

    evaluate = commands.add_parser(
        "evaluate", help="temporal-holdout evaluation of the model and the baselines on a file (JSON report)"
    )
    evaluate.add_argument("--source", required=True, choices=["online_retail", "rees46"])
    evaluate.add_argument("--input", required=True, type=Path, help="the CSV file (.csv or .csv.gz)")
    evaluate.add_argument(
        "--cutoff", type=dt.date.fromisoformat, default=None, help="last day of history (the report's main cutoff)"
    )
    evaluate.add_argument(
        "--cutoffs",
        default="",
        help="rolling origin: the cutoffs to evaluate, comma-separated (default: --cutoff and --folds - 1 earlier "
        "ones --fold-step-days apart); without --cutoff the latest is the main one",
    )
    evaluate.add_argument("--folds", type=int, default=3, help="cutoffs when --cutoffs is not given (default 3)")
    evaluate.add_argument("--fold-step-days", type=int, default=30, help="days between default cutoffs (default 30)")
    evaluate.add_argument("--horizon-days", required=True, type=int, help="length of the window after the cutoff")
    evaluate.add_argument("--k", type=int, default=10, help="list length for the ranking metrics")
    evaluate.add_argument("--output", required=True, type=Path, help="where to write the JSON report")
    evaluate.add_argument("--work-dir", type=Path, default=None, help="scratch (default: a temporary folder)")
    evaluate.add_argument("--training-anchors", type=int, default=3, help="training anchors (default 3)")
    evaluate.add_argument("--anchor-step-days", type=int, default=30, help="days between anchors (default 30)")
    evaluate.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    evaluate.set_defaults(func=_evaluate)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("botocore", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from include.preference.errors import PreferenceError

    try:
        return int(args.func(args))
    except PreferenceError as error:
        # The project's own refusals (bad input, configuration) are messages, not tracebacks.
        print(f"{parser.prog} {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
