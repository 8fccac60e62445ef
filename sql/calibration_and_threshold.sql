-- Is the score a probability? Reliability bins (mean predicted vs observed rate) and the threshold
-- that keeps precision >= the target, for the day.
SELECT metric, k AS bin, round(value, 3) AS value, support, round(ci_low, 3) AS ci_low, round(ci_high, 3) AS ci_high
FROM relevance_audit
WHERE ds = '${ds}' AND system = 'model' AND segment = 'all'
  AND (metric LIKE 'reliability_%' OR metric IN ('ece', 'brier', 'threshold_for_target_precision', 'recall_at_target_precision'))
ORDER BY metric, k
