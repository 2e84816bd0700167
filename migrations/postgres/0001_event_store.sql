-- The eventsourcing library's application recorder and snapshot store for the application
-- named "propledger", created here so that migrations alone own the schema (several
-- processes creating tables at once can fail with "tuple concurrently updated").
CREATE TABLE IF NOT EXISTS propledger_events (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    notification_id bigserial,
    PRIMARY KEY (originator_id, originator_version)
) WITH (
    autovacuum_enabled = true,
    autovacuum_vacuum_threshold = 100000000,
    autovacuum_vacuum_scale_factor = 0.5,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01
);
CREATE UNIQUE INDEX IF NOT EXISTS propledger_events_notification_id_idx
    ON propledger_events (notification_id ASC);
CREATE TABLE IF NOT EXISTS propledger_snapshots (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    PRIMARY KEY (originator_id, originator_version)
);
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'stored_event_uuid') THEN
        CREATE TYPE stored_event_uuid AS (
            originator_id uuid,
            originator_version bigint,
            topic text,
            state bytea
        );
    END IF;
END
$$;
