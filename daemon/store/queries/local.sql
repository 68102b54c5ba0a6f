-- Statements of `loyaltyd run` on its embedded default (daemon.store.local): the local admin.

-- name: local_admin
-- $1 = email. The person (created if new) becomes an operator and the admin of every program,
-- present and future (sql/064); answers whether they chose a password already.
WITH person AS (
    INSERT INTO loyaltyd.console_users (email, operator, every_program)
    VALUES ($1, true, 'admin')
    ON CONFLICT (email) DO UPDATE SET operator = true, every_program = 'admin'
    RETURNING id, password_hash IS NOT NULL AS has_password
),
granted AS (
    INSERT INTO loyaltyd.console_memberships (user_id, program_id, role)
    SELECT person.id, p.id, 'admin' FROM person CROSS JOIN public.programs p
    ON CONFLICT (user_id, program_id) DO UPDATE SET role = 'admin'
)
SELECT id, has_password FROM person;
