-- Issue 14: a version on each device's rule state, so that a gateway can keep the states in
-- memory and still see what another wrote (gateway/rule_states.py).
--
-- The load sends the versions the gateway holds and gets a state back only where the row's
-- differs; every save names the version it started from and writes only if the row is still
-- at it, else the transaction is tried again from fresh states. One sequence for all rows:
-- a version is never reused (not even by a row deleted and written again), and a later save
-- has a larger one. Rows that exist now take one each.
CREATE SEQUENCE device_rule_state_version;

ALTER TABLE device_rule_state
    ADD COLUMN version bigint NOT NULL DEFAULT nextval('device_rule_state_version');

-- Every batch rewrites the rule states of the devices it heard from. Room on each page lets
-- PostgreSQL put the new row version beside the old one (a HOT update: no index entry to add,
-- less to vacuum); it applies to the pages written from now on.
ALTER TABLE device_rule_state SET (fillfactor = 50);
