-- When each link (and so its event) was recorded: for period reports over the log.
ALTER TABLE event_chain ADD COLUMN recorded_at TEXT;
CREATE INDEX IF NOT EXISTS event_chain_recorded_idx ON event_chain (recorded_at);
