-- The cloud API's objects (docs/cloud-api.md): deployments, pins, cloud jobs, schedules,
-- credentials (encrypted values), webhook endpoints, deliveries and the callback outbox.
-- One table keyed by (kind, id); `name` is unique per (kind, tenant) when set.

CREATE TABLE cloud_objects (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    name       TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    data       TEXT NOT NULL,                 -- a JSON object
    PRIMARY KEY (kind, id)
);
CREATE UNIQUE INDEX cloud_objects_by_name ON cloud_objects (kind, tenant, name)
    WHERE name IS NOT NULL;
CREATE INDEX cloud_objects_by_tenant ON cloud_objects (kind, tenant, id);
