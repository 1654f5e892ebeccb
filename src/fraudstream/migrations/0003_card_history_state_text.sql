-- card_history.state holds CardState.to_dict() as JSON text, not jsonb: nothing queries inside
-- it, and parsing ~1.5 kB of JSON into jsonb on every update was half of PostgreSQL's CPU per
-- scored batch (measured with loadtest-shaped batches of 150: 29.6 -> 12.8 ms of server CPU).
-- Read it as JSON with state::jsonb when needed.
ALTER TABLE card_history ALTER COLUMN state TYPE text USING state::text;
