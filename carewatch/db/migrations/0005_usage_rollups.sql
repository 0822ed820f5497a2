-- Issue 5: usage rollups, so that the dashboards read thousands of rows instead of millions.
--
-- The gateway keeps these up to date in the transaction that stores a batch, from the rows its
-- INSERT ... ON CONFLICT DO NOTHING actually inserted: a resent event is not inserted again, so
-- it is never counted twice, and a late event lands in the bucket of its own device time.
-- `carewatch usage rebuild` recomputes a time range from `events` with the same definitions
-- (carewatch/db/rollups.py). The same tables serve plain PostgreSQL and TimescaleDB
-- (carewatch/db/timescale.py makes usage_device_hourly a hypertable there).
--
-- Heartbeats are not rolled up (98 % of the traffic; no dashboard counts them).
-- `type` is the event type, or a derived one:
--   lock.visit        a lock.locked that follows the same device's lock.unlocked with no lock
--                     event in between (device time), at most 12 h later; bucketed by the
--                     locked time; duration_s = locked - unlocked.
--   battery.replaced  a heartbeat whose battery is at least 30 points above the device's
--                     previous known battery.
-- duration_s is the sum of data.duration_s for camera.check_ended and robot.interaction (and
-- of visit durations for lock.visit), 0 for the other types. sessions is reserved (0).
-- Site attribution: the device's site when the event was stored.

CREATE TABLE usage_device_hourly (
    device_id   text NOT NULL,
    bucket      timestamptz NOT NULL,          -- the UTC hour
    type        text NOT NULL,
    events      integer NOT NULL DEFAULT 0,
    duration_s  double precision NOT NULL DEFAULT 0,
    sessions    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, bucket, type)
);
-- "Every robot's interaction minutes in the period": one type over a time range, all devices.
-- Without INCLUDE columns, so that the gateway's upserts (which change only events and
-- duration_s) stay HOT updates and do not touch this index.
CREATE INDEX usage_device_hourly_type_bucket_idx ON usage_device_hourly (type, bucket);

-- The primary keys serve the dashboards' reads: some sites, a range of buckets or days, all
-- types (a report reads nearly every type at once).
CREATE TABLE usage_site_hourly (
    site_id     text NOT NULL,
    bucket      timestamptz NOT NULL,          -- the UTC hour
    type        text NOT NULL,
    events      integer NOT NULL DEFAULT 0,
    duration_s  double precision NOT NULL DEFAULT 0,
    sessions    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, bucket, type)
);

CREATE TABLE usage_site_daily (
    site_id     text NOT NULL,
    day         date NOT NULL,                 -- the calendar date in the site's time zone
    type        text NOT NULL,
    events      integer NOT NULL DEFAULT 0,
    duration_s  double precision NOT NULL DEFAULT 0,
    sessions    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, day, type)
);

-- A lock.locked needs its device's previous lock event, possibly from an earlier batch or a
-- month ago: lock events are rare (a few a day per lock), so this index is small and costs
-- nothing on the heartbeats, while the unique (device_id, time, event_id) index would have to
-- walk back over every heartbeat in between.
CREATE INDEX events_lock_device_time_idx ON events (device_id, time)
    WHERE type IN ('lock.unlocked', 'lock.locked');
