-- Daemon bookkeeping on push_campaigns: the planning lease, the DRAFT count marker, unknown member ids.

ALTER TABLE push_campaigns
    ADD COLUMN IF NOT EXISTS lease_owner uuid,
    ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz,
    ADD COLUMN IF NOT EXISTS audience_counted_at timestamptz,
    ADD COLUMN IF NOT EXISTS unknown_member_count integer,
    ADD COLUMN IF NOT EXISTS unknown_member_ids text[];

COMMENT ON COLUMN push_campaigns.lease_owner IS
    'Daemon resolving this campaign''s audience right now; NULL once sending has started.';
COMMENT ON COLUMN push_campaigns.audience_counted_at IS
    'When recipient_count was computed for a DRAFT; NULL = to be counted.';
COMMENT ON COLUMN push_campaigns.unknown_member_count IS
    'CSV segment: how many given member ids match no pass of the program.';
COMMENT ON COLUMN push_campaigns.unknown_member_ids IS
    'CSV segment: the first 100 of those member ids, sorted.';
COMMENT ON COLUMN push_campaigns.started_at IS
    'When the recipients were fixed and sending began (deliveries exist from then on).';

-- Campaigns whose outcome is still open: the planner's completion check reads only these.
CREATE INDEX IF NOT EXISTS push_campaigns_sending_idx ON push_campaigns (id)
    WHERE started_at IS NOT NULL AND finished_at IS NULL;
