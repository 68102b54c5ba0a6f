-- A daemon says when it is ready: one that failed or stopped before that leaves no row (it
-- deletes its own), and `loyaltyd status` lists only daemons that were ready at some point.

ALTER TABLE loyaltyd.instances ADD COLUMN IF NOT EXISTS ready_at timestamptz;

-- Rows written before this migration were running daemons.
UPDATE loyaltyd.instances SET ready_at = started_at WHERE ready_at IS NULL;
