-- Checks that must pass before loyaltyd changes anything in a database it adopts: the user's
-- rows that the later unique keys would refuse. Each failure lists the rows and what to do;
-- nothing has been changed when it stops. (Changes nothing itself, so it is safe to run late
-- on a database that loyaltyd already manages.)

DO $$
DECLARE
    dup text;
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
                WHERE table_schema = 'public' AND table_name = 'users' AND column_name = 'email')
    THEN
        SELECT string_agg(e, '; ') INTO dup FROM (
            SELECT lower(email) || ' (' || string_agg(email, ', ' ORDER BY email) || ')' AS e
              FROM public.users WHERE email IS NOT NULL
             GROUP BY lower(email) HAVING count(*) > 1 ORDER BY lower(email) LIMIT 20) d;
        IF dup IS NOT NULL THEN
            RAISE EXCEPTION 'users holds emails that differ only in case, and loyaltyd keeps one member per email ignoring case: %', dup
                USING ERRCODE = 'unique_violation',
                      HINT = 'merge each group into one user (or correct the address), then run loyaltyd migrate again; nothing was changed';
        END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM information_schema.columns
                WHERE table_schema = 'public' AND table_name = 'passes_master'
                  AND column_name = 'external_id') THEN
        SELECT string_agg(e, '; ') INTO dup FROM (
            SELECT program_id || ' / ' || external_id AS e FROM public.passes_master
             WHERE external_id IS NOT NULL
             GROUP BY program_id, external_id HAVING count(*) > 1 LIMIT 20) d;
        IF dup IS NOT NULL THEN
            RAISE EXCEPTION 'passes_master holds member ids (external_id) used twice in one program: %', dup
                USING ERRCODE = 'unique_violation',
                      HINT = 'give each pass of a program its own member id, then run loyaltyd migrate again; nothing was changed';
        END IF;
    END IF;
END $$;
