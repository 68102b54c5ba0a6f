-- The console's accounts can be disabled, sign-in attempts are counted atomically, who-columns
-- cannot be forged on INSERT, and what expires can be purged by index.

-- A revoked person: no password, no operator role, no session (console_session checks it).
ALTER TABLE loyaltyd.console_users ADD COLUMN IF NOT EXISTS disabled_at timestamptz;
