"""The MQTT ingest service: subscribe, validate, store, acknowledge after commit."""
