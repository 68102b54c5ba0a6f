-- Core loyalty tables (programs, users, passes, balances, admins), created or completed in place.
-- Works on an empty database and on one that already holds the seed schema: every table is
-- IF NOT EXISTS and every column ADD COLUMN IF NOT EXISTS, so existing rows are never touched.

CREATE TABLE IF NOT EXISTS programs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid()
);
ALTER TABLE programs
    ADD COLUMN IF NOT EXISTS name text,
    ADD COLUMN IF NOT EXISTS timezone text NOT NULL DEFAULT 'UTC',
    ADD COLUMN IF NOT EXISTS passkit_program_id text,
    ADD COLUMN IF NOT EXISTS passkit_tier_id text,
    ADD COLUMN IF NOT EXISTS birthday_bot_enabled boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS birthday_reward_points integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS birthday_message text
        DEFAULT 'Happy Birthday! We added points to your pass.',
    ADD COLUMN IF NOT EXISTS max_pushes_per_pass_per_day integer NOT NULL DEFAULT 3,
    ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();

CREATE TABLE IF NOT EXISTS users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid()
);
ALTER TABLE users
    ADD COLUMN IF NOT EXISTS email text,
    ADD COLUMN IF NOT EXISTS first_name text,
    ADD COLUMN IF NOT EXISTS last_name text,
    ADD COLUMN IF NOT EXISTS birth_date date,
    ADD COLUMN IF NOT EXISTS marketing_opt_in boolean DEFAULT true,
    ADD COLUMN IF NOT EXISTS phone_number text,
    ADD COLUMN IF NOT EXISTS zip text,
    ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();

CREATE TABLE IF NOT EXISTS passes_master (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid()
);
ALTER TABLE passes_master
    ADD COLUMN IF NOT EXISTS program_id uuid REFERENCES programs (id),
    ADD COLUMN IF NOT EXISTS user_id uuid REFERENCES users (id),
    ADD COLUMN IF NOT EXISTS passkit_internal_id text,
    ADD COLUMN IF NOT EXISTS external_id text,
    ADD COLUMN IF NOT EXISTS protocol text NOT NULL DEFAULT 'MEMBERSHIP',
    ADD COLUMN IF NOT EXISTS status text,
    ADD COLUMN IF NOT EXISTS is_active boolean NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS last_updated timestamptz NOT NULL DEFAULT now();

CREATE TABLE IF NOT EXISTS protocol_membership (
    pass_id uuid PRIMARY KEY REFERENCES passes_master (id) ON DELETE CASCADE
);
ALTER TABLE protocol_membership
    ADD COLUMN IF NOT EXISTS points_balance integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS tier_points integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS tier_id text;

CREATE TABLE IF NOT EXISTS admin_profiles (
    id uuid PRIMARY KEY
);
ALTER TABLE admin_profiles
    ADD COLUMN IF NOT EXISTS program_id uuid REFERENCES programs (id);

-- Lookups used by every flow.
CREATE INDEX IF NOT EXISTS passes_master_program_id_idx ON passes_master (program_id);
CREATE INDEX IF NOT EXISTS passes_master_user_id_idx ON passes_master (user_id);
