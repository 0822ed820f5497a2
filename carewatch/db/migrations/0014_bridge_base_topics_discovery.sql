-- Issue 13: a base topic per zigbee2mqtt bridge, and the devices each bridge announces.
--
-- zigbee2mqtt publishes under its mqtt.base_topic; installations with a coordinator per building
-- give each bridge its own. The shape is devices/zigbee2mqtt_bridges.py's (checked there first,
-- for a sentence): levels of A-Z a-z 0-9 _ . : - (it is written into Mosquitto's ACL file), none
-- empty, no wildcard. Meaningful for bridges only; the default keeps every existing insert of an
-- account (and every bridge made before this migration) on zigbee2mqtt/, as before.
ALTER TABLE broker_accounts
    ADD COLUMN base_topic text NOT NULL DEFAULT 'zigbee2mqtt'
        CHECK (base_topic ~ '^[A-Za-z0-9_.:-]{1,64}(/[A-Za-z0-9_.:-]{1,64}){0,7}$'
               AND length(base_topic) <= 200 AND base_topic !~ '^carewatch(/|$)');
-- A base topic other than the default is one bridge's own: its <base>/bridge/devices then says
-- whose devices these are. The default is shared, as it was before base topics existed.
CREATE UNIQUE INDEX broker_accounts_base_topic_key ON broker_accounts (base_topic)
    WHERE role = 'zigbee2mqtt_bridge' AND base_topic <> 'zigbee2mqtt';

-- What a bridge last announced on <base>/bridge/devices (retained, republished whole on every
-- change): the gateway replaces the bridge's rows on each publish, in one transaction, unless a
-- newer publish was stored already (gateways may commit batches out of order).
CREATE TABLE bridge_announcements (
    bridge       text PRIMARY KEY REFERENCES broker_accounts (username) ON DELETE CASCADE,
    received_at  timestamptz NOT NULL,
    skipped      integer NOT NULL DEFAULT 0  -- entries without an IEEE address or a name
);
CREATE TABLE bridge_announced_devices (
    bridge               text NOT NULL REFERENCES bridge_announcements (bridge) ON DELETE CASCADE,
    ieee_address         text NOT NULL CHECK (ieee_address ~ '^0x[0-9a-f]{16}$'),
    friendly_name        text NOT NULL,
    type                 text,               -- Coordinator, Router, EndDevice, ...
    model                text,               -- definition.model; NULL: zigbee2mqtt knows none
    vendor               text,
    description          text,
    model_id             text,
    interview_completed  boolean NOT NULL,
    power_source         text,
    supported            boolean,
    disabled             boolean NOT NULL DEFAULT false,
    seen_at              timestamptz NOT NULL,
    PRIMARY KEY (bridge, ieee_address)
);
