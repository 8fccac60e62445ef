"""The single CLI: `python -m jobs <job> --conf conf/local.yaml [--ds YYYY-MM-DD] [--set key=value ...]`.

A job's flags are settings: each job module lists the keys it exposes (`FLAGS`), and each setting declares its
flag, meaning and type (relevance.settings), from which the options are built and applied here. `python -m jobs
settings` prints every setting (key, type, default, range, meaning), without Spark.

Also spark-submit-able: `spark-submit jobs/__main__.py <job> ...` (ship the packages with --py-files).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

if __package__ in (None, ""):  # run as a file by spark-submit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.core.config import ConfigError, load_config, set_path  # noqa: E402
from jobs.core.job import JobContext, JobError, run_job  # noqa: E402
from plumbing.errors import one_line  # noqa: E402
from relevance.settings import info_of, range_text, setting_field, setting_rows, settings_from_mapping  # noqa: E402

SETTINGS_COMMAND = "settings"
COMMON_FLAGS = ("warehouse.allow_empty_replace",)  # flags of every job (--allow-empty)


def _job_modules() -> dict:
    from jobs import (
        audit,
        build_pairs,
        click_model,
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
        retrieve,
        score,
        vacuum,
    )

    return {m.JOB: m for m in (generate, generate_scale, import_catalog, import_judgments, import_wands, import_esci,
                               import_ubi, build_pairs, click_model, finetune, score, retrieve, audit, nightly, demo,
                               vacuum)}


def _ds(value: str) -> str:
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a date in YYYY-MM-DD form") from None


def flag_keys(module: Any) -> tuple[str, ...]:
    """The settings a job exposes as flags: its module's FLAGS, then those every job has."""
    return (*getattr(module, "FLAGS", ()), *COMMON_FLAGS)


def _options(kind: Any) -> list[Any]:
    if typing.get_origin(kind) in (types.UnionType, typing.Union):
        return [option for option in typing.get_args(kind) if option is not type(None)]
    return [kind]


def _value_parser(kind: Any, key: str) -> tuple[Callable[[str], Any], list[Any] | None]:
    """(the argparse type, the choices) of a flag setting `kind`: a Literal's values are its choices; a number may
    also be one of its Literal alternatives (`int | "auto"`)."""
    options = _options(kind)
    literals = [value for option in options if typing.get_origin(option) is Literal for value in typing.get_args(option)]
    scalars = [option for option in options if option in (int, float, str)]
    if not scalars and literals:
        return type(literals[0]), literals
    if len(scalars) != 1:
        raise TypeError(f"setting '{key}' cannot be a flag: {kind} is neither a scalar nor a choice")
    scalar = scalars[0]

    def parse(text: str) -> Any:
        return text if text in literals else scalar(text)

    parse.__name__ = scalar.__name__  # argparse's "invalid int value"
    return (parse if literals else scalar), None


def add_flag(parser: argparse.ArgumentParser, key: str) -> None:
    """The option of a setting's flag: help from its meaning, type from its annotation, store_true for a bool."""
    f, kind = setting_field(key)
    info = info_of(f)
    if info is None or info.flag is None:
        raise TypeError(f"setting '{key}' declares no flag")
    if kind is bool:
        parser.add_argument(info.flag, dest=key, action="store_true", default=None,
                            help=f"{info.meaning}: sets {key} to true")
        return
    parse, choices = _value_parser(kind, key)
    default = None if f.default is dataclasses.MISSING else f.default
    limits = range_text(kind, info)
    parser.add_argument(info.flag, dest=key, type=parse, choices=choices, default=None,
                        metavar=None if choices else info.metavar or info.flag.lstrip("-").upper().replace("-", "_"),
                        help=f"{info.meaning}: sets {key} (default {json.dumps(default)}{', ' + limits if limits else ''})")


def apply_flags(cfg: dict, args: argparse.Namespace, keys: Iterable[str]) -> None:
    """Copy the flags given on the command line into the config, before it is made into settings. A section's
    input flags replace one another: naming one unsets the section's other inputs from the config."""
    keys = list(keys)
    given = {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}
    inputs = {key for key in keys if (info := info_of(setting_field(key)[0])) is not None and info.input}
    named = {key.rpartition(".")[0] for key in inputs & set(given)}
    for key in keys:
        if key in given:
            set_path(cfg, key, given[key])
        elif key in inputs and key.rpartition(".")[0] in named:
            set_path(cfg, key, None)


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
                                     "unknown keys and values of the wrong type or out of range are refused")
        for key in flag_keys(module):
            add_flag(job_parser, key)
        if hasattr(module, "add_arguments"):
            module.add_arguments(job_parser)
    sub.add_parser(SETTINGS_COMMAND, help="print every setting: its key, type, default, range and meaning",
                   description="Print every setting of the tree (relevance/settings.py): dotted key, type, default, "
                               "range and meaning. Needs no Spark.")
    return parser


def settings_table() -> str:
    """Every leaf setting, one line each, in aligned columns: key, type, default, range, meaning."""
    rows = [("KEY", "TYPE", "DEFAULT", "RANGE", "MEANING")]
    rows += [(r.key, r.type, r.default, r.range or "-", r.meaning) for r in setting_rows()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[4]]).rstrip()
                     for row in rows)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    modules = _job_modules()
    args = build_parser(modules).parse_args(argv)
    if args.job == SETTINGS_COMMAND:
        print(settings_table())
        return 0
    module = modules[args.job]
    try:
        cfg = load_config(args.conf, args.set)
        apply_flags(cfg, args, flag_keys(module))
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
