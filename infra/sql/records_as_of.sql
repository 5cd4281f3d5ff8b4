SELECT s.* FROM (SELECT * EXCEPT (_converge_rank) FROM (
           SELECT *, ROW_NUMBER() OVER (
             PARTITION BY tenant, doc_path
             ORDER BY version DESC, op IN ('REBUILD', 'REPAIR') DESC, is_deleted DESC, content_hash DESC NULLS LAST
           ) AS _converge_rank
           FROM (SELECT * FROM `${project}.${dataset}.records` WHERE version <= as_of)
         ) WHERE _converge_rank = 1 AND NOT is_deleted) AS s CROSS JOIN (SELECT IF(horizon > as_of, ERROR(CONCAT('as-of state of records before its compaction horizon is incomplete: rows superseded before the horizon were pruned (see converge_table_state.compacted_before); ask for an instant at or after it (horizon ', CAST(horizon AS STRING), ')')), 1) AS ok FROM (SELECT MAX(compacted_before) AS horizon FROM `${project}.${dataset}.converge_table_state` WHERE table_name = 'records')) AS g WHERE g.ok = 1
