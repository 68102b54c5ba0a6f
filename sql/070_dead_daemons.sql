-- Which daemons are dead, said once: every queue's claim takes the rows of the daemons this
-- function names over at once (a daemon whose heartbeat is older than the stale threshold).

CREATE OR REPLACE FUNCTION loyaltyd.dead_daemons(stale_seconds float8) RETURNS uuid[]
LANGUAGE sql STABLE SET search_path = '' AS $$
    SELECT coalesce(array_agg(i.id), '{}')
      FROM loyaltyd.instances i
     WHERE i.heartbeat_at < now() - make_interval(secs => stale_seconds)
$$;

REVOKE ALL ON FUNCTION loyaltyd.dead_daemons(float8) FROM PUBLIC;
COMMENT ON FUNCTION loyaltyd.dead_daemons(float8) IS
    'Daemons whose heartbeat is older than stale_seconds: their leases are void.';
