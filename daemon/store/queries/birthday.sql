-- Birthday bot (SPEC §3.3): programs to celebrate, the passes due today, and the gift itself.
-- A gift is birthday_log_gift + birthday_balance_for_update + birthday_give_points +
-- birthday_link_transaction in ONE transaction: the log row, the points and the message
-- (which the pass sync delivers after commit) exist together or not at all.

-- name: birthday_programs
-- $1 one program's id (whatever its birthday_bot_enabled, so a hand-run can say it is off),
-- or NULL for every program that enabled the bot.
SELECT id, name, timezone, birthday_bot_enabled, birthday_reward_points, birthday_message
FROM programs
WHERE ($1::uuid IS NULL AND birthday_bot_enabled) OR id = $1::uuid
ORDER BY id;

-- name: birthday_passes_due
-- $1 program id, $2 birth keys (month * 100 + day) celebrated on the program's local today,
-- $3 the gift year, $4 whether passes not installed in a wallet count (they get the points
-- but no message, so only when there are points to give).
SELECT p.id AS pass_id,
       u.first_name,
       u.last_name,
       coalesce(p.status = 'INSTALLED', false) AS installed
FROM users u
JOIN passes_master p ON p.user_id = u.id
WHERE u.birth_date IS NOT NULL
  -- exactly the expression of users_birthday_month_day_idx, or the planner cannot use it
  AND (EXTRACT(MONTH FROM u.birth_date) * 100 + EXTRACT(DAY FROM u.birth_date))::int
      = ANY($2::int[])
  AND p.program_id = $1
  AND p.is_active
  -- points only exist on membership cards; coupons and tickets have nothing to receive
  AND p.protocol = 'MEMBERSHIP'
  AND ($4::boolean OR p.status = 'INSTALLED')
  AND NOT EXISTS (SELECT 1 FROM birthday_logs b WHERE b.pass_id = p.id AND b.year = $3)
ORDER BY p.id;

-- name: birthday_log_gift
-- $1 pass id, $2 program id, $3 gift year, $4 the local date celebrated.
-- No row back = this pass was already celebrated this year (by an earlier tick, or by another
-- daemon right now: the unique key makes the second insert wait for the first, then skip).
INSERT INTO birthday_logs (pass_id, program_id, year, celebrated_on)
VALUES ($1, $2, $3, $4)
ON CONFLICT (pass_id, year) DO NOTHING
RETURNING id;

-- name: birthday_balance_for_update
-- $1 pass id. Locks the balance so the {points} rendered into the message is the balance the
-- gift produces, even with other transactions arriving on the pass meanwhile.
SELECT points_balance FROM protocol_membership WHERE pass_id = $1 FOR UPDATE;

-- name: birthday_give_points
-- $1 pass id, $2 points (0 = message only), $3 message or NULL, $4 external_ref
-- ('birthday:<year>:<pass id>', so even a lost log row can never mean a second gift).
SELECT loyaltyd.process_membership_transaction($1, $2, 'BIRTHDAY', $3, $4);

-- name: birthday_link_transaction
-- $1 birthday_logs id, $2 the transaction that carried the gift.
UPDATE birthday_logs SET transaction_id = $2 WHERE id = $1;
