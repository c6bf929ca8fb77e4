//! The schema as an append-only list of migrations, run with fieldsync's schema first on the
//! search path. Never edit a published migration: add a new one. All pending migrations are
//! applied in one transaction, under an advisory lock of the schema, so that workers opening
//! the store at once migrate it exactly once.
//!
//! Every key and link column is `COLLATE "C"`: it compares byte by byte (UTF-8 code units,
//! which is code point order, `RecordKey`'s order), whatever the database's own collation, so
//! that listings in key order are in the order the engine expects.

/// The migrations, in order; the schema version is the number applied.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the first schema, with everything the SQLite store reached in its eighth.
    r#"
    CREATE TABLE layouts (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        link text COLLATE "C" NOT NULL,
        -- The field names as a JSON array; unique per link by their hash, since a long field
        -- list would not fit a B-tree entry.
        fields text NOT NULL
    );
    CREATE UNIQUE INDEX layouts_by_fields ON layouts (link, md5(fields));

    -- One row per record: the agreed values of all its fields as JSON text (`{}` for a field
    -- never agreed), and per field the change time on each side and the origin.
    CREATE TABLE baselines (
        link text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        layout bigint NOT NULL REFERENCES layouts (id),
        left_id text,
        right_id text,
        digest bytea NOT NULL,
        field_values text NOT NULL,
        field_meta text NOT NULL,
        tombstone text,
        -- Per side, the raw digest of the record last found equal to its baseline.
        left_seen bytea,
        right_seen bytea,
        PRIMARY KEY (link, key)
    );

    -- Each link's live (not tombstoned) baselines, counted by a trigger so that the guard
    -- needs no scan.
    CREATE TABLE baseline_counts (
        link text COLLATE "C" PRIMARY KEY,
        live bigint NOT NULL
    );
    CREATE FUNCTION count_live_baselines() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    DECLARE
        counted_link text;
        change bigint;
    BEGIN
        IF TG_OP = 'INSERT' THEN
            counted_link := NEW.link;
            change := (NEW.tombstone IS NULL)::int;
        ELSIF TG_OP = 'DELETE' THEN
            counted_link := OLD.link;
            change := -(OLD.tombstone IS NULL)::int;
        ELSE
            counted_link := NEW.link;
            change := (NEW.tombstone IS NULL)::int - (OLD.tombstone IS NULL)::int;
        END IF;
        IF change <> 0 THEN
            INSERT INTO baseline_counts AS counts (link, live) VALUES (counted_link, change)
                ON CONFLICT (link) DO UPDATE SET live = counts.live + excluded.live;
        END IF;
        RETURN NULL;
    END;
    $$;
    CREATE TRIGGER baselines_counted AFTER INSERT OR DELETE OR UPDATE OF tombstone ON baselines
        FOR EACH ROW EXECUTE FUNCTION count_live_baselines();

    CREATE TABLE cursors (
        link text COLLATE "C" NOT NULL,
        side text NOT NULL,
        cursor_at timestamptz,
        last_full_scan_at timestamptz,
        PRIMARY KEY (link, side)
    );

    -- `plan` is `published` once the run's outbox entries may be delivered, `discarded` when
    -- they were dropped, and null while the run is planning (or died planning).
    CREATE TABLE runs (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        link text COLLATE "C" NOT NULL,
        mode text NOT NULL,
        status text NOT NULL,
        plan text,
        started_at timestamptz NOT NULL,
        finished_at timestamptz,
        stats jsonb,
        error text
    );
    CREATE INDEX runs_by_link ON runs (link, id);
    CREATE INDEX runs_planning ON runs (link) WHERE plan IS NULL;

    CREATE TABLE outbox (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        link text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        side text NOT NULL,
        run_id bigint NOT NULL,
        operation text NOT NULL,
        record_id text,
        payload text NOT NULL,
        status text NOT NULL,
        attempts bigint NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL,
        last_error text,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        -- What the source side held when the write was planned: its normalised and raw digests.
        source_basis bytea,
        source_raw bytea
    );
    CREATE INDEX outbox_open ON outbox (link, id) WHERE status IN ('pending', 'sending');
    CREATE INDEX outbox_by_key ON outbox (link, key);
    CREATE INDEX outbox_by_status ON outbox (link, status, id);
    CREATE INDEX outbox_by_run ON outbox (run_id);

    -- A batch of entries being sent is marked by one row rather than by updating every entry;
    -- a crash leaves the row, and the link's next run counts the attempt on each entry.
    CREATE TABLE outbox_sends (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        link text COLLATE "C" NOT NULL,
        entries bigint[] NOT NULL,
        started_at timestamptz NOT NULL
    );

    CREATE TABLE reviews (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        link text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        field text,
        kind text NOT NULL,
        base text,
        left_value text,
        right_value text,
        reason text NOT NULL,
        status text NOT NULL,
        decision text,
        run_id bigint,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        resolved_at timestamptz
    );
    CREATE INDEX reviews_by_key ON reviews (link, key, status);
    CREATE INDEX reviews_by_run ON reviews (run_id);

    CREATE TABLE audit (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id bigint,
        link text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        field text,
        event text NOT NULL,
        side text,
        base text,
        left_value text,
        right_value text,
        value text,
        reason text NOT NULL,
        at timestamptz NOT NULL
    );
    CREATE INDEX audit_by_run ON audit (run_id);
    CREATE INDEX audit_by_key ON audit (link, key);

    -- Leases: one holder of a link at a time, with an owner, an expiry by the database's clock
    -- and a token that every commit under the lease checks.
    CREATE TABLE leases (
        link text COLLATE "C" PRIMARY KEY,
        owner text NOT NULL,
        token bigint NOT NULL,
        expires_at timestamptz NOT NULL
    );

    -- Webhooks accepted by `fieldsync serve`, kept until a run has read what they told of
    -- (`read`), and then for a while longer so that a replay of one is known.
    CREATE TABLE webhooks (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        link text COLLATE "C" NOT NULL,
        side text NOT NULL,
        hook_id text NOT NULL,
        received_at timestamptz NOT NULL,
        records text[] NOT NULL,
        read boolean NOT NULL DEFAULT false
    );
    CREATE INDEX webhooks_by_hook ON webhooks (link, side, hook_id);
    CREATE INDEX webhooks_waiting ON webhooks (link, received_at) WHERE NOT read;
    "#,
    // 2: the point of a side's change feed the last listing reached, for a connector that reads
    // changes after a sequence.
    "ALTER TABLE cursors ADD COLUMN sequence text;",
    // 3: when each side's record last changed, as its connector reported it, for a review.
    "ALTER TABLE reviews ADD COLUMN left_changed timestamptz, ADD COLUMN right_changed timestamptz;",
    // 4: what an audit entry keeps of its values (a link's `audit.values`: `full`, `hashed`,
    // `none`); entries written before it kept them in full.
    "ALTER TABLE audit ADD COLUMN kept text NOT NULL DEFAULT 'full';",
];
