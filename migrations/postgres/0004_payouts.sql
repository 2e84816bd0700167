-- Payouts as finance sees them; reports are queries over this table. Amounts are integer
-- minor units of `currency` (fee refunds of `fee_refund_currency`).
CREATE TABLE IF NOT EXISTS payout_board (
    payout_id text PRIMARY KEY,
    account_id text NOT NULL,
    trader_id text NOT NULL,
    program_id text NOT NULL,
    status text NOT NULL,
    currency text NOT NULL,
    profit_minor bigint NOT NULL,
    profit_split_pct text NOT NULL,
    trader_share_minor bigint NOT NULL,
    firm_share_minor bigint NOT NULL,
    fee_refund_minor bigint NOT NULL,
    fee_refund_currency text NOT NULL,
    requested_by text NOT NULL,
    requested_at text NOT NULL,
    approved_by text,
    approved_at text,
    rejected_by text,
    rejection_reason text,
    paid_reference text,
    paid_at text,
    version integer NOT NULL
);
CREATE INDEX IF NOT EXISTS payout_board_status_idx ON payout_board (status, requested_at);
CREATE INDEX IF NOT EXISTS payout_board_approved_idx ON payout_board (approved_at);
