-- Named rules on the core tables. Added NOT VALID where rows may pre-exist, so old data is kept
-- while every new or updated row is checked; a conflicting existing duplicate aborts with a hint.

CREATE OR REPLACE FUNCTION pg_temp.add_check(tbl regclass, name text, expr text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = tbl AND conname = name) THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (%s) NOT VALID', tbl, name, expr);
    END IF;
END $$;

SELECT pg_temp.add_check('programs', 'programs_birthday_reward_points_not_negative',
    $$birthday_reward_points >= 0$$);
SELECT pg_temp.add_check('programs', 'programs_max_pushes_per_pass_per_day_0_to_100',
    $$max_pushes_per_pass_per_day BETWEEN 0 AND 100$$);
SELECT pg_temp.add_check('programs', 'programs_birthday_message_up_to_500_chars',
    $$birthday_message IS NULL OR char_length(birthday_message) <= 500$$);
SELECT pg_temp.add_check('passes_master', 'passes_master_protocol_is_known',
    $$protocol IN ('MEMBERSHIP', 'COUPON', 'EVENT_TICKET')$$);
SELECT pg_temp.add_check('protocol_membership', 'protocol_membership_points_not_negative',
    $$points_balance >= 0$$);

-- A timezone Postgres does not know would break the birthday bot for that program at run time;
-- refuse it when the row is written instead (a CHECK cannot consult pg_timezone_names).
CREATE OR REPLACE FUNCTION loyaltyd_check_program_timezone() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = NEW.timezone) THEN
        RAISE EXCEPTION 'unknown timezone "%" for program % (use an IANA name like Europe/Paris)',
            NEW.timezone, NEW.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS programs_timezone_must_be_iana ON programs;
CREATE TRIGGER programs_timezone_must_be_iana
    BEFORE INSERT OR UPDATE OF timezone ON programs
    FOR EACH ROW EXECUTE FUNCTION loyaltyd_check_program_timezone();

-- Unique keys. An existing duplicate would make CREATE UNIQUE INDEX fail with a cryptic
-- message, so look first and say which values collide.
DO $$
DECLARE
    dup text;
BEGIN
    SELECT string_agg(e, ', ') INTO dup FROM (
        SELECT lower(email) AS e FROM users WHERE email IS NOT NULL
        GROUP BY lower(email) HAVING count(*) > 1 LIMIT 10) d;
    IF dup IS NOT NULL THEN
        RAISE EXCEPTION 'users.email must be unique ignoring case; duplicates: %', dup
            USING HINT = 'merge or rename these users, then run loyaltyd migrate again';
    END IF;
    SELECT string_agg(e, ', ') INTO dup FROM (
        SELECT program_id || '/' || external_id AS e FROM passes_master
        WHERE external_id IS NOT NULL
        GROUP BY program_id, external_id HAVING count(*) > 1 LIMIT 10) d;
    IF dup IS NOT NULL THEN
        RAISE EXCEPTION 'passes_master.external_id must be unique per program; duplicates: %', dup
            USING HINT = 'fix these member ids, then run loyaltyd migrate again';
    END IF;
END $$;

CREATE UNIQUE INDEX IF NOT EXISTS users_email_unique_ignoring_case ON users (lower(email));
CREATE UNIQUE INDEX IF NOT EXISTS passes_master_external_id_unique_per_program
    ON passes_master (program_id, external_id);
