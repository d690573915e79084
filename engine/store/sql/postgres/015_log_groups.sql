-- Which append (group commit of the log store, engine/logs/pgstore.py) last bumped each
-- job's log counter, and the count it left: an append whose connection was lost with
-- its statement sent looks for its own token here on retry, to tell whether the lost
-- try committed (and which seqs it took) instead of writing the lines twice.

ALTER TABLE log_counters ADD COLUMN last_group TEXT;
ALTER TABLE log_counters ADD COLUMN last_group_count BIGINT;
