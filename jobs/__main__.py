"""The single CLI: `python -m jobs <job> --conf conf/local.yaml [--ds YYYY-MM-DD] [--set key=value ...]`.

Also spark-submit-able: `spark-submit jobs/__main__.py <job> ...` (ship the packages with --py-files).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by spark-submit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.core.config import ConfigError, load_config, set_path  # noqa: E402
from jobs.core.job import JobContext, JobError, run_job  # noqa: E402
from plumbing.errors import one_line  # noqa: E402
from relevance.settings import settings_from_mapping  # noqa: E402


def _job_modules() -> dict:
    from jobs import (
        audit,
        build_pairs,
        demo,
        finetune,
        generate,
        generate_scale,
        import_catalog,
        import_esci,
        import_judgments,
        import_ubi,
        import_wands,
        nightly,
        score,
        vacuum,
    )

    return {m.JOB: m for m in (generate, generate_scale, import_catalog, import_judgments, import_wands, import_esci,
                               import_ubi, build_pairs, finetune, score, audit, nightly, demo, vacuum)}


def _ds(value: str) -> str:
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a date in YYYY-MM-DD form") from None


def build_parser(modules: dict) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs", description="Offline query-product relevance scoring on Spark.")
    sub = parser.add_subparsers(dest="job", required=True, metavar="JOB")
    for name, module in modules.items():
        job_parser = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        job_parser.add_argument("--conf", default="conf/local.yaml", help="config file (default: conf/local.yaml)")
        needs_ds = getattr(module, "NEEDS_DS", True) and name != "finetune"
        job_parser.add_argument("--ds", type=_ds, required=needs_ds, help="date partition to process, YYYY-MM-DD")
        job_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                                help="override a config value, e.g. --set scoring.device=cpu (repeatable); "
                                     "unknown keys and values of the wrong type are refused")
        job_parser.add_argument("--allow-empty", dest="allow_empty", action="store_true",
                                help="allow replacing a table that holds rows with none (refused by default)")
        module.add_arguments(job_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    modules = _job_modules()
    args = build_parser(modules).parse_args(argv)
    module = modules[args.job]
    try:
        cfg = load_config(args.conf, args.set)
        if args.allow_empty:
            set_path(cfg, "warehouse.allow_empty_replace", True)
        if hasattr(module, "apply_arguments"):
            module.apply_arguments(cfg, args)
        settings = settings_from_mapping(cfg)  # checked before Spark starts
        if hasattr(module, "check_settings"):
            module.check_settings(settings)  # what this job needs besides (an input path, ...)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from jobs.core.spark import build_spark, open_warehouse

    try:
        spark = build_spark(settings)
        warehouse = open_warehouse(spark, settings)
        ctx = JobContext(job=args.job, settings=settings, spark=spark, warehouse=warehouse, ds=args.ds)
        result = run_job(ctx, module.run)
    except (JobError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # never a stack trace as the message: one line, exit 1
        print(f"error: {args.job} failed: {one_line(exc)}", file=sys.stderr)
        return 1
    print(result.summary)
    print(f"[{args.job}] run {ctx.run_id}: in {result.rows_in}, out {result.rows_out}, rejected {result.rows_rejected}; "
          f"tables under {warehouse.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
