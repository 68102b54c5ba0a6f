-- Tier points at PassKit: a program whose tier points are loyaltyd's (protocol_membership.
-- tier_points, counted by process_membership_transaction) says so with passkit_tier_points;
-- its pass syncs then set PassKit's tierPoints with the balance, and each sweep compares them
-- as it compares points. Off by default: a program that keeps tier points at PassKit alone (its
-- portal, another integration) is never reset to loyaltyd's count.
ALTER TABLE public.programs
    ADD COLUMN IF NOT EXISTS passkit_tier_points boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN public.programs.passkit_tier_points IS
    'true: PassKit''s tierPoints are protocol_membership.tier_points, synced and checked like points.';

-- What PassKit last showed, and what a repair set, as for points (sql/060).
ALTER TABLE loyaltyd.wallet_passes
    ADD COLUMN IF NOT EXISTS passkit_tier_points real,
    ADD COLUMN IF NOT EXISTS drift_repaired_tier_points integer;

-- A change of tier points alone owes the pass a sync where the program shows them at PassKit
-- (the sync sends the balance with them: SetPoints sets both at once).
CREATE OR REPLACE FUNCTION loyaltyd.membership_enqueue_sync() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
    v_program uuid;
    v_tiers boolean;
BEGIN
    SELECT p.program_id, g.passkit_tier_points INTO v_program, v_tiers
      FROM public.passes_master p LEFT JOIN public.programs g ON g.id = p.program_id
     WHERE p.id = NEW.pass_id;
    IF OLD.points_balance IS DISTINCT FROM NEW.points_balance OR coalesce(v_tiers, false) THEN
        PERFORM loyaltyd.enqueue_pass_sync(NEW.pass_id, v_program, 'points', NEW.points_balance);
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS protocol_membership_enqueue_pass_sync ON public.protocol_membership;
CREATE TRIGGER protocol_membership_enqueue_pass_sync
    AFTER UPDATE OF points_balance, tier_points ON public.protocol_membership
    FOR EACH ROW WHEN (OLD.points_balance IS DISTINCT FROM NEW.points_balance
                       OR OLD.tier_points IS DISTINCT FROM NEW.tier_points)
    EXECUTE FUNCTION loyaltyd.membership_enqueue_sync();
