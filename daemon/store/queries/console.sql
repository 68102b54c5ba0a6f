-- The console's statements (its tables, loyaltyd.console_*: docs/schema.sql). Every statement
-- that finds a program's data by an id from a request takes the viewer's program ids ($n uuid[])
-- and keeps to them: an id of another program finds nothing, which the console answers with a
-- 404. Those about one campaign's deliveries (console_outcomes, console_send_rate,
-- console_recipients) take a campaign the handler has just found that way. Under a Supabase
-- sign-in the same statements run as `authenticated` with the token's claims, so the user's
-- row-level security applies as well.

-- --- people, invitations, sessions ------------------------------------------------------------

-- name: console_user_upsert
-- $1 = email (lower case), $2 = operator. The person, created if new (an existing person keeps
-- their password; operator only ever turns on here).
INSERT INTO loyaltyd.console_users AS u (email, operator) VALUES ($1, $2)
ON CONFLICT (email) DO UPDATE SET operator = u.operator OR excluded.operator
RETURNING id, email, operator, password_hash IS NOT NULL AS has_password;

-- name: console_membership_grant
-- $1 = user id, $2 = program id, $3 = role. A second invitation to a program sets the role.
INSERT INTO loyaltyd.console_memberships (user_id, program_id, role) VALUES ($1, $2, $3)
ON CONFLICT (user_id, program_id) DO UPDATE SET role = excluded.role;

-- name: console_invite_create
-- $1 = token hash, $2 = user id, $3 = hours valid.
INSERT INTO loyaltyd.console_invites (token_hash, user_id, expires_at)
VALUES ($1, $2, now() + make_interval(hours => $3));

-- name: console_invite_use
-- $1 = token hash. The invitation, used up by this statement: its person, or nothing when it is
-- unknown, used or expired.
UPDATE loyaltyd.console_invites i
   SET used_at = now()
  FROM loyaltyd.console_users u
 WHERE i.token_hash = $1 AND i.used_at IS NULL AND i.expires_at > now() AND u.id = i.user_id
RETURNING u.id, u.email;

-- name: console_invite_peek
-- $1 = token hash. Whether the invitation can still be used, and for whom (not used by this).
SELECT u.email FROM loyaltyd.console_invites i JOIN loyaltyd.console_users u ON u.id = i.user_id
 WHERE i.token_hash = $1 AND i.used_at IS NULL AND i.expires_at > now();

-- name: console_password_set
-- $1 = user id, $2 = password hash. An invitation accepted: the account works again (a revoked
-- one too) with this password only, so every session it had ends.
WITH ended AS (
    UPDATE loyaltyd.console_sessions SET revoked_at = now()
     WHERE user_id = $1 AND revoked_at IS NULL
)
UPDATE loyaltyd.console_users
   SET password_hash = $2, password_set_at = now(), disabled_at = NULL
 WHERE id = $1;

-- name: console_user_by_email
-- $1 = email. An account that may sign in (not revoked).
SELECT id, email, password_hash, operator FROM loyaltyd.console_users
 WHERE email = $1 AND disabled_at IS NULL;

-- name: console_signin_attempt
-- $1 = email (NULL: none, a Supabase token), $2 = address, $3 = window in seconds. Counts this
-- attempt for the account and the address, before any password is checked, and returns each
-- one's attempts in its window, this one included. One upsert: parallel attempts queue on each
-- key's row (always locked in key order), so none is missed.
WITH gone AS (
    -- other keys' windows that have passed (on the window_start index)
    DELETE FROM loyaltyd.console_signin_attempts
     WHERE window_start < now() - make_interval(secs => $3)
       AND key <> ALL (ARRAY['email:' || $1, 'address:' || $2])
),
counted AS (
    INSERT INTO loyaltyd.console_signin_attempts AS a (key, window_start, attempts)
    SELECT k, now(), 1 FROM unnest(ARRAY['address:' || $2, 'email:' || $1]) AS k
     WHERE k IS NOT NULL
     ORDER BY k
    ON CONFLICT (key) DO UPDATE
       SET window_start = CASE WHEN a.window_start < now() - make_interval(secs => $3)
                               THEN now() ELSE a.window_start END,
           attempts = CASE WHEN a.window_start < now() - make_interval(secs => $3)
                           THEN 1 ELSE a.attempts + 1 END
    RETURNING key, attempts
)
SELECT coalesce(max(attempts) FILTER (WHERE key = 'email:' || $1), 0) AS by_email,
       coalesce(max(attempts) FILTER (WHERE key = 'address:' || $2), 0) AS by_address
  FROM counted;

-- name: console_signin_succeeded
-- $1 = email. The account's own count starts again (the address keeps its count).
DELETE FROM loyaltyd.console_signin_attempts WHERE key = 'email:' || $1;

-- name: console_session_create
-- $1 = id hash, $2 = user id (NULL: Supabase), $3 = Supabase claims, $4 = CSRF token,
-- $5 = expires at. Sessions and invitations a day past their expiry go (by their expiry
-- indexes), so neither table grows with every sign-in.
WITH old_sessions AS (
    DELETE FROM loyaltyd.console_sessions WHERE expires_at < now() - interval '1 day'
),
old_invites AS (
    DELETE FROM loyaltyd.console_invites WHERE expires_at < now() - interval '1 day'
)
INSERT INTO loyaltyd.console_sessions (id_hash, user_id, supabase_claims, csrf_token, expires_at)
VALUES ($1, $2, $3::jsonb, $4, $5);

-- name: console_session
-- $1 = id hash. A live session with its person, their programs and roles.
SELECT s.user_id, s.supabase_claims, s.csrf_token, s.expires_at, u.email, u.operator,
       coalesce((SELECT jsonb_object_agg(m.program_id, m.role)
                   FROM loyaltyd.console_memberships m WHERE m.user_id = s.user_id), '{}')
           AS roles
  FROM loyaltyd.console_sessions s
  LEFT JOIN loyaltyd.console_users u ON u.id = s.user_id
 WHERE s.id_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
   AND (s.user_id IS NULL OR u.disabled_at IS NULL);

-- name: console_session_end
-- $1 = id hash (signing out).
UPDATE loyaltyd.console_sessions SET revoked_at = now() WHERE id_hash = $1 AND revoked_at IS NULL;

-- name: console_revoke
-- $1 = email, $2 = take their programs away too. The person can no longer use the console:
-- the account is disabled, its password and operator role gone, every session ended and every
-- unused invitation deleted; only a new invitation lets them in again.
WITH person AS (
    UPDATE loyaltyd.console_users
       SET disabled_at = coalesce(disabled_at, now()), password_hash = NULL, operator = false,
           -- taking their programs away takes the ones to come too (sql/064)
           every_program = CASE WHEN $2 THEN NULL ELSE every_program END
     WHERE email = $1
    RETURNING id
),
ended AS (
    UPDATE loyaltyd.console_sessions SET revoked_at = now()
     WHERE user_id IN (SELECT id FROM person) AND revoked_at IS NULL
    RETURNING 1
),
invites AS (
    DELETE FROM loyaltyd.console_invites
     WHERE used_at IS NULL AND user_id IN (SELECT id FROM person)
    RETURNING 1
),
removed AS (
    DELETE FROM loyaltyd.console_memberships
     WHERE $2 AND user_id IN (SELECT id FROM person)
    RETURNING 1
)
SELECT (SELECT count(*) FROM person)::int AS people, (SELECT count(*) FROM ended)::int AS sessions,
       (SELECT count(*) FROM invites)::int AS invitations,
       (SELECT count(*) FROM removed)::int AS memberships;

-- name: console_supabase_programs
-- No parameters; runs as `authenticated` with the token's claims. The programs the signed-in
-- Supabase user administers, as the user's admin_profiles says (under its own row-level
-- security).
SELECT program_id FROM public.admin_profiles WHERE id = (SELECT auth.uid()) AND program_id IS NOT NULL;

-- --- programs --------------------------------------------------------------------------------

-- name: console_programs
-- $1 = program ids.
SELECT id, name, coalesce(nullif(timezone, ''), 'UTC') AS timezone,
       max_pushes_per_pass_per_day, birthday_bot_enabled, birthday_reward_points,
       birthday_message
  FROM programs WHERE id = ANY($1::uuid[]) ORDER BY name, id;

-- name: console_program_update
-- A program's settings, only if it is one of the viewer's: the names of the settings that
-- changed (no row: not the viewer's program). The program's trigger logs each change with who
-- within this statement (sql/062), so none is ever without its entry.
WITH before AS (
    SELECT id, birthday_bot_enabled, birthday_reward_points, birthday_message,
           timezone, max_pushes_per_pass_per_day
      FROM programs WHERE id = $program_id AND id = ANY($viewer_programs::uuid[]) FOR UPDATE
),
changed AS (
    UPDATE programs g
       SET birthday_bot_enabled = $birthday_bot_enabled,
           birthday_reward_points = $birthday_reward_points,
           birthday_message = $birthday_message, timezone = $timezone,
           max_pushes_per_pass_per_day = $max_pushes_per_pass_per_day
      FROM before b
     -- who, for the log trigger: set as the row is updated, for this transaction only
     WHERE g.id = b.id AND set_config('loyaltyd.changed_by', $who, true) IS NOT NULL
    RETURNING g.id
)
SELECT array_remove(ARRAY[
           CASE WHEN b.birthday_bot_enabled IS DISTINCT FROM $birthday_bot_enabled
                THEN 'birthday_bot_enabled' END,
           CASE WHEN b.birthday_reward_points IS DISTINCT FROM $birthday_reward_points
                THEN 'birthday_reward_points' END,
           CASE WHEN nullif(b.birthday_message, '') IS DISTINCT FROM nullif($birthday_message, '')
                THEN 'birthday_message' END,
           CASE WHEN b.timezone IS DISTINCT FROM $timezone THEN 'timezone' END,
           CASE WHEN b.max_pushes_per_pass_per_day IS DISTINCT FROM $max_pushes_per_pass_per_day
                THEN 'max_pushes_per_pass_per_day' END], NULL) AS changed
  FROM before b JOIN changed c ON c.id = b.id;

-- name: console_setting_changes
-- $1 = program id, $2 = how many. The newest changes of a program's settings.
SELECT changed_by, changed_at, setting, old_value, new_value
  FROM loyaltyd.program_setting_changes WHERE program_id = $1
 ORDER BY changed_at DESC, id DESC LIMIT $2;

-- name: console_sample_member
-- $1 = program id, $2 = program ids of the viewer, $3 = a member id (NULL: any). A real member
-- of the program for the message preview: the given one, else one with a first name.
SELECT p.id AS pass_id, p.external_id, p.passkit_internal_id, u.first_name, u.last_name,
       m.points_balance AS points, g.name AS program_name
  FROM passes_master p
  JOIN programs g ON g.id = p.program_id
  LEFT JOIN users u ON u.id = p.user_id
  LEFT JOIN protocol_membership m ON m.pass_id = p.id
 WHERE p.program_id = $1 AND p.program_id = ANY($2::uuid[])
   AND ($3::text IS NULL OR p.external_id = $3)
 ORDER BY (u.first_name IS NULL), p.external_id
 LIMIT 1;

-- --- campaigns --------------------------------------------------------------------------------

-- name: console_campaigns
-- $1 = program ids, $2 = status filter (NULL: all), $3 = how many. The history, newest first,
-- with progress.
SELECT c.id, c.program_id, g.name AS program_name, c.name, c.segment, c.status,
       c.scheduled_at, c.created_at, c.started_at, c.finished_at,
       coalesce(c.recipient_count, 0) AS recipients, coalesce(c.sent_count, 0) AS sent,
       coalesce(c.failed_count, 0) AS failed, coalesce(c.skipped_count, 0) AS skipped,
       c.error, c.created_by
  FROM push_campaigns c JOIN programs g ON g.id = c.program_id
 WHERE c.program_id = ANY($1::uuid[]) AND ($2::text IS NULL OR c.status = $2)
 ORDER BY c.created_at DESC, c.id DESC
 LIMIT $3;

-- name: console_campaign
-- $1 = campaign id, $2 = program ids. One campaign, nothing when it is another program's.
SELECT c.id, c.program_id, g.name AS program_name,
       coalesce(nullif(g.timezone, ''), 'UTC') AS timezone, g.max_pushes_per_pass_per_day,
       c.name, c.message_text, c.status, c.segment, c.min_tier_points, c.min_points,
       c.inactive_days, c.zip_codes, c.member_ids, c.csv_upload_url, c.scheduled_at,
       c.created_at, c.updated_at, c.started_at, c.finished_at, c.recipient_count,
       c.sent_count, c.failed_count, c.skipped_count, c.audience_counted_at,
       c.unknown_member_count, c.unknown_member_ids, c.error, c.created_by, c.confirmed_by,
       c.confirmed_at, c.cancelled_by, c.cancelled_at
  FROM push_campaigns c JOIN programs g ON g.id = c.program_id
 WHERE c.id = $1 AND c.program_id = ANY($2::uuid[]);

-- name: console_campaign_insert
-- A campaign from the console, only into one of the viewer's programs: status 'DRAFT' (the
-- daemon counts its audience) or 'PENDING' (a test send); created_by is who.
INSERT INTO push_campaigns (program_id, name, message_text, segment, min_tier_points,
                            min_points, inactive_days, zip_codes, member_ids, scheduled_at,
                            status, created_by)
SELECT $program_id, $name, $message, $segment, $min_tier_points, $min_points, $inactive_days,
       $zip_codes, $member_ids, $scheduled_at, $status, $created_by
 WHERE $program_id = ANY($viewer_programs::uuid[])
RETURNING id;

-- name: console_campaign_confirm
-- $1 = campaign id, $2 = program ids, $3 = who, $4 = the count the admin confirmed. The DRAFT,
-- as counted, goes out: only if it was counted and its count is still the one confirmed.
UPDATE push_campaigns
   SET status = 'PENDING', confirmed_by = $3
 WHERE id = $1 AND program_id = ANY($2::uuid[]) AND status = 'DRAFT'
   AND audience_counted_at IS NOT NULL AND recipient_count = $4
RETURNING id;

-- name: console_campaign_cancel
-- $1 = campaign id, $2 = program ids, $3 = who.
UPDATE push_campaigns
   SET status = 'CANCELLED', cancelled_by = $3
 WHERE id = $1 AND program_id = ANY($2::uuid[])
   AND status IN ('DRAFT', 'PENDING', 'PROCESSING')
RETURNING id;

-- name: console_outcomes
-- $1 = campaign id. Skip and failure reasons, grouped.
SELECT state, coalesce(error, '') AS reason, count(*)::int AS n
  FROM campaign_deliveries
 WHERE campaign_id = $1 AND state IN ('failed', 'skipped')
 GROUP BY state, error ORDER BY n DESC, reason LIMIT 20;

-- name: console_send_rate
-- $1 = campaign id, $2 = since. Messages sent per second (one point per second with any).
SELECT date_trunc('second', finished_at) AS at, count(*)::float8 AS n
  FROM campaign_deliveries
 WHERE campaign_id = $1 AND state = 'sent' AND finished_at >= $2
 GROUP BY 1 ORDER BY 1;

-- name: console_recipients
-- $1 = campaign id, $2 = outcome filter (NULL: all), $3 = after this pass id (paging),
-- $4 = how many.
SELECT d.pass_id, p.external_id, d.state, d.error, d.rendered_text, d.finished_at
  FROM campaign_deliveries d -- the view: the campaign's text where it is stored once (sql/067)
  LEFT JOIN passes_master p ON p.id = d.pass_id
 WHERE d.campaign_id = $1 AND ($2::text IS NULL OR d.state = $2)
   AND ($3::uuid IS NULL OR d.pass_id > $3)
 ORDER BY d.pass_id
 LIMIT $4;

-- name: console_progress_changes
-- $1 = program ids watched, $2 = changed after. The live feed's one read a second while someone
-- watches: campaigns of those programs changed since (what their pages show live), with a
-- running campaign's recipients waiting to retry after a transient failure (their own partial
-- index, sql/065), and (on every row; one row with a NULL id when nothing changed) whether any
-- of them is being sent or is a DRAFT waiting for its count.
WITH busy AS (
    SELECT EXISTS (SELECT 1 FROM push_campaigns
                    WHERE program_id = ANY($1::uuid[])
                      AND ((status IN ('PENDING', 'PROCESSING') AND finished_at IS NULL
                            AND (scheduled_at IS NULL OR scheduled_at <= now()))
                        OR (status = 'DRAFT' AND audience_counted_at IS NULL))) AS running
),
changed AS (
    SELECT c.id, c.program_id, c.status, coalesce(c.sent_count, 0) AS sent,
           coalesce(c.failed_count, 0) AS failed, coalesce(c.skipped_count, 0) AS skipped,
           c.recipient_count, c.audience_counted_at IS NOT NULL AS counted, c.started_at,
           c.finished_at, c.updated_at, coalesce(c.unknown_member_count, 0) AS unknown,
           coalesce(c.unknown_member_ids[1:5], '{}') AS unknown_sample,
           coalesce(nullif(g.timezone, ''), 'UTC') AS timezone
      FROM push_campaigns c JOIN programs g ON g.id = c.program_id
     WHERE c.program_id = ANY($1::uuid[]) AND c.updated_at > $2
)
SELECT c.*, w.waiting AS retry_waiting, w.held AS retry_held, w.next_at AS retry_next_at,
       w.latest_error AS retry_error, b.running
  FROM busy b
  LEFT JOIN changed c ON true
  LEFT JOIN LATERAL (
      SELECT count(*)::int AS waiting,
             count(*) FILTER (WHERE d.available_at = 'infinity')::int AS held,
             min(d.available_at) FILTER (WHERE d.available_at < 'infinity') AS next_at,
             (array_agg(d.error ORDER BY d.available_at DESC))[1] AS latest_error
        FROM loyaltyd.campaign_deliveries d
       WHERE c.status = 'PROCESSING' AND d.campaign_id = c.id
         AND d.state = 'pending' AND d.error IS NOT NULL
  ) w ON true;

-- --- operations ----------------------------------------------------------------------------

-- name: console_sends_per_second
-- $1 = since. Campaign messages sent, and failed, per second over every program: read through
-- the campaigns running since then (their deliveries by primary key), never the whole history.
SELECT date_trunc('second', d.finished_at) AS at,
       count(*) FILTER (WHERE d.state = 'sent')::float8 AS sent,
       count(*) FILTER (WHERE d.state = 'failed')::float8 AS failed
  FROM push_campaigns c
  JOIN loyaltyd.campaign_deliveries d ON d.campaign_id = c.id
 WHERE (c.finished_at IS NULL OR c.finished_at >= $1)
   AND d.finished_at >= $1 AND d.state IN ('sent', 'failed')
 GROUP BY 1 ORDER BY 1;
