"""nightly: build_pairs -> score -> audit for one ds; each step is its own run, and one exit code for all."""

from __future__ import annotations

import argparse

from jobs import audit, build_pairs, score
from jobs.core.job import JobContext, JobResult, run_job

JOB = "nightly"
STEPS = (build_pairs, score, audit)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "The nightly refresh for one ds: build_pairs, then score, then audit; stops at the first failure."


def run(ctx: JobContext, log=print) -> JobResult:
    results: dict[str, JobResult] = {}
    for step in STEPS:
        child = ctx.child(step.JOB)
        results[step.JOB] = run_job(child, step.run)
        log(f"[{step.JOB}] {results[step.JOB].summary}")
    scored = results[score.JOB]
    return JobResult(
        rows_in=results[build_pairs.JOB].rows_in,
        rows_out=scored.rows_out,
        rows_rejected=sum(r.rows_rejected for r in results.values()),
        model_version=scored.model_version,
        throughput_per_s=scored.throughput_per_s,
        device=scored.device,
        details={job: {"rows_in": r.rows_in, "rows_out": r.rows_out, "rows_rejected": r.rows_rejected} for job, r in results.items()},
        summary=f"nightly ds={ctx.ds} done: {results[build_pairs.JOB].rows_out} pairs, {scored.rows_out} scored, "
        f"{results[audit.JOB].rows_out} audit rows",
    )
