-- The audit log: append-only records partitioned by month of append time, one head row that
-- serialises appends (the one sequencer), signed checkpoints, subject keys and erasures.

CREATE SCHEMA IF NOT EXISTS audit;

-- The role the service works as: it may read and append, never change or remove a record.
DO $$
BEGIN
  CREATE ROLE audit_writer NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL;  -- roles are cluster-wide: another database (or a concurrent start) made it first
END
$$;

DO $$
BEGIN
  EXECUTE format('GRANT audit_writer TO %I', current_user);
EXCEPTION WHEN OTHERS THEN
  NULL;  -- superusers need no membership; a role without admin rights has it granted by ops
END
$$;

CREATE TABLE audit.records (
  seq bigint NOT NULL,
  append_time timestamptz NOT NULL,
  event_id uuid NOT NULL,
  occurred_time timestamptz NOT NULL,
  actor text NOT NULL,
  action text NOT NULL,
  resource text NOT NULL,
  building_id text NOT NULL,
  outcome smallint NOT NULL,
  subjects text[] NOT NULL,
  entry bytea NOT NULL,          -- the canonical bytes that are hashed
  previous_hash bytea NOT NULL,
  record_hash bytea NOT NULL,
  PRIMARY KEY (seq, append_time)
) PARTITION BY RANGE (append_time);

CREATE INDEX records_occurred_time ON audit.records (occurred_time);
CREATE INDEX records_actor ON audit.records (actor, seq);
CREATE INDEX records_action ON audit.records (action, seq);
CREATE INDEX records_resource ON audit.records (resource, seq);
CREATE INDEX records_building ON audit.records (building_id, seq);
CREATE INDEX records_subjects ON audit.records USING gin (subjects);

-- Idempotency by event id across partitions (a partitioned table cannot hold a unique index
-- without the partition key) and the first acknowledgement of each event.
CREATE TABLE audit.event_ids (
  event_id uuid PRIMARY KEY,
  seq bigint NOT NULL,
  record_hash bytea NOT NULL,
  append_time timestamptz NOT NULL
);

-- The one sequencer: every append takes this row FOR UPDATE.
CREATE TABLE audit.chain_head (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  seq bigint NOT NULL,
  head_hash bytea NOT NULL,
  first_retained_seq bigint NOT NULL
);
INSERT INTO audit.chain_head VALUES (true, 0, '\x0000000000000000000000000000000000000000000000000000000000000000', 1);

CREATE TABLE audit.checkpoints (
  tree_size bigint PRIMARY KEY,
  origin text NOT NULL,
  head_hash bytea NOT NULL,
  sign_time timestamptz NOT NULL,
  key_id text NOT NULL,
  signature bytea NOT NULL,
  note bytea NOT NULL,
  kind text NOT NULL CHECK (kind IN ('periodic', 'retention'))
);

CREATE TABLE audit.subject_keys (
  subject_id text PRIMARY KEY,
  wrapped_key bytea NOT NULL,
  provider_key_id text NOT NULL,
  create_time timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit.erased_subjects (
  subject_id text PRIMARY KEY,
  erase_time timestamptz NOT NULL,
  records_affected bigint NOT NULL,
  erasure_seq bigint NOT NULL
);

CREATE TABLE audit.erase_requests (
  request_id uuid PRIMARY KEY,
  subject_id text NOT NULL
);

CREATE TABLE audit.retention_drops (
  partition_name text PRIMARY KEY,
  drop_time timestamptz NOT NULL,
  range_end timestamptz NOT NULL,
  first_retained_seq bigint NOT NULL
);

-- Records, event ids, checkpoints and erasures are never changed: refuse it even for the owner.
CREATE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit.%: % is not allowed; the log is append-only', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER records_append_only BEFORE UPDATE OR DELETE ON audit.records
  FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER records_no_truncate BEFORE TRUNCATE ON audit.records
  FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER event_ids_append_only BEFORE UPDATE OR DELETE ON audit.event_ids
  FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON audit.checkpoints
  FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER erased_append_only BEFORE UPDATE OR DELETE ON audit.erased_subjects
  FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();

-- Monthly partitions, created on demand by the writer through this one narrow door.
CREATE FUNCTION audit.ensure_month(month_start date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  lower_bound text := to_char(month_start, 'YYYY-MM-01') || ' 00:00:00+00';
  upper_bound text := to_char(month_start + interval '1 month', 'YYYY-MM-01') || ' 00:00:00+00';
  name text := 'records_' || to_char(month_start, 'YYYY_MM');
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('audit.ensure_month'));
  IF to_regclass('audit.' || name) IS NULL THEN
    EXECUTE format('CREATE TABLE audit.%I PARTITION OF audit.records FOR VALUES FROM (%L) TO (%L)',
                   name, lower_bound, upper_bound);
  END IF;
END
$$;

REVOKE ALL ON FUNCTION audit.ensure_month(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit.ensure_month(date) TO audit_writer;
GRANT USAGE ON SCHEMA audit TO audit_writer;
GRANT SELECT, INSERT ON audit.records, audit.event_ids, audit.checkpoints, audit.erased_subjects,
  audit.erase_requests TO audit_writer;
GRANT SELECT, UPDATE ON audit.chain_head TO audit_writer;
GRANT SELECT, INSERT, DELETE ON audit.subject_keys TO audit_writer;
GRANT SELECT ON audit.retention_drops TO audit_writer;
