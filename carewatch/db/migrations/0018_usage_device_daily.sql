-- Issue 14: a per-device daily rollup, for "minutes per robot" over long periods.
--
-- The usage report's robot minutes per robot summed usage_device_hourly: a year of a robot is
-- up to 8,760 index entries, ~58 ms of a year-by-week report on a year of 1,000 devices. The
-- same sums per local day are at most 365 entries a robot.
--
-- Kept exactly as usage_site_daily is (carewatch/db/rollups.py): by the gateway's ingest
-- statement, from the rows it actually inserted, and by the rebuild (`carewatch usage rebuild`,
-- the backfill). `day` is the calendar date of the event's device time in the time zone of the
-- device's site (at store time for the gateway, now for the rebuild), as usage_site_daily's.
-- Types and measures are usage_device_hourly's; no `sessions` (reserved and always 0 there).
--
-- A plain table on TimescaleDB too: a fraction of usage_device_hourly's rows (a day instead of
-- up to 24 hours per device and type), read by device and day range through the index below.
CREATE TABLE usage_device_daily (
    device_id   text NOT NULL,
    day         date NOT NULL,                 -- the calendar date in the site's time zone
    type        text NOT NULL,
    events      integer NOT NULL DEFAULT 0,
    duration_s  double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, day, type)
);

-- "Minutes per robot" (api/usage_queries.py): one type, a range of days per robot, one measure;
-- an index-only scan, as migration 0006's index on the hourly rollup.
CREATE INDEX usage_device_daily_robot_minutes_idx ON usage_device_daily (device_id, day)
    INCLUDE (duration_s) WHERE type = 'robot.interaction';

-- An existing installation: the days of the hourly rows, which outlive the events (the rebuild
-- cannot go past the retention horizon). The local date of a UTC hour is the date of every
-- event in it for the whole-hour offsets of our sites' zones; the site is the device's now.
INSERT INTO usage_device_daily (device_id, day, type, events, duration_s)
SELECT h.device_id, (h.bucket AT TIME ZONE s.timezone)::date, h.type,
       sum(h.events)::integer, sum(h.duration_s)
  FROM usage_device_hourly h
  JOIN devices d ON d.id = h.device_id
  JOIN sites s ON s.id = d.site_id
 GROUP BY 1, 2, 3;
