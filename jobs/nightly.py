"""nightly: build_pairs -> score (-> retrieve) -> audit for one ds; each step is its own run, and one exit code for
all. `retrieve` (the catalog-wide top-k, `catalog_topk`) runs when audit.retrieval.enabled."""

from __future__ import annotations

import argparse

from jobs.core.job import JobContext, JobResult, run_step

JOB = "nightly"
STEPS = ("build_pairs", "score", "audit")
RETRIEVE = "retrieve"  # between score and audit, when audit.retrieval.enabled


def steps(ctx: JobContext) -> tuple[str, ...]:
    """The nightly's steps for these settings."""
    if not ctx.settings.audit.retrieval.enabled:
        return STEPS
    return ("build_pairs", "score", RETRIEVE, "audit")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("The nightly refresh for one ds: build_pairs, then score, then retrieve "
                          "(audit.retrieval.enabled), then audit; stops at the first failure.")


def run(ctx: JobContext, log=print) -> JobResult:
    results: dict[str, JobResult] = {}
    for step in steps(ctx):
        results[step] = run_step(ctx, step)
        log(f"[{step}] {results[step].summary}")
    scored = results["score"]
    return JobResult(
        rows_in=results["build_pairs"].rows_in,
        rows_out=scored.rows_out,
        rows_rejected=sum(r.rows_rejected for r in results.values()),
        model_version=scored.model_version,
        throughput_per_s=scored.throughput_per_s,
        device=scored.device,
        details={job: {"rows_in": r.rows_in, "rows_out": r.rows_out, "rows_rejected": r.rows_rejected} for job, r in results.items()},
        summary=f"nightly ds={ctx.ds} done: {results['build_pairs'].rows_out} pairs, {scored.rows_out} scored, "
        f"{results['audit'].rows_out} audit rows",
    )
