-- Optimistic concurrency on cloud objects (engine/store/cloud.py): every write bumps
-- `version`, and a read-change-write only writes over the version it read.
-- Deliveries are looked up by job and by webhook endpoint through indexes (the
-- expressions must match the ones of CloudRepository.page(where=...)).

ALTER TABLE cloud_objects ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX cloud_objects_by_job
    ON cloud_objects (kind, tenant, json_extract(data, '$.job_id'), id);
CREATE INDEX cloud_objects_by_webhook
    ON cloud_objects (kind, tenant, json_extract(data, '$.webhook_id'), id);
