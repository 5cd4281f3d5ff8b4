SELECT * EXCEPT (_converge_rank) FROM (
           SELECT *, ROW_NUMBER() OVER (
             PARTITION BY tenant, doc_path
             ORDER BY version DESC, op IN ('REBUILD', 'REPAIR') DESC, is_deleted DESC, content_hash DESC NULLS LAST
           ) AS _converge_rank
           FROM (SELECT * FROM `${project}.${dataset}.records` WHERE version <= as_of)
         ) WHERE _converge_rank = 1 AND NOT is_deleted
