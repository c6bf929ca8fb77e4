//! The schema as an append-only list of migrations. Never edit a published migration: add a
//! new one. All pending migrations are applied in one transaction.

/// The migrations, in order; the schema version is the number applied.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE layouts (
        id INTEGER PRIMARY KEY,
        link TEXT NOT NULL,
        fields TEXT NOT NULL,
        UNIQUE (link, fields)
    );
    -- One row per record: the agreed values of all its fields, compactly.
    CREATE TABLE baselines (
        link TEXT NOT NULL,
        key TEXT NOT NULL,
        layout INTEGER NOT NULL REFERENCES layouts (id),
        left_id TEXT,
        right_id TEXT,
        digest BLOB NOT NULL,
        field_values TEXT NOT NULL,
        field_meta TEXT NOT NULL,
        tombstone TEXT,
        PRIMARY KEY (link, key)
    ) WITHOUT ROWID;
    CREATE TABLE cursors (
        link TEXT NOT NULL,
        side TEXT NOT NULL,
        cursor_ms INTEGER,
        last_full_scan_ms INTEGER,
        PRIMARY KEY (link, side)
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        link TEXT NOT NULL,
        mode TEXT NOT NULL,
        status TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        finished_ms INTEGER,
        stats TEXT,
        error TEXT
    );
    CREATE INDEX runs_by_link ON runs (link, id);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        link TEXT NOT NULL,
        key TEXT NOT NULL,
        side TEXT NOT NULL,
        run_id INTEGER NOT NULL,
        operation TEXT NOT NULL,
        record_id TEXT,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        last_error TEXT,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE INDEX outbox_due ON outbox (link, status, next_attempt_ms);
    CREATE INDEX outbox_by_key ON outbox (link, key);
    CREATE TABLE reviews (
        id INTEGER PRIMARY KEY,
        link TEXT NOT NULL,
        key TEXT NOT NULL,
        field TEXT,
        kind TEXT NOT NULL,
        base TEXT,
        left_value TEXT,
        right_value TEXT,
        reason TEXT NOT NULL,
        status TEXT NOT NULL,
        decision TEXT,
        run_id INTEGER,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        resolved_ms INTEGER
    );
    CREATE INDEX reviews_by_key ON reviews (link, key, status);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        run_id INTEGER,
        link TEXT NOT NULL,
        key TEXT NOT NULL,
        field TEXT,
        event TEXT NOT NULL,
        side TEXT,
        base TEXT,
        left_value TEXT,
        right_value TEXT,
        value TEXT,
        reason TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
    CREATE INDEX audit_by_run ON audit (run_id);
    CREATE INDEX audit_by_key ON audit (link, key);
    "#,
    // 2: per side, the raw digest of the record last found equal to its baseline (the scan's
    // fast path; see `fieldsync_model::digest_raw`).
    r#"
    ALTER TABLE baselines ADD COLUMN left_seen BLOB;
    ALTER TABLE baselines ADD COLUMN right_seen BLOB;
    "#,
    // 3: the open entries in id order, so that delivery pages through them without sorting
    // every due entry for each batch.
    r#"
    CREATE INDEX outbox_open ON outbox (link, id) WHERE status IN ('pending', 'sending');
    "#,
    // 4: a run writes its plan a chunk at a time; its outbox entries may be delivered once the
    // whole plan is written and passed the guard (`plan = 'published'`). Entries of a run that
    // never published (it stopped, failed or was killed while planning) are discarded by the
    // link's next run. Earlier runs wrote their plans in one transaction: all are published.
    // Each link's live baselines are counted by triggers, so that the guard needs no scan.
    r#"
    ALTER TABLE runs ADD COLUMN plan TEXT;
    UPDATE runs SET plan = 'published';
    CREATE TABLE baseline_counts (link TEXT PRIMARY KEY, live INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO baseline_counts (link, live)
        SELECT link, count(*) FROM baselines WHERE tombstone IS NULL GROUP BY link;
    CREATE TRIGGER baselines_count_insert AFTER INSERT ON baselines WHEN NEW.tombstone IS NULL
    BEGIN
        INSERT INTO baseline_counts (link, live) VALUES (NEW.link, 1)
            ON CONFLICT (link) DO UPDATE SET live = live + 1;
    END;
    CREATE TRIGGER baselines_count_delete AFTER DELETE ON baselines WHEN OLD.tombstone IS NULL
    BEGIN
        UPDATE baseline_counts SET live = live - 1 WHERE link = OLD.link;
    END;
    CREATE TRIGGER baselines_count_tombstone AFTER UPDATE OF tombstone ON baselines
        WHEN (OLD.tombstone IS NULL) != (NEW.tombstone IS NULL)
    BEGIN
        INSERT INTO baseline_counts (link, live) VALUES (NEW.link, 0) ON CONFLICT (link) DO NOTHING;
        UPDATE baseline_counts SET live = live + (CASE WHEN NEW.tombstone IS NULL THEN 1 ELSE -1 END)
            WHERE link = NEW.link;
    END;
    "#,
    // 5: a batch of entries being sent is marked by one row rather than by updating every
    // entry; a crash leaves the row, and the next run counts the attempt on each entry.
    r#"
    CREATE TABLE outbox_sends (
        id INTEGER PRIMARY KEY,
        link TEXT NOT NULL,
        entries TEXT NOT NULL,
        started_ms INTEGER NOT NULL
    );
    "#,
    // 6: leases: one holder of a link at a time, with an owner, an expiry and a token that
    // every commit under the lease checks; `os_locked` says whether the holder also holds the
    // link's lock file (then whoever gets that file knows the holder is gone).
    r#"
    CREATE TABLE leases (
        link TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        token INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        os_locked INTEGER NOT NULL
    );
    "#,
    // 7: what a planned write's source side held (its normalised digest and raw digest), so
    // that the batch closing the verified write records the source's raw digest too.
    r#"
    ALTER TABLE outbox ADD COLUMN source_basis BLOB;
    ALTER TABLE outbox ADD COLUMN source_raw BLOB;
    "#,
    // 8: webhooks accepted by `fieldsync serve`, kept until a run has read what they told of
    // (`read`), and then for a while longer so that a replay of one is known.
    r#"
    CREATE TABLE webhooks (
        id INTEGER PRIMARY KEY,
        link TEXT NOT NULL,
        side TEXT NOT NULL,
        hook_id TEXT NOT NULL,
        received_ms INTEGER NOT NULL,
        records TEXT NOT NULL,
        read INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX webhooks_by_hook ON webhooks (link, side, hook_id);
    CREATE INDEX webhooks_waiting ON webhooks (link, received_ms) WHERE read = 0;
    "#,
    // 9: the point of a side's change feed the last listing reached, for a connector that reads
    // changes after a sequence.
    "ALTER TABLE cursors ADD COLUMN sequence TEXT;",
    // 10: when each side's record last changed, as its connector reported it, for a review.
    "ALTER TABLE reviews ADD COLUMN left_changed_ms INTEGER; \
     ALTER TABLE reviews ADD COLUMN right_changed_ms INTEGER;",
    // 11: what an audit entry keeps of its values (a link's `audit.values`: `full`, `hashed`,
    // `none`); entries written before it kept them in full.
    "ALTER TABLE audit ADD COLUMN kept TEXT NOT NULL DEFAULT 'full';",
];
