-- Issue 12: Web Push to caregivers' phones while no board is open. A browser's PushSubscription
-- belongs to the user who registered it; the notifier encrypts each push for it (RFC 8291,
-- aes128gcm) and signs the request with the deployment's VAPID key (RFC 8292).

CREATE TABLE push_subscriptions (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id          bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The push service's URL for this browser: a capability, unique across users.
    endpoint         text NOT NULL UNIQUE
                     CHECK (endpoint ~ '^https?://\S+$' AND char_length(endpoint) <= 2000),
    -- The browser's P-256 public key (65 bytes) and auth secret (16 bytes), base64url.
    p256dh           text NOT NULL CHECK (p256dh ~ '^[A-Za-z0-9_-]{86,88}={0,2}$'),
    auth             text NOT NULL CHECK (auth ~ '^[A-Za-z0-9_-]{21,24}={0,2}$'),
    user_agent       text NOT NULL DEFAULT '' CHECK (char_length(user_agent) <= 300),
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_success_at  timestamptz,
    failures         integer NOT NULL DEFAULT 0,   -- failed attempts since the last success
    -- The push service said the subscription is gone (404/410): nothing more is sent to it.
    disabled_at      timestamptz
);
CREATE INDEX push_subscriptions_user_idx ON push_subscriptions (user_id)
    WHERE disabled_at IS NULL;

-- One row per push per subscription, the outbox of the notifier's push loop. The source (an
-- alert change or an escalation step) is unique per subscription, as for webhook deliveries.
CREATE TABLE push_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id  bigint NOT NULL REFERENCES push_subscriptions (id) ON DELETE CASCADE,
    alert_id         bigint NOT NULL REFERENCES alerts (id),
    alert_change_id  bigint REFERENCES alert_changes (id),
    escalation_id    bigint REFERENCES response_escalations (id),
    payload          jsonb NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),  -- while an attempt runs: its lease
    last_attempt_at  timestamptz,
    last_status      integer,
    last_error       text CHECK (char_length(last_error) <= 500),
    delivered_at     timestamptz,
    dead_at          timestamptz,
    CHECK (num_nonnulls(alert_change_id, escalation_id) = 1),
    CHECK (delivered_at IS NULL OR dead_at IS NULL),
    CONSTRAINT push_deliveries_one_per_change UNIQUE (subscription_id, alert_change_id),
    CONSTRAINT push_deliveries_one_per_escalation UNIQUE (subscription_id, escalation_id)
);
CREATE INDEX push_deliveries_due_idx ON push_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
