-- Fired cron slots: one row per (trigger, fire time), so a slot fires once across
-- restarts and across several servers sharing the database (DESIGN §5). Webhook
-- delivery ids are idempotency keys (scope `<ws>/<task>`, key `hook:<name>:<id>`).

CREATE TABLE trigger_slots (
    trigger    TEXT    NOT NULL,  -- `<workspace>/<trigger name>`
    fire_time  REAL    NOT NULL,  -- the slot, epoch seconds (UTC)
    job_id     TEXT    NOT NULL,
    claimed_at REAL    NOT NULL,
    PRIMARY KEY (trigger, fire_time)
) WITHOUT ROWID;
