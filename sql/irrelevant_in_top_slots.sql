-- Products users were shown in the top 3 slots that the model grades irrelevant, most-shown first.
SELECT r.query_norm, r.product_id, round(r.score, 3) AS score, p.mean_position, p.impressions, p.clicks,
       substring(p.product_text, 1, 60) AS product
FROM relevance r JOIN pairs p USING (ds, query_norm, product_id)
WHERE r.ds = '${ds}' AND p.mean_position <= 3 AND r.grade_pred = 0
ORDER BY p.impressions DESC, r.score
LIMIT 20
