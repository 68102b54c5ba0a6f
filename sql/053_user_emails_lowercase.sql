-- Emails are stored in lower case, so the user's own `INSERT … ON CONFLICT (email) DO UPDATE`
-- finds a case variant of a stored address instead of tripping over the case-insensitive
-- unique key, and no case-duplicate member can be created (000 refused existing ones).

CREATE OR REPLACE FUNCTION loyaltyd.lowercase_user_email() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    NEW.email := pg_catalog.lower(NEW.email);
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION loyaltyd.lowercase_user_email() FROM PUBLIC;

DROP TRIGGER IF EXISTS users_email_lowercase ON public.users;
CREATE TRIGGER users_email_lowercase
    BEFORE INSERT OR UPDATE OF email ON public.users
    FOR EACH ROW EXECUTE FUNCTION loyaltyd.lowercase_user_email();

DO $$
DECLARE
    n bigint;
BEGIN
    UPDATE public.users SET email = lower(email) WHERE email <> lower(email);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        RAISE NOTICE 'users: % emails stored in lower case', n;
    END IF;
    -- ON CONFLICT (email) needs a unique key on exactly (email); the seed has one
    -- (users_email_key), a database loyaltyd created has only the lower(email) one.
    -- (indkey is an int2vector, subscripted from 0.)
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i
         WHERE i.indrelid = 'public.users'::regclass AND i.indisunique AND i.indpred IS NULL
           AND i.indexprs IS NULL AND i.indnkeyatts = 1
           AND i.indkey[0] = (SELECT attnum FROM pg_attribute
                               WHERE attrelid = 'public.users'::regclass
                                 AND attname = 'email')) THEN
        CREATE UNIQUE INDEX users_email_unique ON public.users (email);
    END IF;
END $$;
