-- Confirmed outcomes (fraudstream.labels): one row per transaction_id, the latest label by
-- labelled_at (a later one overrides, an equal or older one is ignored). A label may arrive
-- before the transaction's score; it is stored all the same and counts in the live quality
-- (fraudstream.quality: scores JOIN labels) once the score is there. No personal data: the
-- id, the outcome, when and by whom it was confirmed.
CREATE TABLE IF NOT EXISTS labels (
    transaction_id text PRIMARY KEY,
    is_fraud       boolean NOT NULL,
    labelled_at    timestamptz NOT NULL,                -- when the outcome was confirmed
    source         text NOT NULL,                       -- who confirmed it (e.g. chargeback, csv)
    stored_at      timestamptz NOT NULL DEFAULT now()   -- when this row was last written
);

-- Retention (fraudstream.retention, `fraudstream scores prune`): rows stored before
-- LABELS_RETENTION_DAYS are deleted oldest first through this index.
CREATE INDEX IF NOT EXISTS labels_stored_at ON labels (stored_at);
