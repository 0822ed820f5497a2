-- Issue 13: zigbee2mqtt friendly names as installations write them ("Lgh 14 lås",
-- "kitchen/door"): UTF-8, spaces and a '/' hierarchy. devices.ids.zigbee_name_problem is the
-- rule and says what is wrong in words; this CHECK is the database's backstop for the same rule:
-- 1-128 characters, no MQTT wildcard or control character, no empty, '.' or '..' level, no
-- level zigbee2mqtt uses under a device's topic (availability, set, get) after the first, no
-- trailing '/<digits>' (an endpoint to zigbee2mqtt), no space at either end (Mosquitto's ACL
-- file trims it). Python also refuses format characters (zero-width, bidirectional overrides),
-- which a POSIX class cannot name, and 'bridge' as the first level; the latter is not repeated
-- here because the old CHECK allowed a device named 'bridge' (never mapped by the gateway or
-- the broker), and such a row must not stop this migration.
ALTER TABLE devices DROP CONSTRAINT devices_zigbee_name_check;
ALTER TABLE devices ADD CONSTRAINT devices_zigbee_name_check CHECK (
    char_length(zigbee_name) BETWEEN 1 AND 128
    AND zigbee_name !~ '[+#[:cntrl:]]'
    AND zigbee_name !~ '(^|/)\.{0,2}(/|$)'
    AND zigbee_name !~ '/(availability|set|get)(/|$)'
    AND zigbee_name !~ '/[0-9]+$'
    AND zigbee_name !~ '^\s|\s$'
);
