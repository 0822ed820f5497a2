-- Issue 4: onboarding with broker-enforced credentials, and devices behind zigbee2mqtt.
--
-- The database is the one source of truth for who may connect to the broker: `carewatch broker
-- run` renders Mosquitto's password and ACL files from these tables and reloads the broker
-- whenever they change (carewatch/broker/). Passwords are stored only as Mosquitto's own
-- PBKDF2-SHA512 hash ("$7$..."), the line the broker reads.

-- Broker identities that are not devices: gateways, zigbee2mqtt bridges and, in demos and
-- benchmarks only, the simulator. The username contains a dot, which a device id cannot, so a
-- device can never be onboarded under a service's name.
CREATE TABLE broker_accounts (
    username       text PRIMARY KEY
                   CHECK (username ~ '^[a-z0-9][a-z0-9_-]*\.[a-z0-9][a-z0-9_-]{0,62}$'),
    role           text NOT NULL CHECK (role IN ('gateway', 'simulator', 'zigbee2mqtt_bridge')),
    -- A bridge belongs to one organisation; gateways and the simulator serve the installation.
    org_id         text REFERENCES organisations (id),
    label          text NOT NULL DEFAULT '',
    password_hash  text NOT NULL CHECK (password_hash LIKE '$7$%'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'zigbee2mqtt_bridge') = (org_id IS NOT NULL))
);

ALTER TABLE devices
    -- 'mqtt': the device speaks Carewatch's envelope itself, as its own broker identity.
    -- 'zigbee2mqtt': a Zigbee device whose bridge publishes zigbee2mqtt/<zigbee_name>.
    ADD COLUMN source text NOT NULL DEFAULT 'mqtt' CHECK (source IN ('mqtt', 'zigbee2mqtt')),
    -- zigbee2mqtt's friendly name: a topic level, so no '/', '+', '#' or spaces.
    ADD COLUMN zigbee_name text CHECK (zigbee_name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    -- The model as zigbee2mqtt names it ("SNZB-04"); devices/zigbee2mqtt.toml maps its payload.
    ADD COLUMN zigbee_model text,
    ADD COLUMN bridge text REFERENCES broker_accounts (username),
    -- NULL for a zigbee2mqtt device (its bridge connects) and for a device whose credentials
    -- were never issued: neither can connect as itself.
    ADD COLUMN mqtt_password_hash text CHECK (mqtt_password_hash LIKE '$7$%'),
    ADD COLUMN credentials_issued_at timestamptz,
    ADD COLUMN decommissioned_at timestamptz,
    ADD CONSTRAINT devices_source_fields CHECK (
        CASE source
            WHEN 'zigbee2mqtt' THEN zigbee_name IS NOT NULL AND zigbee_model IS NOT NULL
                                    AND bridge IS NOT NULL AND mqtt_password_hash IS NULL
            ELSE zigbee_name IS NULL AND zigbee_model IS NULL AND bridge IS NULL
        END);
-- zigbee2mqtt/<name> is one topic for the whole installation, so a name names one device.
CREATE UNIQUE INDEX devices_zigbee_name_key ON devices (zigbee_name) WHERE status = 'active';
CREATE INDEX devices_bridge_idx ON devices (bridge) WHERE bridge IS NOT NULL;

-- Gateways re-read devices whose registry fields changed (updated_at); the zigbee2mqtt fields
-- decide which topic names a device, so they count too.
CREATE OR REPLACE FUNCTION devices_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.kind, NEW.site_id, NEW.status, NEW.source, NEW.zigbee_name, NEW.zigbee_model)
       IS DISTINCT FROM
       (OLD.kind, OLD.site_id, OLD.status, OLD.source, OLD.zigbee_name, OLD.zigbee_model) THEN
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;

-- Whoever changes an identity (the API, the CLI, an operator in psql), `carewatch broker run`
-- hears of it at once. Statement-level, and only for the columns that matter: the gateways'
-- updates of last_seen/online/battery never fire it.
CREATE FUNCTION broker_auth_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('carewatch_broker_auth', '');
    RETURN NULL;
END $$;
CREATE TRIGGER devices_broker_auth
    AFTER INSERT OR DELETE OR UPDATE OF status, mqtt_password_hash, zigbee_name, bridge ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION broker_auth_changed();
CREATE TRIGGER broker_accounts_broker_auth
    AFTER INSERT OR DELETE OR UPDATE OR TRUNCATE ON broker_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION broker_auth_changed();
