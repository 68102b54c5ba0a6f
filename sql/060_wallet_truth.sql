-- Wallet truth: what PassKit says of each pass (installed, uninstalled, invalidated, issued,
-- deleted; its balance), kept by daily sweeps of PassKit's lists and by webhook-rung re-reads,
-- and copied into passes_master.status unless the program manages that column by hand.

-- A program opts out of status from PassKit to keep a hand-managed passes_master.status; its
-- coupon campaign and event production, when named, are swept like its members.
ALTER TABLE public.programs
    ADD COLUMN IF NOT EXISTS wallet_status_from_passkit boolean NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS passkit_coupon_campaign_id text,
    ADD COLUMN IF NOT EXISTS passkit_production_id text;

-- The PassKit classes of each program that PassKit can list (and loyaltyd sweeps).
CREATE OR REPLACE VIEW loyaltyd.wallet_program_classes AS
SELECT g.id AS program_id, g.name, c.protocol, c.class_id,
       coalesce(nullif(g.timezone, ''), 'UTC') AS timezone
  FROM public.programs g
 CROSS JOIN LATERAL (VALUES ('MEMBERSHIP', g.passkit_program_id),
                            ('COUPON', g.passkit_coupon_campaign_id),
                            ('EVENT_TICKET', g.passkit_production_id)) AS c (protocol, class_id)
 WHERE coalesce(c.class_id, '') <> '';
DO $$
BEGIN
    -- as its reader (Postgres 15 and later; on 14 only the owner reads loyaltyd anyway)
    IF current_setting('server_version_num')::int >= 150000 THEN
        ALTER VIEW loyaltyd.wallet_program_classes SET (security_invoker = true);
    END IF;
END $$;

-- One row per pass PassKit has told us about. `status` is passMetaData.status in loyaltyd's
-- words, or DELETED once a read answered 404; the times are PassKit's. A row is rewritten only
-- when PassKit says something new (by a sweep's list or a re-read: `updated_by`); a sweep leaves
-- alone the rows a re-read wrote after it started (the re-read is newer).
-- `passkit_points` is PassKit's float32 `points`. A repaired balance drift is remembered, so
-- a pass that drifts again is reported, not repaired in a loop.
CREATE TABLE IF NOT EXISTS loyaltyd.wallet_passes (
    pass_id uuid PRIMARY KEY REFERENCES public.passes_master (id) ON DELETE CASCADE,
    program_id uuid NOT NULL,
    status text NOT NULL,
    first_installed_at timestamptz,
    last_installed_at timestamptz,
    first_uninstalled_at timestamptz,
    last_uninstalled_at timestamptz,
    invalidated_at timestamptz,
    passkit_updated_at timestamptz,
    passkit_points real,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL,
    drift_repaired_at timestamptz,
    drift_repaired_points integer,
    drift_reported_at timestamptz,
    CONSTRAINT wallet_passes_status_is_passkits
        CHECK (status IN ('INSTALLED', 'UNINSTALLED', 'INVALIDATED', 'ISSUED', 'DELETED')),
    CONSTRAINT wallet_passes_updated_by_sweep_or_read CHECK (updated_by IN ('sweep', 'read'))
);
CREATE INDEX IF NOT EXISTS wallet_passes_program ON loyaltyd.wallet_passes (program_id, status);

-- Each sweep of one program's class (members, a coupon campaign, a production): its result
-- for `loyaltyd status` and for scheduling (a program is swept once a day). A sweep holds an
-- advisory lock on its program for as long as it runs, so two daemons never sweep one program
-- at once; a crashed sweep stays 'running' with no lock behind it and is ended by the next.
CREATE TABLE IF NOT EXISTS loyaltyd.wallet_sweeps (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id uuid NOT NULL REFERENCES public.programs (id) ON DELETE CASCADE,
    protocol text NOT NULL,
    state text NOT NULL DEFAULT 'running',
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    owner uuid,
    summary jsonb,
    error text,
    retry_at timestamptz,
    CONSTRAINT wallet_sweeps_state_known CHECK (state IN ('running', 'completed', 'failed')),
    CONSTRAINT wallet_sweeps_protocol_known
        CHECK (protocol IN ('MEMBERSHIP', 'COUPON', 'EVENT_TICKET'))
);
CREATE INDEX IF NOT EXISTS wallet_sweeps_latest
    ON loyaltyd.wallet_sweeps (program_id, protocol, started_at DESC);

-- The webhook inbox: one row per pass to re-read from PassKit (a webhook is a doorbell, the
-- re-read is the truth). At most one row per pass waits (later webhooks fold into it, so a
-- flood is bounded by the passes it names), and at most one is being read.
CREATE TABLE IF NOT EXISTS loyaltyd.wallet_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    passkit_id text NOT NULL,
    protocol text NOT NULL,
    event text NOT NULL,
    events integer NOT NULL DEFAULT 1,
    state text NOT NULL DEFAULT 'pending',
    received_at timestamptz NOT NULL DEFAULT now(),
    available_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    lease_owner uuid,
    CONSTRAINT wallet_events_state_known CHECK (state IN ('pending', 'claimed')),
    CONSTRAINT wallet_events_owner_iff_claimed CHECK ((state = 'claimed') = (lease_owner IS NOT NULL)),
    CONSTRAINT wallet_events_protocol_known
        CHECK (protocol IN ('MEMBERSHIP', 'COUPON', 'EVENT_TICKET'))
);
CREATE UNIQUE INDEX IF NOT EXISTS wallet_events_one_waiting_per_pass
    ON loyaltyd.wallet_events (passkit_id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS wallet_events_due
    ON loyaltyd.wallet_events (available_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS wallet_events_being_read
    ON loyaltyd.wallet_events (passkit_id) WHERE state = 'claimed';

-- Webhooks received, by program and event (program NULL: a pass loyaltyd does not know).
CREATE TABLE IF NOT EXISTS loyaltyd.wallet_event_counts (
    program_id uuid,
    event text NOT NULL,
    received bigint NOT NULL DEFAULT 0,
    last_received_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS wallet_event_counts_key
    ON loyaltyd.wallet_event_counts (coalesce(program_id, '00000000-0000-0000-0000-000000000000'::uuid), event);

COMMENT ON TABLE loyaltyd.wallet_passes IS 'What PassKit says of each pass: wallet status, times, balance.';
COMMENT ON TABLE loyaltyd.wallet_sweeps IS 'Sweeps of PassKit''s lists, one per program class and day.';
COMMENT ON TABLE loyaltyd.wallet_events IS 'Passes a PassKit webhook named, waiting to be re-read.';
COMMENT ON TABLE loyaltyd.wallet_event_counts IS 'PassKit webhooks received, by program and event.';

DO $$
DECLARE
    t text;
    r text;
BEGIN
    FOREACH t IN ARRAY ARRAY['loyaltyd.wallet_passes', 'loyaltyd.wallet_sweeps',
                             'loyaltyd.wallet_events', 'loyaltyd.wallet_event_counts',
                             'loyaltyd.wallet_program_classes'] LOOP
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', t);
        FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
                EXECUTE format('REVOKE ALL ON %s FROM %I', t, r);
            END IF;
        END LOOP;
    END LOOP;
END $$;

-- Passes by program and status, for `loyaltyd status` and /metrics (an index-only count).
CREATE INDEX IF NOT EXISTS passes_master_program_status ON public.passes_master (program_id, status);
