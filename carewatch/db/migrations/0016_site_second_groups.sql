-- Issue 12: a site's second group of staff, told by the escalation chain's notify_second_group
-- step when nobody has taken an alarm (devices/response.toml). The members are a reserve (the
-- area's night patrol, a neighbouring unit): they are not pushed when an alarm opens, only when
-- the step comes. The API admits members who may take the site's alarms: of the site's
-- organisation, of a role that acts on alerts, allowed at the site (PATCH /api/v1/sites/{id});
-- the notifier checks the same again at each push, so a member disabled or moved since is not
-- pushed. No row for a site: it has no second group, and the step alerts the first again.
CREATE TABLE site_second_group (
    site_id   text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    user_id   bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added_by  text NOT NULL,
    added_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, user_id)
);
-- A user's memberships (the notifier leaves members out of a site's first group).
CREATE INDEX site_second_group_user_idx ON site_second_group (user_id);
