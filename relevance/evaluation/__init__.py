"""Evaluation: ranking and classifier metrics, intervals, the baselines, audit rows and the report."""
