"""Evaluation: what the audit and fine-tuning measure, and how the audit reports it.

ranking (per-query ranking metrics), classifier (threshold and calibration metrics of judged pairs),
intervals (Wilson, bootstrap, randomization test), pair_metrics (classifier metrics for many bootstrap
resamples at once), baselines (BM25, zero-shot), held_out (the judged candidates an audit evaluates),
audit_rows (the audit's rows, curves and segments), compare (against another model version, the
regression gate), summary (the text summary, Markdown report, thresholds document), report_html.
"""
