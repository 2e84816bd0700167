-- What dispute chargebacks took back from each payment (withdrawn minus reinstated, in
-- minor units), shown in the unallocated list so finance sees it before allocating. The
-- board is rebuilt from the log to fill it.
ALTER TABLE payment_board ADD COLUMN charged_back_minor bigint NOT NULL DEFAULT 0;
DELETE FROM payment_board;
DELETE FROM projection_tracking WHERE projection = 'payment_board';
