-- Shadow scores (fraudstream.shadow): the challenger scorer's results for the same
-- transactions, written by a second writer (WRITER_TABLE=scores_shadow reading
-- TOPIC_SCORING=scoring.shadow). Same columns as `scores` (the same ScoredTransaction contract),
-- one row per transaction_id; pruned with `scores` (fraudstream scores prune).
CREATE TABLE IF NOT EXISTS scores_shadow (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id text NOT NULL UNIQUE,
    score          double precision NOT NULL,
    fraud_flag     boolean NOT NULL,
    threshold      double precision NOT NULL,
    model_version  text NOT NULL,
    reasons        jsonb NOT NULL DEFAULT '[]'::jsonb,
    amount         numeric(14, 2) NOT NULL,
    category       text NOT NULL,
    merchant       text NOT NULL,
    event_time     timestamp NOT NULL,
    produced_at    timestamptz,
    scored_at      timestamptz NOT NULL,
    written_at     timestamptz NOT NULL DEFAULT now()
);

-- retention deletes by written_at, oldest first (as scores_written_at, 0004)
CREATE INDEX IF NOT EXISTS scores_shadow_written_at ON scores_shadow (written_at);
