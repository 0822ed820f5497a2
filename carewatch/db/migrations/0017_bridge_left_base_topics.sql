-- Issue 13: base topics that bridges have left, and by which organisation.
--
-- A bridge's zigbee2mqtt publishes its device list retained on <base>/bridge/devices, and the
-- broker keeps it after the bridge moves to another base topic or is deleted (nothing in
-- Carewatch speaks MQTT to clear it). A bridge of another organisation given that base topic
-- would receive the stale list on subscribe and the gateway would store it as its own:
-- another organisation's devices shown to its onboarders. So leaving is remembered here, in
-- the transaction that moves or deletes the bridge (a trigger: the API, the CLI and psql
-- alike), and carewatch.fleet refuses the base topic to other organisations until
-- `carewatch broker clear-announcement` has deleted the retained list and this row. The same
-- organisation may take it back: the list is its own.
CREATE TABLE bridge_left_base_topics (
    base_topic  text NOT NULL,
    org_id      text NOT NULL,  -- no foreign key: the list stays in the broker all the same
    left_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (base_topic, org_id)
);

CREATE FUNCTION bridge_left_base_topic() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bridge_left_base_topics (base_topic, org_id)
    VALUES (OLD.base_topic, OLD.org_id)
    ON CONFLICT (base_topic, org_id) DO UPDATE SET left_at = EXCLUDED.left_at;
    RETURN NULL;
END $$;
-- Moved (base topic or organisation changed: `broker account set` can change both) or deleted.
CREATE TRIGGER broker_accounts_left_base_topic
    AFTER UPDATE OF base_topic, org_id, role ON broker_accounts
    FOR EACH ROW WHEN (OLD.role = 'zigbee2mqtt_bridge'
                       AND (OLD.base_topic, OLD.org_id, OLD.role)
                           IS DISTINCT FROM (NEW.base_topic, NEW.org_id, NEW.role))
    EXECUTE FUNCTION bridge_left_base_topic();
CREATE TRIGGER broker_accounts_deleted_base_topic
    AFTER DELETE ON broker_accounts
    FOR EACH ROW WHEN (OLD.role = 'zigbee2mqtt_bridge')
    EXECUTE FUNCTION bridge_left_base_topic();

-- The operator role: an account that may only delete the retained device lists of base
-- topics left (broker/auth_files.py grants it write on <left base>/bridge/devices and nothing
-- else; no read), used by `carewatch broker clear-announcement`.
ALTER TABLE broker_accounts DROP CONSTRAINT broker_accounts_role_check;
ALTER TABLE broker_accounts ADD CONSTRAINT broker_accounts_role_check
    CHECK (role IN ('gateway', 'simulator', 'zigbee2mqtt_bridge', 'operator'));
-- The operator's grants follow this table: the broker's files are re-rendered on its changes.
CREATE TRIGGER bridge_left_base_topics_broker_auth
    AFTER INSERT OR DELETE OR TRUNCATE ON bridge_left_base_topics
    FOR EACH STATEMENT EXECUTE FUNCTION broker_auth_changed();
