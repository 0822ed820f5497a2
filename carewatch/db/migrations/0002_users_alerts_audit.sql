-- Issue 3: users and their sessions, alerts and their change feed, the audit log.
-- alerts' columns named in the contract are stable: operators and Grafana query them.

-- Per-site overrides of the rule defaults of the catalog, e.g.
-- {"escalation_s": 300, "door_left_unlocked_min": 10, "battery_warning_below": 20,
--  "battery_high_below": 10, "battery_resolved_at": 30}; absent keys keep the defaults.
ALTER TABLE sites ADD COLUMN rule_settings jsonb NOT NULL DEFAULT '{}';

CREATE TABLE users (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username       text NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9._@-]{1,63}$'),
    org_id         text NOT NULL REFERENCES organisations (id),
    role           text NOT NULL CHECK (role IN ('caregiver', 'technician', 'manager', 'admin')),
    password_hash  text NOT NULL,          -- Argon2id, in its own encoded form
    display_name   text NOT NULL DEFAULT '',
    language       text NOT NULL DEFAULT 'sv' CHECK (language IN ('sv', 'en')),
    disabled       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_org_id_idx ON users (org_id);

-- A user limited to some sites has rows here; a user without rows sees every site of the org.
CREATE TABLE user_sites (
    user_id  bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    site_id  text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, site_id)
);

-- Bearer tokens (API clients) and session cookies (pages) alike: only a hash is stored, so a
-- copy of the database does not let anyone in.
CREATE TABLE auth_tokens (
    token_hash    bytea PRIMARY KEY,       -- SHA-256 of the random token
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('bearer', 'session')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    last_used_at  timestamptz
);
CREATE INDEX auth_tokens_user_id_idx ON auth_tokens (user_id);
CREATE INDEX auth_tokens_expires_at_idx ON auth_tokens (expires_at);

-- Failed logins, for rate limiting by username and by client address, across API processes.
CREATE TABLE login_failures (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username    text NOT NULL,
    client      text NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_username_idx ON login_failures (username, failed_at);
CREATE INDEX login_failures_client_idx ON login_failures (client, failed_at);

CREATE TABLE alerts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id        text NOT NULL REFERENCES devices (id),
    rule             text NOT NULL,
    severity         text NOT NULL CHECK (severity IN ('info', 'warning', 'high', 'critical')),
    state            text NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    opened_at        timestamptz NOT NULL,
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    resolved_at      timestamptz,
    resolved_by      text,                 -- a username, or 'system' when the condition cleared
    escalated_at     timestamptz,
    count            integer NOT NULL DEFAULT 1 CHECK (count >= 1),
    -- The condition cleared while a high/critical alert was unacknowledged: it stays on the
    -- board, marked, until someone acknowledges it (which then resolves it).
    cleared_at       timestamptz,
    cleared_reason   text,
    last_event_at    timestamptz,
    reason           text NOT NULL DEFAULT '',
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- At most one unresolved alert per (device, rule), enforced here so that several gateways on
-- one shared subscription cannot open it twice.
CREATE UNIQUE INDEX alerts_one_unresolved_per_device_rule
    ON alerts (device_id, rule) WHERE state <> 'resolved';
CREATE INDEX alerts_unresolved_idx ON alerts (opened_at DESC) WHERE state <> 'resolved';
CREATE INDEX alerts_device_id_idx ON alerts (device_id, opened_at DESC);

-- Every change of an alert, in commit order per writer: the SSE stream's ids (Last-Event-ID
-- resume reads from here) and what NOTIFY announces.
CREATE TABLE alert_changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id    bigint NOT NULL REFERENCES alerts (id),
    change      text NOT NULL CHECK (change IN ('alert.opened', 'alert.updated', 'alert.resolved')),
    changed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_changes_alert_id_idx ON alert_changes (alert_id);

-- Who viewed, acknowledged and resolved which alert (care records law: access is traceable).
CREATE TABLE audit_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    user_id    bigint REFERENCES users (id) ON DELETE SET NULL,
    username   text NOT NULL,
    org_id     text NOT NULL,
    action     text NOT NULL,              -- alert.view, alert.acknowledge, alert.resolve, login, ...
    alert_id   bigint REFERENCES alerts (id),
    device_id  text,
    note       text,
    client     text
);
CREATE INDEX audit_log_org_at_idx ON audit_log (org_id, at DESC);
CREATE INDEX audit_log_alert_id_idx ON audit_log (alert_id);

-- What the rules remember per device between messages (last lock.unlocked, last interaction,
-- ...), written by the gateway in the same transaction as the batch.
CREATE TABLE device_rule_state (
    device_id   text PRIMARY KEY REFERENCES devices (id),
    state       jsonb NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
