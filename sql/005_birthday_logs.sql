-- Birthday bot bookkeeping: one gift per pass per year, and an index for "whose birthday is
-- it today" that the planner can use (month and day of birth_date).

CREATE TABLE IF NOT EXISTS birthday_logs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid()
);
ALTER TABLE birthday_logs
    ADD COLUMN IF NOT EXISTS pass_id uuid REFERENCES passes_master (id),
    ADD COLUMN IF NOT EXISTS program_id uuid REFERENCES programs (id),
    ADD COLUMN IF NOT EXISTS year integer,
    ADD COLUMN IF NOT EXISTS transaction_id uuid REFERENCES transactions (id),
    ADD COLUMN IF NOT EXISTS celebrated_on date,
    ADD COLUMN IF NOT EXISTS created_at timestamptz DEFAULT now();

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'birthday_logs'::regclass AND contype = 'u'
                     AND conkey = ARRAY[
                         (SELECT attnum FROM pg_attribute WHERE attrelid = 'birthday_logs'::regclass
                           AND attname = 'pass_id'),
                         (SELECT attnum FROM pg_attribute WHERE attrelid = 'birthday_logs'::regclass
                           AND attname = 'year')]::int2[]) THEN
        ALTER TABLE birthday_logs
            ADD CONSTRAINT birthday_logs_one_gift_per_pass_per_year UNIQUE (pass_id, year);
    END IF;
END $$;

-- The seed's index on EXTRACT(MONTH/DAY) works, but a single int key (month*100 + day) is
-- smaller and is what the birthday query filters on. date_part on a date is immutable.
CREATE INDEX IF NOT EXISTS users_birthday_month_day_idx
    ON users (((EXTRACT(MONTH FROM birth_date) * 100 + EXTRACT(DAY FROM birth_date))::int))
    WHERE birth_date IS NOT NULL;
