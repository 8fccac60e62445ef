-- Model quality over the nightly runs: nDCG@10 and the share of top-10 impressions the model calls
-- irrelevant, per day (the latest audit run of each day is what the partition holds).
SELECT ds, model_version,
       round(max(CASE WHEN metric = 'ndcg@10' AND system = 'model' THEN value END), 3)                        AS ndcg_at_10,
       round(max(CASE WHEN metric = 'irrelevant_impression_share@10' AND system = 'model' THEN value END), 4) AS irrelevant_top10_share
FROM relevance_audit
WHERE segment = 'all'
GROUP BY ds, model_version
ORDER BY ds
