-- Scores written by the writer (fraudstream.writer), one row per transaction_id.
-- No names, streets or home coordinates: only the transaction's amount, category, merchant
-- and time, and what the model said about it.
CREATE TABLE IF NOT EXISTS scores (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id text NOT NULL UNIQUE,
    score          double precision NOT NULL,
    fraud_flag     boolean NOT NULL,
    threshold      double precision NOT NULL,
    model_version  text NOT NULL,
    reasons        jsonb NOT NULL DEFAULT '[]'::jsonb,  -- [{feature, value, impact}]
    amount         numeric(14, 2) NOT NULL,
    category       text NOT NULL,
    merchant       text NOT NULL,
    event_time     timestamp NOT NULL,                 -- the transaction's local time
    produced_at    timestamptz,                        -- Kafka timestamp on `transactions`
    scored_at      timestamptz NOT NULL,               -- when the bridge got the score
    written_at     timestamptz NOT NULL DEFAULT now()  -- when this row was committed
);

-- "last 100 scores": ORDER BY id DESC uses the primary key.
-- "10 latest frauds": a small partial index over flagged rows only.
CREATE INDEX IF NOT EXISTS scores_fraud_recent ON scores (id DESC) WHERE fraud_flag;

CREATE OR REPLACE VIEW scores_recent_fraud AS
SELECT id, transaction_id, score, threshold, model_version, reasons, amount, category,
       merchant, event_time, scored_at, written_at
FROM scores
WHERE fraud_flag
ORDER BY id DESC;
