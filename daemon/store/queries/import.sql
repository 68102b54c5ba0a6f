-- Member CSV import (`loyaltyd import-users`): set-based statements over one batch of rows,
-- passed as parallel arrays, all inside the one transaction of the whole file.

-- name: import_program_exists
-- $1 program id
SELECT EXISTS (SELECT 1 FROM programs WHERE id = $1);

-- name: import_existing_passes
-- $1 program id, $2 the batch's member ids, $3 the batch's PassKit ids.
-- The program's passes with those member ids, and any pass (of any program) holding one of
-- those PassKit ids, with the lower-cased email of the user each belongs to.
SELECT p.id, p.program_id, p.external_id, p.passkit_internal_id, p.protocol, p.user_id,
       lower(u.email) AS owner_email_key
FROM passes_master p
LEFT JOIN users u ON u.id = p.user_id
WHERE (p.program_id = $1 AND p.external_id = ANY($2::text[]))
   OR p.passkit_internal_id = ANY($3::text[]);

-- name: import_upsert_users
-- Parallel arrays, one entry per member (emails unique ignoring case within the batch; NULL =
-- no value in the file), and the program being imported.
-- One row back per input email: its user id, whether the user was created, updated or left
-- unchanged, and `withheld`: the file had other values for a member who also holds a pass of
-- another program, and those were not written. Members are shared across programs, so for
-- them the file only fills empty fields; for everyone else it wins. A NULL never erases a
-- stored value, and a row whose values are already stored is not touched at all (updated_at
-- stays), so re-importing a file changes nothing.
WITH input AS (
    SELECT *
    FROM unnest($emails::text[], $first_names::text[], $last_names::text[],
                $birth_dates::date[], $phone_numbers::text[], $zips::text[])
        AS t(email, first_name, last_name, birth_date, phone_number, zip)
),
-- users of these emails who hold a pass of another program
shared AS (
    SELECT DISTINCT u.id
    FROM users u
    JOIN input i ON lower(i.email) = lower(u.email)
    JOIN passes_master p ON p.user_id = u.id AND p.program_id IS DISTINCT FROM $program_id
),
upserted AS (
    INSERT INTO users AS u (email, first_name, last_name, birth_date, phone_number, zip)
    SELECT email, first_name, last_name, birth_date, phone_number, zip FROM input
    ON CONFLICT (lower(email)) DO UPDATE SET
        first_name = CASE WHEN u.id IN (SELECT id FROM shared)
                          THEN coalesce(u.first_name, excluded.first_name)
                          ELSE coalesce(excluded.first_name, u.first_name) END,
        last_name = CASE WHEN u.id IN (SELECT id FROM shared)
                         THEN coalesce(u.last_name, excluded.last_name)
                         ELSE coalesce(excluded.last_name, u.last_name) END,
        birth_date = CASE WHEN u.id IN (SELECT id FROM shared)
                          THEN coalesce(u.birth_date, excluded.birth_date)
                          ELSE coalesce(excluded.birth_date, u.birth_date) END,
        phone_number = CASE WHEN u.id IN (SELECT id FROM shared)
                            THEN coalesce(u.phone_number, excluded.phone_number)
                            ELSE coalesce(excluded.phone_number, u.phone_number) END,
        zip = CASE WHEN u.id IN (SELECT id FROM shared)
                   THEN coalesce(u.zip, excluded.zip)
                   ELSE coalesce(excluded.zip, u.zip) END,
        updated_at = now()
    WHERE (u.first_name, u.last_name, u.birth_date, u.phone_number, u.zip)
          IS DISTINCT FROM
          (coalesce(u.first_name, excluded.first_name), coalesce(u.last_name, excluded.last_name),
           coalesce(u.birth_date, excluded.birth_date),
           coalesce(u.phone_number, excluded.phone_number), coalesce(u.zip, excluded.zip))
       OR (u.id NOT IN (SELECT id FROM shared)
           AND (u.first_name, u.last_name, u.birth_date, u.phone_number, u.zip)
               IS DISTINCT FROM
               (coalesce(excluded.first_name, u.first_name),
                coalesce(excluded.last_name, u.last_name),
                coalesce(excluded.birth_date, u.birth_date),
                coalesce(excluded.phone_number, u.phone_number),
                coalesce(excluded.zip, u.zip)))
    -- xmax = 0: the row version was inserted by this statement, not updated
    RETURNING u.id, lower(u.email) AS email_key, (u.xmax = 0) AS created
)
SELECT lower(i.email) AS email_key,
       coalesce(up.id, existing.id) AS user_id,
       CASE WHEN up.id IS NULL THEN 'unchanged'
            WHEN up.created THEN 'created'
            ELSE 'updated' END AS outcome,
       -- the statement's snapshot shows the values from before it
       coalesce(before.id IN (SELECT id FROM shared)
                AND ((i.first_name IS NOT NULL AND before.first_name IS DISTINCT FROM i.first_name
                      AND before.first_name IS NOT NULL)
                  OR (i.last_name IS NOT NULL AND before.last_name IS DISTINCT FROM i.last_name
                      AND before.last_name IS NOT NULL)
                  OR (i.birth_date IS NOT NULL AND before.birth_date IS DISTINCT FROM i.birth_date
                      AND before.birth_date IS NOT NULL)
                  OR (i.phone_number IS NOT NULL
                      AND before.phone_number IS DISTINCT FROM i.phone_number
                      AND before.phone_number IS NOT NULL)
                  OR (i.zip IS NOT NULL AND before.zip IS DISTINCT FROM i.zip
                      AND before.zip IS NOT NULL)), false) AS withheld
FROM input i
LEFT JOIN upserted up ON up.email_key = lower(i.email)
-- untouched users are not RETURNed; they existed before this statement, so its snapshot has them
LEFT JOIN users existing ON up.id IS NULL AND lower(existing.email) = lower(i.email)
LEFT JOIN users before ON lower(before.email) = lower(i.email);

-- name: import_create_passes
-- $1 program id, $2 member ids, $3 user ids, $4 PassKit ids (NULL = not known yet).
-- New membership passes, not installed (status NULL) until PassKit says so, each with its
-- zero balance row. Returns the member ids actually created (a concurrent writer may have
-- created one meanwhile).
WITH created AS (
    INSERT INTO passes_master (program_id, external_id, user_id, passkit_internal_id,
                               protocol, status, is_active)
    SELECT $1, t.member_id, t.user_id, t.passkit_id, 'MEMBERSHIP', NULL, true
    FROM unnest($2::text[], $3::uuid[], $4::text[]) AS t(member_id, user_id, passkit_id)
    ON CONFLICT (program_id, external_id) DO NOTHING
    RETURNING id, external_id
),
balances AS (
    INSERT INTO protocol_membership (pass_id)
    SELECT id FROM created
    ON CONFLICT (pass_id) DO NOTHING
)
SELECT external_id FROM created;

-- name: import_link_passes
-- $1 pass ids, $2 user ids, $3 PassKit ids (NULL = keep): link unlinked passes to their
-- member and fill a missing PassKit id. Only passes that actually change are written and
-- returned; a pass linked to someone else meanwhile is left alone.
UPDATE passes_master p
SET user_id = t.user_id,
    passkit_internal_id = coalesce(p.passkit_internal_id, t.passkit_id),
    last_updated = now()
FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS t(pass_id, user_id, passkit_id)
WHERE p.id = t.pass_id
  AND (p.user_id IS NULL OR p.user_id = t.user_id)
  AND (p.user_id IS NULL
       OR (p.passkit_internal_id IS NULL AND t.passkit_id IS NOT NULL))
RETURNING p.id;
