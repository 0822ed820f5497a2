-- Issue 12: who an alert is for. devices/audience.toml routes each rule to care staff,
-- technicians or both; a site may route a rule otherwise, e.g. {"battery_low": "both"} where
-- caregivers change the batteries themselves. Absent rules keep the table's routing; a care
-- rule never loses care staff and the safety exceptions always apply (devices/audience.py).
-- The API checks the values (PATCH /api/v1/sites/{id}); this only keeps the shape.
ALTER TABLE sites
    ADD COLUMN alert_audiences jsonb NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(alert_audiences) = 'object');
