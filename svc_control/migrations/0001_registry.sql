-- The registry: buildings, zones, devices and which device serves which zone.
-- A resource's caller-chosen fields are kept as its contract message in JSON (`spec`), read and
-- written whole; the columns beside it are what the database itself must enforce or search.

CREATE TABLE control.buildings (
    building_id text PRIMARY KEY,
    home_region smallint NOT NULL,
    spec jsonb NOT NULL,
    etag text NOT NULL,
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL
);

CREATE TABLE control.zones (
    building_id text NOT NULL REFERENCES control.buildings ON DELETE RESTRICT,
    zone_id text NOT NULL,
    spec jsonb NOT NULL,
    etag text NOT NULL,
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    PRIMARY KEY (building_id, zone_id)
);

CREATE TABLE control.devices (
    building_id text NOT NULL REFERENCES control.buildings ON DELETE RESTRICT,
    device_id text NOT NULL,
    kind smallint NOT NULL,
    spec jsonb NOT NULL,
    firmware_version text NOT NULL DEFAULT '',
    -- The open session (NULL when none), and when its instance last said it is alive: a session
    -- whose instance died stops counting as connected after three heartbeat intervals.
    session_id uuid,
    session_alive_time timestamptz,
    ever_connected boolean NOT NULL DEFAULT false,
    last_seen_time timestamptz,
    -- Command sequences: gapless per device, in both regions, because both live here.
    last_issued_sequence bigint NOT NULL DEFAULT 0,
    last_acknowledged_sequence bigint NOT NULL DEFAULT 0,
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    PRIMARY KEY (building_id, device_id),
    CHECK (0 <= last_acknowledged_sequence AND last_acknowledged_sequence <= last_issued_sequence)
);

CREATE TABLE control.device_zones (
    building_id text NOT NULL,
    device_id text NOT NULL,
    zone_id text NOT NULL,
    -- false for SENSOR devices: they report on a zone but never command it.
    commands boolean NOT NULL,
    PRIMARY KEY (building_id, device_id, zone_id),
    FOREIGN KEY (building_id, device_id) REFERENCES control.devices ON DELETE CASCADE,
    -- A zone a device serves cannot be deleted (DeleteZone answers FAILED_PRECONDITION).
    FOREIGN KEY (building_id, zone_id) REFERENCES control.zones ON DELETE RESTRICT
);

-- Each zone is commanded by at most one device.
CREATE UNIQUE INDEX device_zones_one_commander
    ON control.device_zones (building_id, zone_id) WHERE commands;

-- AIP-155: the first answer to each request_id, for 24 hours.
CREATE TABLE control.request_ids (
    request_id uuid PRIMARY KEY,
    method text NOT NULL,
    request_sha256 bytea NOT NULL,
    response bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX request_ids_by_age ON control.request_ids (create_time);
