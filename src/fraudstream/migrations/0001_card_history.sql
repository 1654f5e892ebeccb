-- Per-card history for the streaming scorer (fraudstream.history.PostgresHistoryStore).
-- Keyed by a keyed HMAC of the card holder (fraudstream.identity.card_key): no names,
-- streets or home coordinates are stored here.
CREATE TABLE IF NOT EXISTS card_history (
    card_key   text PRIMARY KEY,
    state      jsonb,                -- fraudstream.features.CardState.to_dict()
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Transactions already added to the history: makes scoring idempotent on transaction_id.
CREATE TABLE IF NOT EXISTS card_history_seen (
    transaction_id   text PRIMARY KEY,
    card_key         text NOT NULL,
    transaction_time timestamp NOT NULL,
    features         double precision[] NOT NULL,  -- history features it was scored with
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS card_history_seen_recorded_at ON card_history_seen (recorded_at);
