-- Setpoint commands (each device's gapless command stream) and telemetry.

CREATE TABLE control.commands (
    building_id text NOT NULL,
    device_id text NOT NULL,
    sequence bigint NOT NULL CHECK (sequence >= 1),
    zone_id text NOT NULL,
    heating_setpoint_c double precision NOT NULL,
    cooling_setpoint_c double precision NOT NULL,
    power_stage integer NOT NULL CHECK (power_stage >= 0),
    power_kw double precision NOT NULL,
    valid_from_time timestamptz NOT NULL,
    valid_until_time timestamptz NOT NULL,
    source smallint NOT NULL,
    plan_id text NOT NULL DEFAULT '',
    override_id text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL,
    -- NULL until the device acknowledges the command.
    outcome smallint,
    reason text NOT NULL DEFAULT '',
    acknowledge_time timestamptz,
    PRIMARY KEY (building_id, device_id, sequence),
    -- Deleting a device discards its commands.
    FOREIGN KEY (building_id, device_id) REFERENCES control.devices ON DELETE CASCADE
);
CREATE INDEX commands_by_zone ON control.commands (building_id, zone_id, valid_from_time DESC);

-- Telemetry samples, partitioned by day of sample_time so old days can be dropped whole. Not tied
-- to the registry by foreign keys: telemetry outlives a deleted device for its retention period.
CREATE TABLE control.telemetry (
    building_id text NOT NULL,
    device_id text NOT NULL,
    sequence bigint NOT NULL,
    sample_time timestamptz NOT NULL,
    receive_time timestamptz NOT NULL,
    outdoor_temperature_c double precision,
    -- hvac.control.v1.ZoneReading messages in JSON, one per zone measured.
    readings jsonb NOT NULL,
    PRIMARY KEY (building_id, device_id, sequence, sample_time)
) PARTITION BY RANGE (sample_time);

-- A unique key on a partitioned table must contain the partition key, so it cannot say "each
-- sequence once per device". This table does: a sample is stored only if its row here is new.
CREATE TABLE control.telemetry_sequences (
    building_id text NOT NULL,
    device_id text NOT NULL,
    sequence bigint NOT NULL,
    sample_time timestamptz NOT NULL,
    PRIMARY KEY (building_id, device_id, sequence)
);

-- Creates the partition holding `day` (UTC) if it is missing; safe to call concurrently.
CREATE FUNCTION control.ensure_telemetry_partition(day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    name text := format('telemetry_%s', to_char(day, 'YYYYMMDD'));
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('control.telemetry.partitions'));
    IF to_regclass(format('control.%I', name)) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE control.%I PARTITION OF control.telemetry FOR VALUES FROM (%L) TO (%L)',
            name,
            (day::timestamp AT TIME ZONE 'UTC'),
            ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    END IF;
END;
$$;
