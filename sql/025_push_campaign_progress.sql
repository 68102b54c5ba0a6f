-- push_campaign_progress: what Softr shows about each campaign (counts, percentage, timing).

CREATE OR REPLACE VIEW push_campaign_progress AS
SELECT
    c.id,
    c.program_id,
    c.name,
    c.status,
    c.segment,
    c.scheduled_at,
    c.started_at,
    c.finished_at,
    coalesce(c.recipient_count, 0) AS recipient_count,
    coalesce(c.sent_count, 0) AS sent_count,
    coalesce(c.failed_count, 0) AS failed_count,
    coalesce(c.skipped_count, 0) AS skipped_count,
    greatest(coalesce(c.recipient_count, 0) - done.n, 0) AS remaining_count,
    CASE
        WHEN c.status = 'COMPLETED' THEN 100.0
        WHEN coalesce(c.recipient_count, 0) = 0 THEN 0.0
        ELSE round(100.0 * least(done.n, c.recipient_count) / c.recipient_count, 1)
    END AS progress_percent,
    c.error,
    c.unknown_member_count,
    c.created_at
FROM push_campaigns c
CROSS JOIN LATERAL (
    SELECT coalesce(c.sent_count, 0) + coalesce(c.failed_count, 0)
           + coalesce(c.skipped_count, 0) AS n
) done;

COMMENT ON VIEW push_campaign_progress IS
    'Each push campaign with its counters and progress_percent (0-100), for Softr.';
