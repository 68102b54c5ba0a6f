-- A campaign's recipients waiting to retry after a transient failure, found without reading
-- the campaign's other pending rows (progress says "4 waiting to retry after PassKit 503").

CREATE INDEX IF NOT EXISTS campaign_deliveries_retrying_idx
    ON loyaltyd.campaign_deliveries (campaign_id, available_at)
    WHERE state = 'pending' AND error IS NOT NULL;
