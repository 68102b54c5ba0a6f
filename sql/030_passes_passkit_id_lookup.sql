-- Find a pass by its PassKit id quickly (the member import refuses a PassKit id already held by another pass).
CREATE INDEX IF NOT EXISTS passes_master_passkit_internal_id_idx
    ON passes_master (passkit_internal_id) WHERE passkit_internal_id IS NOT NULL;
