-- The judged queries where the model ranks worst today, next to BM25 and the production ranking on
-- the same candidates: start the error analysis here.
SELECT substring(m.segment, 7) AS query_norm, round(m.value, 3) AS model_ndcg_at_10,
       round(b.value, 3) AS bm25_ndcg_at_10, round(m.baseline_value, 3) AS logged_ndcg_at_10
FROM relevance_audit m
LEFT JOIN relevance_audit b
  ON b.ds = m.ds AND b.run_id = m.run_id AND b.segment = m.segment AND b.metric = m.metric AND b.system = 'bm25'
WHERE m.ds = '${ds}' AND m.system = 'model' AND m.segment LIKE 'query=%' AND m.metric = 'ndcg@10'
ORDER BY m.value ASC
LIMIT 20
