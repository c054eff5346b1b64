-- Operator overrides. The state is derived: CANCELLED once cancel_time is set, EXPIRED from
-- expire_time on, ACTIVE before.

CREATE TABLE control.overrides (
    override_id uuid PRIMARY KEY,
    building_id text NOT NULL REFERENCES control.buildings ON DELETE CASCADE,
    -- Empty for a building-wide override.
    zone_id text NOT NULL DEFAULT '',
    kind smallint NOT NULL,
    -- The hvac.control.v1.Override message in JSON, as created.
    spec jsonb NOT NULL,
    expire_time timestamptz NOT NULL,
    create_time timestamptz NOT NULL,
    cancel_time timestamptz
);
CREATE INDEX overrides_newest_first
    ON control.overrides (building_id, create_time DESC, override_id DESC);
