-- Issue 12: the alarm response. An alert of a response rule (devices/response.toml) is worked:
-- accepted by a named caregiver, forwarded, on site (by hand or the residence's lock), closed
-- with an action. The moves are pure (devices/response.py); this holds where each response is.

-- One row per alert that has been worked at all: no row is a response nobody has touched
-- ("open"). The alert's own state follows it: accepted → acknowledged, closed → resolved.
CREATE TABLE alert_responses (
    alert_id        bigint PRIMARY KEY REFERENCES alerts (id),
    state           text NOT NULL
        CHECK (state IN ('open', 'forwarded', 'accepted', 'on_site', 'closed')),
    holder          text,                  -- who has accepted it
    offered_to      text,                  -- forwarded to, not yet accepted
    accepted_at     timestamptz,           -- the first acceptance: the "contact" measure
    on_site_at      timestamptz,
    on_site_by      text,                  -- a username, or the lock's device id
    on_site_source  text CHECK (on_site_source IN ('staff', 'lock')),
    contact_made    boolean,
    closed_at       timestamptz,
    closed_by       text,
    action          text,                  -- a code of devices/response.toml's [actions]
    note            text NOT NULL DEFAULT '' CHECK (char_length(note) <= 2000),
    escalated       text[] NOT NULL DEFAULT '{}',  -- the chain's steps taken
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (state IN ('open', 'forwarded') OR accepted_at IS NOT NULL),
    CHECK ((state = 'on_site') <= (on_site_at IS NOT NULL)),
    CHECK ((state = 'closed') = (closed_at IS NOT NULL))
);

-- A site's promise (contact = accepted within, help on site within; NULL: none promised, still
-- measured) and its escalation chain's times by step name ({"not_accepted": 60}).
ALTER TABLE sites
    ADD COLUMN contact_promise_s integer CHECK (contact_promise_s BETWEEN 1 AND 86400),
    ADD COLUMN on_site_promise_s integer CHECK (on_site_promise_s BETWEEN 1 AND 86400),
    ADD COLUMN escalation_steps jsonb NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(escalation_steps) = 'object');

-- Each step of the escalation chain taken for an alert (at most once: the key), written by the
-- gateways' watchdog with a NOTIFY on carewatch_escalations carrying the row id: the outbox the
-- notifier delivers from (webhooks for call_out, pushes for notify_second_group).
CREATE TABLE response_escalations (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id  bigint NOT NULL REFERENCES alerts (id),
    step      text NOT NULL,
    actions   text[] NOT NULL,
    due_at    timestamptz NOT NULL,
    taken_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT response_escalations_one_per_step UNIQUE (alert_id, step)
);
