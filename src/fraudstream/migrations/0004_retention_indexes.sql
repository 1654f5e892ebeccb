-- Retention (fraudstream.retention): `fraudstream scores prune` deletes the rows of `scores`
-- written before the retention (SCORES_RETENTION_DAYS) in batches, oldest first: this index
-- finds them without scanning the table. Rows are appended in written_at order, so it grows at
-- its right edge only. On a large existing table, create it beforehand without blocking the
-- writer: CREATE INDEX CONCURRENTLY scores_written_at ON scores (written_at);
-- (this migration then finds it). card_history_seen is pruned by recorded_at, already indexed
-- (0001); card_history is pruned by walking its primary key, not by an index on updated_at,
-- which every scored transaction changes (an index on it would cost every update).
CREATE INDEX IF NOT EXISTS scores_written_at ON scores (written_at);
