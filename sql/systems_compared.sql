-- The model against its baselines (BM25, zero-shot base model, logged production ranking) on the
-- same held-out judged queries, one row per metric and segment.
SELECT segment, metric,
       round(max(CASE WHEN system = 'model' THEN value END), 3)           AS model,
       round(max(CASE WHEN system = 'bm25' THEN value END), 3)            AS bm25,
       round(max(CASE WHEN system = 'zero_shot' THEN value END), 3)       AS zero_shot,
       round(max(CASE WHEN system = 'logged_position' THEN value END), 3) AS logged_position,
       max(CASE WHEN system = 'model' THEN support END)                   AS support
FROM relevance_audit
WHERE ds = '${ds}'
  AND metric IN ('ndcg@10', 'precision@10', 'recall@10', 'mrr', 'roc_auc', 'average_precision')
  AND segment IN ('all', 'head', 'torso', 'tail')
GROUP BY segment, metric
ORDER BY segment, metric
