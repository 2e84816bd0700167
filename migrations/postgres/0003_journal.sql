-- The double-entry journal. Amounts are integer minor units, so sums are exact.
CREATE TABLE IF NOT EXISTS journal_lines (
    entry_id text NOT NULL,
    line_no integer NOT NULL,
    account text NOT NULL,
    currency text NOT NULL,
    debit_minor bigint NOT NULL CHECK (debit_minor >= 0),
    credit_minor bigint NOT NULL CHECK (credit_minor >= 0),
    PRIMARY KEY (entry_id, line_no)
);
CREATE INDEX IF NOT EXISTS journal_lines_account_idx ON journal_lines (account, entry_id);
CREATE TABLE IF NOT EXISTS journal_entries (
    entry_id text PRIMARY KEY,
    position bigint NOT NULL,
    booked_at text NOT NULL,
    event_type text NOT NULL,
    stream_id text NOT NULL,
    stream_version integer NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_entries_booked_idx ON journal_entries (booked_at);

-- The store itself refuses an unbalanced entry: checked at commit (deferred), once every
-- line of the transaction is written, and for an entry header with no lines.
CREATE OR REPLACE FUNCTION journal_check_balance() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    unbalanced text;
BEGIN
    SELECT string_agg(currency || ' ' || (SUM_D - SUM_C)::text, ', ') INTO unbalanced
    FROM (
        SELECT currency, SUM(debit_minor) AS SUM_D, SUM(credit_minor) AS SUM_C
        FROM journal_lines WHERE entry_id = NEW.entry_id GROUP BY currency
    ) totals
    WHERE SUM_D <> SUM_C;
    IF unbalanced IS NOT NULL THEN
        RAISE EXCEPTION 'journal entry % does not balance: %', NEW.entry_id, unbalanced
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_TABLE_NAME = 'journal_entries'
       AND NOT EXISTS (SELECT 1 FROM journal_lines WHERE entry_id = NEW.entry_id) THEN
        RAISE EXCEPTION 'journal entry % has no lines', NEW.entry_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS journal_lines_balance ON journal_lines;
CREATE CONSTRAINT TRIGGER journal_lines_balance
    AFTER INSERT OR UPDATE ON journal_lines
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION journal_check_balance();
DROP TRIGGER IF EXISTS journal_entries_balance ON journal_entries;
CREATE CONSTRAINT TRIGGER journal_entries_balance
    AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION journal_check_balance();

CREATE TABLE IF NOT EXISTS payment_board (
    payment_id text PRIMARY KEY,
    processor text NOT NULL,
    payment_ref text NOT NULL,
    purpose text,
    trader_id text,
    program_id text,
    currency text,
    amount_minor bigint,
    refunded_minor bigint NOT NULL DEFAULT 0,
    disputes text NOT NULL DEFAULT '{}',
    account_id text,
    received_at text,
    updated_at text NOT NULL
);
CREATE INDEX IF NOT EXISTS payment_board_purpose_idx ON payment_board (purpose, received_at);
