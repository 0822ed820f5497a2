-- Issue 5: two partial indexes for the usage report's reads of a long period (api/usage_queries.py).
--
-- Measured on a year of 1,000 devices: "camera checks in night hours" read every type of
-- usage_site_hourly in the period (its primary key leads with site and bucket, not type), and
-- "minutes per robot" every row of the robots in usage_device_hourly; together about 300 ms of a
-- year-by-week report. Partial indexes hold only the one type each query reads, and INCLUDE the
-- one measure it sums, so both become index-only scans of a few ten thousand entries.
-- They cost the gateway nothing for the other types; a camera check or robot interaction
-- upsert changes an INCLUDEd column and so is not a HOT update (a few per device and hour).

CREATE INDEX usage_site_hourly_camera_checks_idx ON usage_site_hourly (site_id, bucket)
    INCLUDE (events) WHERE type = 'camera.check_ended';

CREATE INDEX usage_device_hourly_robot_minutes_idx ON usage_device_hourly (device_id, bucket)
    INCLUDE (duration_s) WHERE type = 'robot.interaction';
