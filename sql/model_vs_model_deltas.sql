-- Model-vs-model deltas written by `audit --compare <version>`: the change of each metric with its
-- bootstrap CI and the paired randomization p-value (in `definition`), worst first.
SELECT ds, model_version, baseline AS compared_with, segment, metric, round(value, 4) AS delta,
       round(ci_low, 4) AS ci_low, round(ci_high, 4) AS ci_high, support AS queries, definition
FROM relevance_audit
WHERE metric LIKE 'delta_%' AND segment = 'all'
ORDER BY ds DESC, value ASC
