-- The registry (organisations, sites, devices), the event store and the dead-letter store.
-- Table and column names of events, devices, alerts and dead_letters are part of the contract:
-- operators and Grafana query them directly.

CREATE TABLE organisations (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{1,63}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sites (
    id                    text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{1,63}$'),
    org_id                text NOT NULL REFERENCES organisations (id),
    name                  text NOT NULL,
    timezone              text NOT NULL DEFAULT 'Europe/Stockholm',
    created_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sites_org_id_idx ON sites (org_id);

CREATE TABLE devices (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{2,63}$'),
    kind        text NOT NULL,
    site_id     text NOT NULL REFERENCES sites (id),
    label       text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'decommissioned')),
    last_seen   timestamptz,
    online      boolean NOT NULL DEFAULT false,
    battery     smallint CHECK (battery BETWEEN 0 AND 100),
    firmware    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Gateways re-read the devices changed since their last look; a trigger keeps this current.
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX devices_site_id_idx ON devices (site_id);
CREATE INDEX devices_updated_at_idx ON devices (updated_at);

-- Only registry changes (kind, site, status) move updated_at: last_seen/online/battery change
-- with every batch and the gateways do not need to hear about those.
CREATE FUNCTION devices_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.kind, NEW.site_id, NEW.status) IS DISTINCT FROM (OLD.kind, OLD.site_id, OLD.status) THEN
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER devices_touch_updated_at BEFORE UPDATE ON devices
    FOR EACH ROW EXECUTE FUNCTION devices_touch_updated_at();

-- Device time first: a hypertable under TimescaleDB (see carewatch/db/timescale.py).
-- Unique on (device_id, event_id, time) as the contract says; the key's columns are ordered
-- (device_id, time, event_id) so that the same index also answers "this device's events
-- between t1 and t2" and no second (device_id, time) index has to be kept up on every insert.
-- time is in the key because TimescaleDB requires the partitioning column there; a resent
-- event carries the same id and ts, so it still collides and is stored once.
CREATE TABLE events (
    time         timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    device_id    text NOT NULL,
    event_id     text NOT NULL,
    type         text NOT NULL,
    data         jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT events_device_time_event_key UNIQUE (device_id, time, event_id)
);
-- Events arrive roughly in time order, so a BRIN index (a few pages for millions of rows,
-- nearly free to maintain) serves time-range scans and the retention delete. Under TimescaleDB
-- chunk exclusion does the coarse part and this index the rest (carewatch/db/timescale.py).
CREATE INDEX events_time_brin ON events USING brin (time);

CREATE TABLE dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text NOT NULL,
    payload      bytea NOT NULL,
    reason       text NOT NULL,
    detail       text NOT NULL DEFAULT ''
);
CREATE INDEX dead_letters_received_at_idx ON dead_letters (received_at DESC);
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason);
