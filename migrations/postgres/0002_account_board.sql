-- Exactly-once tracking for projections: a projection's rows and its position are written
-- in one transaction.
CREATE TABLE IF NOT EXISTS projection_tracking (
    projection text PRIMARY KEY,
    position bigint NOT NULL
);
-- The account board: one row per trading account with its state fields.
CREATE TABLE IF NOT EXISTS account_board (
    account_id text PRIMARY KEY,
    trader_id text NOT NULL,
    program_id text NOT NULL,
    program_version integer NOT NULL,
    stage text NOT NULL,
    status text NOT NULL,
    currency text NOT NULL,
    initial_balance numeric NOT NULL,
    balance numeric NOT NULL,
    equity numeric NOT NULL,
    high_water_mark numeric NOT NULL,
    day_start_balance numeric NOT NULL,
    daily_loss_floor numeric NOT NULL,
    max_loss_floor numeric NOT NULL,
    trading_days integer NOT NULL,
    profit numeric NOT NULL,
    current_day text,
    breach text,
    passed_at text,
    next_account_id text,
    opened_at text NOT NULL,
    updated_at text NOT NULL,
    version integer NOT NULL
);
CREATE INDEX IF NOT EXISTS account_board_trader_idx ON account_board (trader_id, opened_at);
