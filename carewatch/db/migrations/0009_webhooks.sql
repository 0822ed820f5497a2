-- Issue 12: outgoing webhooks per organisation (alarm centre, SMS gateway, care record system).
-- The notifier (`carewatch notifier`) turns alert changes and escalation call-outs into
-- deliveries, signs each body with the webhook's secret and retries until it is delivered or
-- dead. Payloads are the API's alert JSON: residence labels, no resident names.

CREATE TABLE webhooks (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id       text NOT NULL REFERENCES organisations (id),
    url          text NOT NULL CHECK (url ~ '^https?://\S+$' AND char_length(url) <= 2000),
    -- The HMAC key: shown once, at creation; the notifier needs it in clear to sign.
    secret       text NOT NULL CHECK (char_length(secret) >= 32),
    events       text[] NOT NULL CHECK (
        cardinality(events) > 0
        AND events <@ '{alert.opened,alert.updated,alert.resolved,alert.call_out}'::text[]),
    -- Alerts of the response rules (devices/response.toml) are always sent; these rules too.
    rules        text[] NOT NULL DEFAULT '{}',
    description  text NOT NULL DEFAULT '' CHECK (char_length(description) <= 200),
    enabled      boolean NOT NULL DEFAULT true,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Deleted webhooks keep their delivery log; nothing more is sent to them.
    deleted_at   timestamptz
);
CREATE INDEX webhooks_org_id_idx ON webhooks (org_id) WHERE deleted_at IS NULL;

-- One row per event per webhook: the outbox and the delivery log. The source (an alert change
-- or an escalation step) is unique per webhook, so an event is enqueued once however many
-- notifiers see it.
CREATE TABLE webhook_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id       bigint NOT NULL REFERENCES webhooks (id),
    event            text NOT NULL,
    alert_id         bigint NOT NULL REFERENCES alerts (id),
    alert_change_id  bigint REFERENCES alert_changes (id),
    escalation_id    bigint REFERENCES response_escalations (id),
    payload          jsonb NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- When the next attempt may start; while an attempt runs, the end of its lease.
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    last_status      integer,               -- the receiver's HTTP status, NULL if none came
    last_error       text CHECK (char_length(last_error) <= 500),
    delivered_at     timestamptz,
    dead_at          timestamptz,           -- gave up after the last attempt
    CHECK (num_nonnulls(alert_change_id, escalation_id) = 1),
    CHECK (delivered_at IS NULL OR dead_at IS NULL),
    CONSTRAINT webhook_deliveries_one_per_change UNIQUE (webhook_id, alert_change_id),
    CONSTRAINT webhook_deliveries_one_per_escalation UNIQUE (webhook_id, escalation_id)
);
-- What the notifiers claim: pending deliveries by due time.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
-- The delivery log of one webhook, newest first.
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, id DESC);

-- How far the notifiers have read each source: a periodic catch-up after a missed NOTIFY (a
-- notifier restarting, the database away) starts here. Starting at today's end: webhooks are
-- newer than anything before this migration anyway.
CREATE TABLE notifier_cursors (
    source   text PRIMARY KEY CHECK (source IN ('alert_changes', 'response_escalations')),
    last_id  bigint NOT NULL
);
INSERT INTO notifier_cursors (source, last_id)
SELECT 'alert_changes', coalesce(max(id), 0) FROM alert_changes
UNION ALL
SELECT 'response_escalations', coalesce(max(id), 0) FROM response_escalations;
