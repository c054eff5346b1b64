-- Published plans, and a way to find acknowledged commands by time (for WatchPlans).

-- Kept after the building is deleted, for their retention period: no foreign key.
CREATE TABLE control.plans (
    plan_id text PRIMARY KEY,
    building_id text NOT NULL,
    create_time timestamptz NOT NULL,
    status smallint NOT NULL,
    fallback_reason text NOT NULL DEFAULT '',
    -- The hvac.control.v1.Plan message, serialised: plans are immutable once published.
    plan bytea NOT NULL
);
CREATE INDEX plans_by_time ON control.plans (building_id, create_time, plan_id);

CREATE INDEX commands_by_acknowledge_time ON control.commands (building_id, acknowledge_time)
    WHERE acknowledge_time IS NOT NULL;
