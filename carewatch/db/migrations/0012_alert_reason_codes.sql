-- Issue 12: an alert's reasons as data, so that the pages say them in the reader's language.
-- Beside the English texts (reason, cleared_reason; unchanged), the code of each from the
-- closed set of devices/reasons.py and its arguments (a JSON object: {"level": 15},
-- {"planned": "02:00"}, ...). NULL on rows written before: the pages then show the English.
ALTER TABLE alerts
    ADD COLUMN reason_code text,
    ADD COLUMN reason_args jsonb
        CHECK (reason_args IS NULL OR jsonb_typeof(reason_args) = 'object'),
    ADD COLUMN cleared_reason_code text,
    ADD COLUMN cleared_reason_args jsonb
        CHECK (cleared_reason_args IS NULL OR jsonb_typeof(cleared_reason_args) = 'object');
