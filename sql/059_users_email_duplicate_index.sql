-- 053 created users_email_unique even where the user's own unique index on email (Supabase's
-- users_email_key from `email text UNIQUE`) already enforced the rule: its check compared a
-- 0-based int2vector with a 1-based array and never matched. Supabase's Performance Advisor
-- reports the pair (duplicate_index); every write to users paid for both.
--
-- Dropped only when another valid, unique index enforces exactly the same rule: one key column,
-- email, no expression, no predicate, the same operator class and collation, not deferred.
-- Where none does, users_email_unique is the rule's only index and stays.
DO $$
DECLARE
    ours pg_catalog.pg_index;
    kept text;
BEGIN
    SELECT i.* INTO ours FROM pg_catalog.pg_index i
     WHERE i.indexrelid = pg_catalog.to_regclass('public.users_email_unique');
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT c.relname INTO kept
      FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
     WHERE i.indrelid = ours.indrelid AND i.indexrelid <> ours.indexrelid
       AND i.indisunique AND i.indisvalid AND i.indimmediate
       AND i.indpred IS NULL AND i.indexprs IS NULL
       AND i.indnkeyatts = 1 AND i.indkey[0] = ours.indkey[0]
       AND i.indclass[0] = ours.indclass[0] AND i.indcollation[0] = ours.indcollation[0]
     ORDER BY c.relname
     LIMIT 1;
    IF kept IS NOT NULL THEN
        DROP INDEX public.users_email_unique;
        RAISE NOTICE 'users: dropped index users_email_unique, a duplicate of %', kept;
    END IF;
END $$;
