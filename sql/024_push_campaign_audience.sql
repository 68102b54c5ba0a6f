-- push_campaign_audience(): the passes a campaign reaches, one set-based query per segment (SPEC §3.2).
--
-- Always: active, INSTALLED passes of the program whose member opted in to marketing (a NULL
-- opt-in is not consent). Thresholds are strict ("more than"). The daemon passes validated
-- parameters with defaults filled in; admins may call it too, to preview an audience:
--     SELECT count(*) FROM push_campaign_audience('<program id>', 'WHALE', p_min_points => 800);
-- A campaign's free-text `target_query` is never executed, here or anywhere.

CREATE OR REPLACE FUNCTION push_campaign_audience(
    p_program_id uuid,
    p_segment text,
    p_min_tier_points integer DEFAULT 1000,
    p_min_points integer DEFAULT 500,
    p_inactive_days integer DEFAULT 30,
    p_zip_codes text[] DEFAULT NULL,
    p_member_ids text[] DEFAULT NULL)
RETURNS TABLE (pass_id uuid)
LANGUAGE sql STABLE
AS $$
    -- Segments decided by the pass and its member. `p_segment` is the same for every row, so
    -- the planner turns the segment tests into one-time filters.
    SELECT p.id
    FROM passes_master p
    JOIN users u ON u.id = p.user_id
    LEFT JOIN protocol_membership m ON m.pass_id = p.id
    WHERE p_segment IN ('ALL', 'VIP', 'WHALE', 'SLUMBER', 'LOCAL')
      AND p.program_id = p_program_id
      AND p.is_active AND p.status = 'INSTALLED' AND u.marketing_opt_in IS TRUE
      AND CASE p_segment
            WHEN 'ALL' THEN true
            WHEN 'VIP' THEN m.tier_points > p_min_tier_points
            WHEN 'WHALE' THEN m.points_balance > p_min_points
            -- Quiet for `p_inactive_days`, and old enough to have been quiet that long.
            WHEN 'SLUMBER' THEN
                p.created_at <= now() - make_interval(days => p_inactive_days)
                AND NOT EXISTS (
                    SELECT 1 FROM transactions t
                    WHERE t.pass_id = p.id
                      AND t.created_at > now() - make_interval(days => p_inactive_days))
            WHEN 'LOCAL' THEN btrim(u.zip) = ANY (p_zip_codes)
          END
    UNION ALL
    -- CSV: start from the member ids and use the (program_id, external_id) unique index, so a
    -- list of a million ids costs a million index probes, not a million-element array scan.
    SELECT p.id
    FROM (SELECT DISTINCT unnest(p_member_ids)) AS wanted (member_id)
    JOIN passes_master p ON p.program_id = p_program_id AND p.external_id = wanted.member_id
    JOIN users u ON u.id = p.user_id
    WHERE p_segment = 'CSV'
      AND p.is_active AND p.status = 'INSTALLED' AND u.marketing_opt_in IS TRUE
$$;

COMMENT ON FUNCTION push_campaign_audience(uuid, text, integer, integer, integer, text[], text[]) IS
    'Pass ids a push campaign reaches: active, INSTALLED, opted-in passes of the program, narrowed by segment.';
