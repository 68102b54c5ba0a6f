-- One row per recipient of a push campaign: the claimable unit of work, and the record of who got what.
--
-- Rows are created in one INSERT … SELECT when a campaign starts (so a crash resumes where it
-- stopped), claimed with FOR UPDATE SKIP LOCKED by any daemon, and end sent / failed / skipped
-- with a reason. `available_at` is when the row next needs attention: for a pending row, when
-- it may be (re)tried; for a claimed row, when its holder's lease runs out and another daemon
-- may take it over. One column for both keeps the claim to one index range.

CREATE TABLE IF NOT EXISTS campaign_deliveries (
    campaign_id uuid NOT NULL REFERENCES push_campaigns (id) ON DELETE CASCADE,
    -- No foreign key: the id was just read from passes_master, and a key check per row would
    -- lock a million passes while a campaign starts. A pass deleted since is skipped at claim.
    pass_id uuid NOT NULL,
    state text NOT NULL DEFAULT 'pending',
    attempts integer NOT NULL DEFAULT 0,
    lease_owner uuid,
    available_at timestamptz NOT NULL DEFAULT now(),
    rendered_text text,
    error text,
    finished_at timestamptz,
    finished_by uuid,
    PRIMARY KEY (campaign_id, pass_id),
    CONSTRAINT campaign_deliveries_state_is_known
        CHECK (state IN ('pending', 'claimed', 'sent', 'failed', 'skipped')),
    CONSTRAINT campaign_deliveries_claimed_rows_have_a_lease_owner
        CHECK ((state = 'claimed') = (lease_owner IS NOT NULL)),
    CONSTRAINT campaign_deliveries_finished_rows_have_finished_at
        CHECK ((state IN ('sent', 'failed', 'skipped')) = (finished_at IS NOT NULL)),
    CONSTRAINT campaign_deliveries_attempts_not_negative CHECK (attempts >= 0)
);

COMMENT ON TABLE campaign_deliveries IS
    'One row per recipient of a push campaign: pending → claimed → sent / failed / skipped.';
COMMENT ON COLUMN campaign_deliveries.available_at IS
    'pending: when it may be tried; claimed: when the lease runs out.';
COMMENT ON COLUMN campaign_deliveries.rendered_text IS
    'The message as sent to this recipient, placeholders filled in.';
COMMENT ON COLUMN campaign_deliveries.error IS
    'Why it failed or was skipped (frequency cap, opted out, PassKit error, cancelled).';
COMMENT ON COLUMN campaign_deliveries.finished_by IS
    'Lease owner (daemon worker) that recorded the outcome.';

-- The claim: due rows of one campaign, oldest first. Finished rows leave the index.
CREATE INDEX IF NOT EXISTS campaign_deliveries_due_idx
    ON campaign_deliveries (campaign_id, available_at)
    WHERE state IN ('pending', 'claimed');

-- The frequency cap: messages a pass got (or is getting) lately, whatever the campaign.
CREATE INDEX IF NOT EXISTS campaign_deliveries_recent_by_pass_idx
    ON campaign_deliveries (pass_id, finished_at)
    WHERE state IN ('sent', 'claimed');
