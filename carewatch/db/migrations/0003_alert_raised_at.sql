-- When an alert's severity was last raised (battery_low warning -> high): escalation counts
-- from then instead of from opened_at.
ALTER TABLE alerts ADD COLUMN raised_at timestamptz;
