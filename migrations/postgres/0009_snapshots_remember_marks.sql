-- Account snapshots now hold every equity mark an account recorded (`mark_log`), so a
-- mark sent again is found however many came since. Snapshots taken before do not have
-- them: they are dropped and retaken as accounts grow; nothing is lost (every account is
-- its events).
DELETE FROM propledger_snapshots;
