-- SLUMBER ("no transaction for N days, and the pass is at least that old") needs a pass's real
-- age. Passes that predate loyaltyd got created_at = the moment 001 added the column; give
-- them the oldest date their own history shows instead: last_updated or the first transaction.

DO $$
DECLARE
    adopted timestamptz;
    n bigint;
BEGIN
    SELECT applied_at INTO adopted FROM loyaltyd.schema_migrations
     WHERE version = '001_core_tables';
    IF adopted IS NULL THEN
        RETURN;
    END IF;
    -- 001 ran in one transaction with its ledger row: the column default now() of every pass
    -- that existed then is exactly that row's applied_at.
    UPDATE public.passes_master p
       SET created_at = least(p.last_updated,
                              (SELECT min(t.created_at) FROM public.transactions t
                                WHERE t.pass_id = p.id),
                              p.created_at)
     WHERE p.created_at = adopted;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        RAISE NOTICE 'passes_master: % passes that predate loyaltyd take their age from last_updated and their first transaction', n;
    END IF;
END $$;
