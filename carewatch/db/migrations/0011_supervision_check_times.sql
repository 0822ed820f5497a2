-- Issue 11: what the night round shows of a check beyond its state: when to look again after
-- "not seen" (retry_at, while the retry is due) and when the physical visit that settled it was
-- made (visited_at). Written by the gateways' supervision pass with the verdict.
ALTER TABLE supervision_checks
    ADD COLUMN retry_at timestamptz,
    ADD COLUMN visited_at timestamptz;
