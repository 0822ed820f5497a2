-- Issue 11: night supervision by camera. Residences, their supervision plans (every version
-- kept), absences, device maintenance windows, physical visits, each planned check's verdict,
-- and the effect estimate's assumptions per site. The rules themselves are pure
-- (devices/supervision.py); these tables hold the facts they are judged from.
--
-- No resident names or personal identity numbers anywhere: a residence is named by the label
-- staff use ("Lgh 12") and, optionally, the municipality's own case number.

-- The effect estimate: a physical night visit avoided saves visit_minutes (travel included);
-- a lock visit saves key_handling_minutes of fetching and returning keys.
ALTER TABLE sites
    ADD COLUMN visit_minutes smallint NOT NULL DEFAULT 20
        CHECK (visit_minutes BETWEEN 1 AND 240),
    ADD COLUMN key_handling_minutes smallint NOT NULL DEFAULT 3
        CHECK (key_handling_minutes BETWEEN 0 AND 120);

-- The place a care decision is about: an apartment in a care home, a home in home care.
CREATE TABLE residences (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id       text NOT NULL REFERENCES sites (id),
    label         text NOT NULL CHECK (btrim(label) <> '' AND char_length(label) <= 64),
    external_ref  text CHECK (char_length(external_ref) <= 64),  -- the municipality's case number
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- Also the index of "the residences of a site".
    CONSTRAINT residences_site_label_key UNIQUE (site_id, label),
    -- What devices' composite foreign key points at: a device's residence is in its site.
    CONSTRAINT residences_id_site_key UNIQUE (id, site_id)
);

-- A device belongs to at most one residence, of its own site. With the key's default MATCH
-- SIMPLE a device without a residence (NULL) is not checked. Moving a device to another site
-- must clear or change its residence in the same statement, or the key refuses it.
ALTER TABLE devices
    ADD COLUMN residence_id bigint,
    ADD CONSTRAINT devices_residence_fkey
        FOREIGN KEY (residence_id, site_id) REFERENCES residences (id, site_id);
CREATE INDEX devices_residence_id_idx ON devices (residence_id) WHERE residence_id IS NOT NULL;

-- One row per version of a residence's plan, never updated: the version in force is the one
-- with the latest recorded_at at or before the moment asked about (devices.supervision.in_force).
-- Check times are local wall-clock times in the site's time zone; weekdays (Monday = 0) and
-- valid_from/valid_to are those of the night's evening. An empty check_times stops the checks
-- from recorded_at on. Writers lock the residence's row first, so versions of one residence are
-- recorded one after the other and the unique key never sees a tie.
CREATE TABLE supervision_plans (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    residence_id  bigint NOT NULL REFERENCES residences (id),
    recorded_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    recorded_by   text NOT NULL,
    check_times   time[] NOT NULL CHECK (array_position(check_times, NULL) IS NULL),
    weekdays      smallint[] NOT NULL DEFAULT '{0,1,2,3,4,5,6}'
                  CHECK (weekdays <@ '{0,1,2,3,4,5,6}'::smallint[]
                         AND array_position(weekdays, NULL) IS NULL),
    valid_from    date,                    -- first night (its evening's date), inclusive
    valid_to      date,                    -- last night, inclusive
    window_s      integer NOT NULL DEFAULT 900 CHECK (window_s BETWEEN 60 AND 10800),
    retry_s       integer NOT NULL DEFAULT 900 CHECK (retry_s BETWEEN 60 AND 10800),
    follow_up     text NOT NULL DEFAULT 'physical_visit'
                  CHECK (follow_up IN ('physical_visit', 'phone_then_visit')),
    note          text NOT NULL DEFAULT '',
    CHECK (valid_from IS NULL OR valid_to IS NULL OR valid_from <= valid_to)
);
CREATE UNIQUE INDEX supervision_plans_residence_recorded_key
    ON supervision_plans (residence_id, recorded_at DESC);

-- While a resident is away no checks fall due and no supervision or presence alert opens
-- (safety alerts never pause). An absence covers [starts_at, least(expected_end, ended_at)):
-- open-ended while both are NULL; ended_at before starts_at cancels an upcoming one.
CREATE TABLE absences (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    residence_id  bigint NOT NULL REFERENCES residences (id),
    reason        text NOT NULL CHECK (reason IN ('hospital', 'travel', 'respite', 'other')),
    starts_at     timestamptz NOT NULL,
    expected_end  timestamptz CHECK (expected_end > starts_at),
    ended_at      timestamptz,             -- ended early, or the resident came back
    note          text NOT NULL DEFAULT '',
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX absences_residence_starts_idx ON absences (residence_id, starts_at);

-- A device "in repair": its device-health alerts stay silent over [starts_at, least(ends_at,
-- ended_at)); it always ends by itself.
CREATE TABLE device_maintenance (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   text NOT NULL REFERENCES devices (id),
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    ended_at    timestamptz,               -- ended early
    note        text NOT NULL DEFAULT '',
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX device_maintenance_device_starts_idx ON device_maintenance (device_id, starts_at);

-- A physical visit settles a check and resolves physical_visit_needed: recorded by staff on the
-- board (who, and a note), or proved by the residence's lock unlocked and locked again (at the
-- lock; the same lock event seen twice is one visit: the unique key).
CREATE TABLE physical_visits (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    residence_id    bigint NOT NULL REFERENCES residences (id),
    visited_at      timestamptz NOT NULL,
    source          text NOT NULL CHECK (source IN ('staff', 'lock')),
    recorded_by     text,
    note            text NOT NULL DEFAULT '',
    lock_device_id  text REFERENCES devices (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT physical_visits_residence_time_source_key UNIQUE (residence_id, visited_at, source),
    -- A staff visit names who recorded it; a lock visit names the lock.
    CONSTRAINT physical_visits_source_fields CHECK (
        CASE source
            WHEN 'staff' THEN recorded_by IS NOT NULL AND lock_device_id IS NULL
            ELSE lock_device_id IS NOT NULL
        END)
);

-- Each planned check's verdict (devices.supervision.Verdict) as last decided, for the night
-- round and the managers' figures; written again whenever the verdict changes.
CREATE TABLE supervision_checks (
    residence_id   bigint NOT NULL REFERENCES residences (id),
    planned_at     timestamptz NOT NULL,
    night          date NOT NULL,          -- the evening's date in the site's time zone
    state          text NOT NULL CHECK (state IN ('upcoming', 'due', 'done', 'late', 'missed',
                                                  'retry_due', 'visit_needed', 'visited',
                                                  'paused')),
    seen_at        timestamptz,
    duration_s     real,
    not_seen       boolean NOT NULL DEFAULT false,
    visit_needed   boolean NOT NULL DEFAULT false,
    by_visit       boolean NOT NULL DEFAULT false,
    camera_failed  boolean NOT NULL DEFAULT false,
    decided_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (residence_id, planned_at)
);
CREATE INDEX supervision_checks_night_idx ON supervision_checks (night);

-- A supervision alert (supervision_missed, physical_visit_needed) is about one planned check of
-- one residence: at most one unresolved per check and rule, so several gateways (or one that
-- restarts) cannot open it twice.
ALTER TABLE alerts
    ADD COLUMN residence_id bigint REFERENCES residences (id),
    ADD COLUMN planned_at timestamptz;
CREATE UNIQUE INDEX alerts_one_per_planned_check ON alerts (residence_id, planned_at, rule)
    WHERE planned_at IS NOT NULL AND state <> 'resolved';
-- The device rules' one-unresolved-per-(device, rule) no longer covers supervision alerts: the
-- 02:00 check's supervision_missed must open while the 00:00 one's is still on the board. The
-- gateway's OPEN_ALERT names the same predicate (gateway/alerting.py); a gateway of an older
-- release cannot open alerts against this index (its batches are held and retried, nothing is
-- lost) until it is restarted with this release: migrate, then restart the gateways.
DROP INDEX alerts_one_unresolved_per_device_rule;
CREATE UNIQUE INDEX alerts_one_unresolved_per_device_rule
    ON alerts (device_id, rule) WHERE state <> 'resolved' AND planned_at IS NULL;

-- Changes of residences, plans and absences name their residence.
ALTER TABLE audit_log ADD COLUMN residence_id bigint REFERENCES residences (id);
CREATE INDEX audit_log_residence_id_idx ON audit_log (residence_id) WHERE residence_id IS NOT NULL;

-- The supervision pass reads each camera's check_ended events since its earliest open window:
-- a few a night per camera, so this index is small and costs nothing on the heartbeats, while
-- the unique (device_id, time, event_id) index would walk over every heartbeat in between
-- (like events_lock_device_time_idx of 0005, which the pass uses for lock-proved visits).
CREATE INDEX events_camera_check_device_time_idx ON events (device_id, time)
    WHERE type = 'camera.check_ended';
