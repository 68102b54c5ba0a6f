-- The daemons on this database, each with its heartbeat: a daemon whose heartbeat is older
-- than LOYALTYD_STALE_SECONDS is dead, and the rows it holds are taken over at once instead
-- of after their leases run out. A daemon deletes its row when it stops cleanly.

CREATE TABLE IF NOT EXISTS loyaltyd.instances (
    id uuid PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE loyaltyd.instances IS
    'loyaltyd daemons on this database and their heartbeats (written by the daemons).';

DO $$
DECLARE
    r text;
BEGIN
    REVOKE ALL ON loyaltyd.instances FROM PUBLIC;
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON loyaltyd.instances FROM %I', r);
        END IF;
    END LOOP;
END $$;
