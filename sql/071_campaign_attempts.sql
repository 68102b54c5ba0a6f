-- A campaign the planner could not plan or finish for a passing reason (a CSV host down) is
-- tried again after a back-off that grows with its attempts, as every other queue's work is.

CREATE TABLE IF NOT EXISTS loyaltyd.campaign_attempts (
    campaign_id uuid PRIMARY KEY REFERENCES public.push_campaigns (id) ON DELETE CASCADE,
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0)
);
COMMENT ON TABLE loyaltyd.campaign_attempts IS
    'Tries of the campaign planner on a campaign since its last outcome (written by the daemons).';

DO $$
DECLARE
    r text;
BEGIN
    REVOKE ALL ON loyaltyd.campaign_attempts FROM PUBLIC;
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON loyaltyd.campaign_attempts FROM %I', r);
        END IF;
    END LOOP;
END $$;
