//! `PostgresStore`, the `StateStore` on PostgreSQL: one connection, fieldsync's tables in one
//! schema, every use case one transaction of batched statements (arrays bound as parameters,
//! never one statement per key), and leases in a table, taken and checked by the database's
//! clock so that workers on several machines agree on who runs a link.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use fieldsync_model::{RecordDigest, RecordId, RecordKey, RunId, Side};
use fieldsync_postgres::tokio_postgres::types::ToSql;
use fieldsync_postgres::tokio_postgres::{Client, Row, Statement, Transaction};
use fieldsync_postgres::{block_on, quote_ident};
use jiff::Timestamp;

use fieldsync_store::codec::{
    DigestColumns, DigestRow, MESSAGE_COLUMNS, Traces, VALUE_COLUMNS, damaged, decode_fields, digest_page,
    encode_fields, named_records, side_from, value_from, value_text,
};
use fieldsync_store::*;

use crate::PostgresLocation;
use crate::context::Context;
use crate::schema::MIGRATIONS;

/// The number of keys bound in one array parameter of a read.
const CHUNK: usize = 5_000;

/// What a digest entry is read from: the baselines of a link (bound as `$1`).
const DIGEST_COLUMNS: &str = "SELECT key, layout, digest, left_id, right_id, tombstone, left_seen, right_seen \
                              FROM baselines WHERE link = $1";

/// A lease's renewal, `$1` microseconds from the database's clock.
const EXPIRY: &str = "clock_timestamp() + $1::bigint * interval '1 microsecond'";

/// The longest lease the store grants: longer ones would reach past the dates PostgreSQL holds.
const LONGEST_LEASE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A bound parameter.
type Parameter<'a> = &'a (dyn ToSql + Sync);

/// The state store on PostgreSQL.
pub struct PostgresStore {
    /// The connection; its socket is driven by `fieldsync_postgres`'s thread. A `Client` is
    /// `Sync`, so detection reads the store through a shared borrow while it awaits the
    /// connectors.
    client: Client,
    /// The statements prepared on `client`, by their SQL.
    statements: Statements,
    /// Where the store is, to connect again when the connection was lost; its `Display`
    /// names the store in messages without the password.
    location: PostgresLocation,
    /// The schema holding fieldsync's tables, first on the connection's search path.
    schema: String,
    /// A crash planned by `crash_at_commit`, for simulations.
    crash: CrashPlan,
}

// The store may be moved and shared between threads (the service's workers share one).
// Checked when this compiles.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<PostgresStore>();
};

/// A crash planned by `PostgresStore::crash_at_commit`: commits left before it (none planned
/// while not positive), and whether the fatal commit lands before the crash.
#[derive(Default)]
struct CrashPlan {
    commits_left: AtomicI64,
    committed: AtomicBool,
}

impl CrashPlan {
    /// Counts one commit; `Some(committed)` when it is the planned crash's.
    fn strikes(&self) -> Option<bool> {
        let strikes = self.commits_left.load(Ordering::SeqCst) > 0
            && self.commits_left.fetch_sub(1, Ordering::SeqCst) == 1;
        strikes.then(|| self.committed.load(Ordering::SeqCst))
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("PostgresStore").field("location", &self.location).finish()
    }
}

/// The statements prepared on a connection, by their SQL, so that each is parsed once per
/// connection rather than on every call.
/// How long an erasure waits for other sessions' older snapshots to end before rewriting the
/// tables it touched.
const ERASURE_WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Statements {
    cached: Mutex<HashMap<String, Statement>>,
    /// A statement failed because the connection is gone: set before the client itself may
    /// say it is closed (the server's last message comes before the socket's end), so that
    /// the next commit connects again rather than failing once more.
    lost: std::sync::atomic::AtomicBool,
}

impl Statements {
    /// The statements, by their SQL.
    fn cached(&self) -> std::sync::MutexGuard<'_, HashMap<String, Statement>> {
        self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `result`, noting a lost connection when it failed for that.
    fn noted<T>(&self, result: Result<T, fieldsync_postgres::Error>) -> Result<T, fieldsync_postgres::Error> {
        if let Err(error) = &result
            && connection_lost(error)
        {
            self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        result
    }
}

/// Whether `error` says the connection is gone: closed, or ended by the server (an
/// administrator, a shutdown, a crash).
fn connection_lost(error: &fieldsync_postgres::Error) -> bool {
    use fieldsync_postgres::SqlState;
    error.is_closed()
        || error.code().is_some_and(|code| {
            [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW].contains(code)
        })
}

/// Where statements run: the store's connection (inside a transaction or not) with its
/// prepared statements.
#[derive(Clone, Copy)]
struct Session<'store> {
    client: &'store Client,
    statements: &'store Statements,
}

impl Session<'_> {
    /// `sql` prepared on the connection, once.
    async fn statement(&self, sql: &str) -> Result<Statement, fieldsync_postgres::Error> {
        if let Some(statement) = self.statements.cached().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.statements.noted(self.client.prepare(sql).await)?;
        self.statements.cached().insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// The rows `sql` reads with `parameters`; `what` names the reading for errors.
    async fn query(
        &self,
        sql: &str,
        parameters: &[Parameter<'_>],
        what: impl Fn() -> String,
    ) -> Result<Vec<Row>, StoreError> {
        let statement = self.statement(sql).await.context(&what)?;
        self.statements.noted(self.client.query(&statement, parameters).await).context(what)
    }

    /// The one row `sql` reads with `parameters`, if it reads one.
    async fn query_opt(
        &self,
        sql: &str,
        parameters: &[Parameter<'_>],
        what: impl Fn() -> String,
    ) -> Result<Option<Row>, StoreError> {
        let statement = self.statement(sql).await.context(&what)?;
        self.statements.noted(self.client.query_opt(&statement, parameters).await).context(what)
    }

    /// Runs `sql` with `parameters`; how many rows it wrote.
    async fn execute(
        &self,
        sql: &str,
        parameters: &[Parameter<'_>],
        what: impl Fn() -> String,
    ) -> Result<u64, StoreError> {
        let statement = self.statement(sql).await.context(&what)?;
        self.statements.noted(self.client.execute(&statement, parameters).await).context(what)
    }
}

/// One commit of a use case, private to this store: the statements its `StateStore` method is
/// made of, in one transaction, so that a baseline moves in the same commit that closes its
/// outbox entry. Dropped without `commit`, it is rolled back. Its commit is where a planned
/// crash strikes.
struct Commit<'store> {
    transaction: Transaction<'store>,
    statements: &'store Statements,
    crash: &'store CrashPlan,
}

impl Commit<'_> {
    /// Where the transaction's statements run.
    fn session(&self) -> Session<'_> {
        Session { client: self.transaction.client(), statements: self.statements }
    }

    /// Commits every write at once, unless a crash planned for this commit strikes first
    /// (after the commit lands, when planned so).
    async fn commit(self) -> Result<(), StoreError> {
        if let Some(committed) = self.crash.strikes() {
            if committed {
                self.transaction.commit().await.context(|| "committing".into())?;
            }
            // Dropped uncommitted, the transaction is rolled back: nothing of it is kept.
            return Err(StoreError::InjectedCrash { committed });
        }
        self.transaction.commit().await.context(|| "committing".into())
    }

    /// Commits a lease taken or renewed: not a commit of a run's use cases, so a planned crash
    /// does not count it, as the SQLite store does not.
    async fn commit_lease(self) -> Result<(), StoreError> {
        self.transaction.commit().await.context(|| "committing".into())
    }
}

/// A time as the store keeps it: whole milliseconds, as the SQLite store keeps them, so that
/// both stores compare the same times alike.
fn stored(timestamp: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(timestamp.as_millisecond()).unwrap_or(timestamp)
}

/// What reviews that are written hold of their record's sides, one array a column as
/// `unnest` binds them: the baseline, left and right values (`value_text`), the reasons, and
/// each side's change time as stored (to the millisecond).
#[derive(Default)]
struct ReviewValues<'r> {
    bases: Vec<Option<String>>,
    lefts: Vec<Option<String>>,
    rights: Vec<Option<String>>,
    reasons: Vec<&'r str>,
    left_changed: Vec<Option<Timestamp>>,
    right_changed: Vec<Option<Timestamp>>,
}

impl<'r> ReviewValues<'r> {
    /// The columns of `reviews`, in order.
    fn of(reviews: impl Iterator<Item = &'r NewReview>) -> Self {
        let mut values = Self::default();
        for review in reviews {
            values.bases.push(value_text(&review.base));
            values.lefts.push(value_text(&review.left));
            values.rights.push(value_text(&review.right));
            values.reasons.push(&review.reason);
            values.left_changed.push(review.left_changed.map(stored));
            values.right_changed.push(review.right_changed.map(stored));
        }
        values
    }
}

/// A lease's length in microseconds, as `EXPIRY` binds it.
fn micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.min(LONGEST_LEASE).as_micros()).unwrap_or(i64::MAX)
}

/// `items` cut into consecutive runs in which no key repeats: each run may be written by one
/// statement (which must not touch a row twice) with the effect of writing its items one by
/// one, in order.
fn distinct_runs<T, K: Eq + Hash>(items: &[T], key: impl Fn(&T) -> K) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut seen = HashSet::new();
    for (index, item) in items.iter().enumerate() {
        if !seen.insert(key(item)) {
            runs.push(&items[start..index]);
            start = index;
            seen.clear();
            seen.insert(key(item));
        }
    }
    if start < items.len() {
        runs.push(&items[start..]);
    }
    runs
}

/// A connection to the database `location` names, with fieldsync's schema first on its search
/// path (`pg_catalog` is always searched before it), so that statements name tables without it.
async fn connect(location: &PostgresLocation) -> Result<Client, StoreError> {
    let client = fieldsync_postgres::connect(location.connection_url()).await.map_err(|error| {
        let class = if error.is_retryable() { ErrorClass::Retryable } else { ErrorClass::Fatal };
        StoreError::backend(format!("connecting to {location}"), class, error)
    })?;
    client
        .batch_execute(&format!("SET search_path TO {}", quote_ident(location.schema())))
        .await
        .context(|| format!("choosing the schema of {location}"))?;
    Ok(client)
}

impl PostgresStore {
    /// Connects to the database `location` names and brings fieldsync's schema there up to
    /// date (creating it first when needed).
    ///
    /// # Errors
    ///
    /// Fails when the server cannot be reached (retryable) or refuses the login, when the
    /// schema cannot be made or migrated, or when it was written by a newer fieldsync.
    pub fn open(location: &PostgresLocation) -> Result<Self, StoreError> {
        block_on(async {
            let client = connect(location).await?;
            let schema = location.schema().to_string();
            let mut store = Self {
                client,
                statements: Statements::default(),
                location: location.clone(),
                schema,
                crash: CrashPlan::default(),
            };
            store.migrate().await?;
            Ok(store)
        })
    }

    /// The schema holding fieldsync's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Fault injection for simulations: the `commits`-th commit from now (1 is the next one)
    /// fails with `StoreError::InjectedCrash`, as if the process died just before it
    /// (`committed = false`: nothing of it is kept) or just after it (`committed = true`).
    /// A caller must then drop its engine and reopen the store, as after a real crash; a lease
    /// the crashed run did not release stays until it expires, as a dead worker's does. Taking,
    /// renewing and releasing a lease are not counted. `commits = 0` plans no crash.
    pub fn crash_at_commit(&self, commits: u32, committed: bool) {
        self.crash.committed.store(committed, Ordering::SeqCst);
        self.crash.commits_left.store(i64::from(commits), Ordering::SeqCst);
    }

    /// Where a read's statements run.
    fn session(&self) -> Session<'_> {
        Session { client: &self.client, statements: &self.statements }
    }

    /// Waits, up to `wait`, until no other session of this database holds a snapshot taken
    /// before now (one that may still see rows deleted until now), nor a transaction begun
    /// before now (between two statements it has no snapshot, but the server keeps what it
    /// may yet see all the same); whether that came.
    fn snapshots_after_now(&self, wait: Duration) -> bool {
        let Ok(now) = block_on(self.client.query_one("SELECT txid_current()::text", &[])) else {
            return false;
        };
        let Ok(now) = now.try_get::<_, String>(0) else { return false };
        let older = "SELECT count(*) FROM pg_stat_activity, \
                     (SELECT age((($1::text)::bigint % 4294967296)::text::xid) AS erasure) AS now \
                     WHERE datname = current_database() AND pid <> pg_backend_pid() \
                     AND (age(backend_xmin) > now.erasure OR age(backend_xid) > now.erasure)";
        let deadline = std::time::Instant::now() + wait;
        loop {
            match block_on(self.client.query_one(older, &[&now])).and_then(|row| row.try_get::<_, i64>(0)) {
                Ok(0) => return true,
                Ok(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => return false,
            }
        }
    }

    /// Starts a transaction.
    async fn begin(&mut self) -> Result<Commit<'_>, StoreError> {
        // A connection lost (the server restarted, the network failed) failed the calls made
        // on it as retryable; the next commit connects again, so a service's next run goes on.
        let lost = self.statements.lost.swap(false, std::sync::atomic::Ordering::SeqCst);
        if lost || self.client.is_closed() {
            self.client = connect(&self.location).await?;
            self.statements.cached().clear();
        }
        let Self { client, statements, crash, .. } = self;
        let transaction = client.transaction().await.context(|| "starting a transaction".into())?;
        Ok(Commit { transaction, statements, crash })
    }

    /// Starts a transaction under `lease`: checks that its token still holds and renews it by
    /// its ttl from the database's clock. The lease's row stays locked until the commit, so
    /// nobody takes the lease over in between.
    ///
    /// A lease that expired but that nobody took over still holds, as the contract says.
    async fn leased(&mut self, lease: &Lease) -> Result<Commit<'_>, StoreError> {
        let commit = self.begin().await?;
        let renewed = commit
            .session()
            .execute(
                &format!("UPDATE leases SET expires_at = {EXPIRY} WHERE link = $2 AND token = $3"),
                &[&micros(lease.ttl), &lease.link, &lease.token],
                || format!("renewing the lease of link {}", lease.link),
            )
            .await?;
        if renewed == 0 {
            return Err(StoreError::LeaseLost { link: lease.link.clone(), owner: lease.owner.clone() });
        }
        Ok(commit)
    }

    /// Creates the schema when it is missing and applies the migrations it lacks, in one
    /// transaction under an advisory lock of the schema: workers opening it at once wait for
    /// each other, and the first migrates.
    async fn migrate(&mut self) -> Result<(), StoreError> {
        let schema = self.schema.clone();
        let location = self.location.to_string();
        let what = || format!("migrating the schema of {location}");
        let transaction = self.client.transaction().await.context(what)?;
        let lock = format!("fieldsync schema {schema}");
        transaction
            .execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&lock])
            .await
            .context(what)?;
        // Asked first, so that a user without the right to create schemas can open one that
        // is there.
        let exists = transaction
            .query_one("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", &[&schema])
            .await
            .context(what)?
            .try_get::<_, bool>(0)
            .context(what)?;
        if !exists {
            transaction
                .batch_execute(&format!("CREATE SCHEMA {}", quote_ident(&schema)))
                .await
                .context(what)?;
        }
        transaction
            .batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version bigint NOT NULL)")
            .await
            .context(what)?;
        let version: i64 = transaction
            .query_one("SELECT coalesce(max(version), 0)::bigint FROM schema_version", &[])
            .await
            .context(what)?
            .try_get(0)
            .context(what)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew { found: version, known });
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            transaction
                .batch_execute(migration)
                .await
                .context(|| format!("applying migration {} to the schema of {location}", index + 1))?;
        }
        if version < known {
            transaction.execute("DELETE FROM schema_version", &[]).await.context(what)?;
            transaction
                .execute("INSERT INTO schema_version (version) VALUES ($1)", &[&known])
                .await
                .context(what)?;
        }
        transaction.commit().await.context(what)
    }

    /// The refusal of a lease of `link` that another holder has.
    fn locked(&self, link: &str) -> StoreError {
        StoreError::Locked {
            link: link.to_string(),
            holder: format!("its lease in {} is held", self.location),
        }
    }
}

impl StateStore for PostgresStore {
    fn lease_within(
        &mut self,
        link: &str,
        owner: &str,
        ttl: Duration,
        max_running: Option<usize>,
    ) -> Result<Lease, StoreError> {
        let locked = self.locked(link);
        let leases_lock = format!("fieldsync leases {}", self.schema);
        block_on(async {
            let what = || format!("leasing link {link}");
            let ttl_micros = micros(ttl);
            let commit = self.begin().await?;
            let session = commit.session();
            if let Some(max_running) = max_running {
                // Leases under a limit are taken one at a time, so that two workers cannot both
                // take the last place; the lock is held until this transaction ends.
                session
                    .execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&leases_lock], what)
                    .await?;
                let running: i64 = session
                    .query_opt(
                        "SELECT count(*) FROM leases WHERE link <> $1 AND expires_at > clock_timestamp()",
                        &[&link],
                        what,
                    )
                    .await?
                    .map_or(Ok(0), |row| row.try_get(0))
                    .context(what)?;
                let running = usize::try_from(running).unwrap_or(usize::MAX);
                if running >= max_running {
                    return Err(StoreError::AtCapacity { link: link.to_string(), running });
                }
            }
            // The link's row, unless another worker has it locked at this very moment (taking
            // the lease, or committing under it): then the link is busy, without waiting.
            let held = session
                .query_opt(
                    "SELECT expires_at > clock_timestamp(), owner FROM leases WHERE link = $1 FOR UPDATE SKIP LOCKED",
                    &[&link],
                    what,
                )
                .await?;
            // A live lease is refused, unless its holder was a process of this machine that is
            // gone (`kill -9`): nothing else tells PostgreSQL, and the next run need not wait.
            let live = |row: &Row| -> Result<bool, StoreError> {
                let live: bool = row.try_get(0).context(what)?;
                let owner: String = row.try_get(1).context(what)?;
                Ok(live && !fieldsync_store::owner_is_gone(&owner))
            };
            let granted = match held {
                Some(row) if live(&row)? => return Err(locked),
                Some(_) => {
                    session
                        .query_opt(
                            &format!(
                                "UPDATE leases SET owner = $2, token = token + 1, expires_at = {EXPIRY} \
                                 WHERE link = $3 RETURNING token, expires_at"
                            ),
                            &[&ttl_micros, &owner, &link],
                            what,
                        )
                        .await?
                }
                None => {
                    let exists = session
                        .query_opt("SELECT FROM leases WHERE link = $1", &[&link], what)
                        .await?
                        .is_some();
                    if exists {
                        return Err(locked);
                    }
                    // A new link: of workers racing on it, the first insert wins and the others
                    // (which wait for it) insert nothing.
                    session
                        .query_opt(
                            &format!(
                                "INSERT INTO leases (link, owner, token, expires_at) \
                                 VALUES ($2, $3, 1, {EXPIRY}) ON CONFLICT (link) DO NOTHING \
                                 RETURNING token, expires_at"
                            ),
                            &[&ttl_micros, &link, &owner],
                            what,
                        )
                        .await?
                }
            };
            let Some(granted) = granted else { return Err(locked) };
            let token: i64 = granted.try_get(0).context(what)?;
            let expires_at: Timestamp = granted.try_get(1).context(what)?;
            commit.commit_lease().await?;
            Ok(Lease::new(link, owner, token, expires_at, ttl, None))
        })
    }

    fn release(&mut self, lease: Lease) -> Result<(), StoreError> {
        block_on(self.session().execute(
            "UPDATE leases SET expires_at = '-infinity' WHERE link = $1 AND token = $2",
            &[&lease.link, &lease.token],
            || format!("releasing the lease of link {}", lease.link),
        ))?;
        Ok(())
    }

    fn renew(&self, lease: &Lease) -> Result<(), StoreError> {
        // Not a commit of the run's: crash injection does not count it.
        let renewed = block_on(self.session().execute(
            &format!("UPDATE leases SET expires_at = {EXPIRY} WHERE link = $2 AND token = $3"),
            &[&micros(lease.ttl), &lease.link, &lease.token],
            || format!("renewing the lease of link {}", lease.link),
        ))?;
        if renewed == 0 {
            return Err(StoreError::LeaseLost { link: lease.link.clone(), owner: lease.owner.clone() });
        }
        Ok(())
    }

    fn start_run(
        &mut self,
        lease: &Lease,
        mode: &str,
        published: bool,
        now: Timestamp,
    ) -> Result<RunId, StoreError> {
        block_on(async {
            let commit = self.leased(lease).await?;
            let run = commit.start_run(&lease.link, mode, now).await?;
            if published {
                commit.publish_plan(run).await?;
            }
            commit.commit().await?;
            Ok(run)
        })
    }

    fn commit_plan_chunk(
        &mut self,
        lease: &Lease,
        run: RunId,
        layout: &LinkLayout,
        chunk: PlanChunk,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let link = lease.link.as_str();
        block_on(async {
            let commit = self.leased(lease).await?;
            commit.insert_outbox(link, run, &chunk.entries, now).await?;
            let baselines: Vec<&Baseline> = chunk.baselines.iter().collect();
            for baselines in distinct_runs(&baselines, |baseline| &baseline.key) {
                commit.put_baselines(link, layout, baselines).await?;
            }
            commit.put_reviews(link, Some(run), &chunk.reviews, now).await?;
            commit.audit(link, &chunk.audit).await?;
            // After the baselines: writing one forgets its raw digests.
            commit.set_seen(link, &chunk.seen).await?;
            commit.commit().await
        })
    }

    fn discard_plan(&mut self, lease: &Lease, run: RunId) -> Result<usize, StoreError> {
        block_on(async {
            let commit = self.leased(lease).await?;
            let dropped = commit.discard_plans(&lease.link, &[run.0]).await?;
            commit.commit().await?;
            Ok(usize::try_from(dropped).unwrap_or(usize::MAX))
        })
    }

    fn publish_plan(
        &mut self,
        lease: &Lease,
        run: RunId,
        layout: &LinkLayout,
        publication: PlanPublication,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let link = lease.link.as_str();
        block_on(async {
            let outcomes = publication.settled_outcomes(now);
            let commit = self.leased(lease).await?;
            for (side, cursor) in publication.cursors {
                commit.set_cursor(link, side, cursor).await?;
            }
            commit.close_reviews(&publication.closed_reviews, now).await?;
            commit.set_outcomes(&outcomes, now).await?;
            commit.audit(link, &publication.audit).await?;
            commit.write_baselines(link, layout, &publication.baselines).await?;
            commit.publish_plan(run).await?;
            commit.commit().await
        })
    }

    fn start_send(
        &mut self,
        lease: &Lease,
        ids: Vec<OutboxId>,
        now: Timestamp,
    ) -> Result<SendId, StoreError> {
        block_on(async {
            let commit = self.leased(lease).await?;
            let send = commit.begin_send(&lease.link, &ids, now).await?;
            commit.commit().await?;
            Ok(send)
        })
    }

    fn close_batch(
        &mut self,
        lease: &Lease,
        layout: &LinkLayout,
        batch: BatchClose,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let link = lease.link.as_str();
        block_on(async {
            let commit = self.leased(lease).await?;
            if let Some(send) = batch.send {
                commit.end_send(send).await?;
            }
            commit.write_baselines(link, layout, &batch.baselines).await?;
            commit.set_seen(link, &batch.seen).await?;
            commit.audit(link, &batch.audit).await?;
            commit.set_outcomes(&batch.outcomes, now).await?;
            if let Some(side) = batch.full_scan_of {
                commit
                    .session()
                    .execute(
                        "UPDATE cursors SET last_full_scan_at = NULL WHERE link = $1 AND side = $2",
                        &[&link, &side.as_str()],
                        || format!("asking for a full scan of the {side} side of link {link}"),
                    )
                    .await?;
            }
            commit.commit().await
        })
    }

    fn move_sequence(&mut self, lease: &Lease, side: Side, from: &str, to: &str) -> Result<bool, StoreError> {
        let link = lease.link.as_str();
        block_on(async {
            let commit = self.leased(lease).await?;
            let moved = commit
                .session()
                .execute(
                    "UPDATE cursors SET sequence = $4 WHERE link = $1 AND side = $2 AND sequence = $3",
                    &[&link, &side.as_str(), &from, &to],
                    || format!("moving the sequence of the {side} side of link {link}"),
                )
                .await?;
            commit.commit().await?;
            Ok(moved > 0)
        })
    }

    fn finish_run(&mut self, lease: &Lease, end: RunEnd) -> Result<(), StoreError> {
        block_on(async {
            let commit = self.leased(lease).await?;
            commit.finish_run(&end).await?;
            commit.commit().await
        })
    }

    fn decide_review(
        &mut self,
        link: &str,
        id: ReviewId,
        decision: &Decision,
        audit: &AuditEntry,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        block_on(async {
            let commit = self.begin().await?;
            commit.resolve_review(id, decision, now).await?;
            commit.audit(link, std::slice::from_ref(audit)).await?;
            commit.commit().await
        })
    }

    fn retry_dead(&mut self, ids: &[OutboxId], now: Timestamp) -> Result<(), StoreError> {
        block_on(async {
            let commit = self.begin().await?;
            let now = stored(now);
            let retried: HashSet<i64> = commit
                .session()
                .query(
                    "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $2, updated_at = $2 \
                     WHERE id = ANY ($1) AND status = 'dead' RETURNING id",
                    &[&ids, &now],
                    || "retrying dead outbox entries".into(),
                )
                .await?
                .iter()
                .map(|row| row.try_get::<_, i64>(0))
                .collect::<Result<_, _>>()
                .context(|| "retrying dead outbox entries".into())?;
            // One by one, an id given twice would be found pending the second time.
            let mut counted = HashSet::new();
            if let Some(&id) = ids.iter().find(|id| !retried.contains(id) || !counted.insert(**id)) {
                return Err(StoreError::NotFound { what: "dead outbox entry", id });
            }
            commit.commit().await
        })
    }

    fn drop_dead(&mut self, id: OutboxId, now: Timestamp) -> Result<(), StoreError> {
        let changed = block_on(self.session().execute(
            "UPDATE outbox SET status = 'dropped', updated_at = $2 WHERE id = $1 AND status = 'dead'",
            &[&id, &stored(now)],
            || format!("dropping outbox entry {id}"),
        ))?;
        if changed == 0 { Err(StoreError::NotFound { what: "dead outbox entry", id }) } else { Ok(()) }
    }

    fn purge_history(&mut self, link: &str, before: Timestamp) -> Result<PurgedHistory, StoreError> {
        block_on(async {
            let what = || format!("purging the history of link {link}");
            let commit = self.begin().await?;
            let session = commit.session();
            let before = stored(before);
            let parameters: [Parameter<'_>; 2] = [&link, &before];
            let delete = |sql: &'static str| session.execute(sql, &parameters, what);
            let purged = PurgedHistory {
                audit_entries: delete("DELETE FROM audit WHERE link = $1 AND at < $2").await?,
                // Not a run still planning, nor the last that read both sides
                // (`RunRow::read_both_sides`), which a schedule counts from.
                runs: delete(
                    "DELETE FROM runs WHERE link = $1 AND finished_at < $2 AND plan IS NOT NULL \
                     AND id IS DISTINCT FROM (SELECT max(id) FROM runs WHERE link = $1 \
                     AND mode NOT IN ('deliver', 'targeted') AND status IN ('done', 'partial', 'guarded'))",
                )
                .await?,
                outbox_entries: delete(
                    "DELETE FROM outbox WHERE link = $1 AND status IN ('done', 'superseded', 'dropped') \
                     AND updated_at < $2",
                )
                .await?,
                reviews: delete(
                    "DELETE FROM reviews WHERE link = $1 AND status = 'closed' AND updated_at < $2",
                )
                .await?,
            };
            commit.commit().await?;
            Ok(purged)
        })
    }

    fn erase_record(
        &mut self,
        link: &str,
        key: &RecordKey,
        by: &str,
        now: Timestamp,
    ) -> Result<ErasedRecord, StoreError> {
        let (erased, touched) = block_on(async {
            let commit = self.begin().await?;
            let erased = commit.erase(link, key, by, now).await?;
            commit.commit().await?;
            Ok::<_, StoreError>(erased)
        })?;
        // A deleted row's bytes stay in its table's pages (and its indexes') until they are
        // written over, even after a plain VACUUM: the tables it touched are written anew,
        // outside the transaction, and their old files removed. A row another session's
        // snapshot may still see is copied into the new files too, so the rewrite waits until
        // every snapshot of this database is younger than the erasure (another worker's
        // transactions last seconds at most), and says it did not wipe when one outlives the
        // wait.
        let mut wiped = self.snapshots_after_now(ERASURE_WAIT);
        for table in touched {
            // The simple query protocol: `VACUUM` is no statement to prepare.
            wiped &= block_on(self.client.batch_execute(&format!("VACUUM FULL {table}"))).is_ok();
        }
        Ok(ErasedRecord { wiped, ..erased })
    }

    fn accept_webhook(&mut self, hook: &NewWebhook, seen_since: Timestamp) -> Result<bool, StoreError> {
        let lock = format!("fieldsync webhooks {} {}", self.schema, hook.link);
        block_on(async {
            let what = || format!("keeping a webhook of link {}", hook.link);
            let commit = self.begin().await?;
            let session = commit.session();
            // Webhooks of one link are accepted one at a time, so that a replay arriving
            // together with its original is found.
            session.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&lock], what).await?;
            let seen = session
                .query_opt(
                    "SELECT FROM webhooks WHERE link = $1 AND side = $2 AND hook_id = $3 AND received_at >= $4 \
                     LIMIT 1",
                    &[&hook.link, &hook.side.as_str(), &hook.hook_id, &stored(seen_since)],
                    what,
                )
                .await?;
            if seen.is_some() {
                return Ok(false);
            }
            session
                .execute(
                    "INSERT INTO webhooks (link, side, hook_id, received_at, records) VALUES ($1, $2, $3, $4, $5)",
                    &[&hook.link, &hook.side.as_str(), &hook.hook_id, &stored(hook.received_at), &hook.records],
                    what,
                )
                .await?;
            commit.commit().await?;
            Ok(true)
        })
    }

    fn settle_webhooks(
        &mut self,
        link: &str,
        read_at: Timestamp,
        forget_before: Timestamp,
    ) -> Result<(), StoreError> {
        block_on(async {
            let what = || format!("settling the webhooks of link {link}");
            let commit = self.begin().await?;
            let session = commit.session();
            session
                .execute(
                    "UPDATE webhooks SET read = true WHERE link = $1 AND NOT read AND received_at < $2",
                    &[&link, &stored(read_at)],
                    what,
                )
                .await?;
            session
                .execute(
                    "DELETE FROM webhooks WHERE link = $1 AND read AND received_at < $2",
                    &[&link, &stored(forget_before)],
                    what,
                )
                .await?;
            commit.commit().await
        })
    }

    fn waiting_webhook(&self, link: &str) -> Result<Option<Timestamp>, StoreError> {
        let what = || format!("reading the webhooks of link {link}");
        let row = block_on(self.session().query_opt(
            "SELECT min(received_at) FROM webhooks WHERE link = $1 AND NOT read",
            &[&link],
            what,
        ))?;
        row.map(|row| row.try_get::<_, Option<Timestamp>>(0)).transpose().context(what).map(Option::flatten)
    }

    fn webhook_records(&self, link: &str, limit: usize) -> Result<Option<NamedRecords>, StoreError> {
        let what = || format!("reading the webhooks of link {link}");
        let rows = block_on(self.session().query(
            "SELECT id, side, records FROM webhooks WHERE link = $1 AND NOT read ORDER BY id LIMIT $2",
            &[&link, &i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)],
            what,
        ))?;
        let rows = rows.iter().map(|row| {
            let id: i64 = row.try_get(0).context(what)?;
            let side: &str = row.try_get(1).context(what)?;
            Ok((id, side, row.try_get(2).context(what)?))
        });
        named_records(rows, limit, &what())
    }

    fn settle_named_webhooks(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        block_on(self.session().execute(
            "UPDATE webhooks SET read = true WHERE id = ANY ($1)",
            &[&ids],
            || "settling webhooks a targeted run read".into(),
        ))?;
        Ok(())
    }

    fn layout(&mut self, link: &str, fields: &[String]) -> Result<LinkLayout, StoreError> {
        let text = serde_json::to_string(fields).unwrap_or_default();
        let what = || format!("registering the fields of link {link}");
        let session = self.session();
        block_on(async {
            session
                .execute(
                    "INSERT INTO layouts (link, fields) VALUES ($1, $2) ON CONFLICT (link, md5(fields)) DO NOTHING",
                    &[&link, &text],
                    what,
                )
                .await?;
            // A statement of its own, which sees a layout another worker registered meanwhile.
            let row = session
                .query_opt(
                    "SELECT id FROM layouts WHERE link = $1 AND md5(fields) = md5($2) AND fields = $2",
                    &[&link, &text],
                    what,
                )
                .await?
                .ok_or_else(|| {
                    damaged("layouts", format!("the fields of link {link} were not registered"))
                })?;
            let id: i64 = row.try_get(0).context(what)?;
            Ok(LinkLayout { id, fields: fields.to_vec() })
        })
    }

    fn digest_page(
        &self,
        link: &str,
        layout: &LinkLayout,
        after: Option<&RecordKey>,
        limit: usize,
        each: impl FnMut(RecordKey, DigestEntry),
    ) -> Result<Option<RecordKey>, StoreError> {
        let what = || format!("reading the baselines of link {link}");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let session = self.session();
        // Keys are `COLLATE "C"`: the order and the comparison are byte by byte.
        let rows = block_on(async {
            match after {
                None => {
                    let sql = format!("{DIGEST_COLUMNS} ORDER BY key LIMIT $2");
                    session.query(&sql, &[&link, &limit], what).await
                }
                Some(after) => {
                    let sql = format!("{DIGEST_COLUMNS} AND key > $2 ORDER BY key LIMIT $3");
                    session.query(&sql, &[&link, &after.as_str(), &limit], what).await
                }
            }
        })?;
        digest_page(rows.iter().map(|row| digest_row(row, layout).context(what)), &what(), each)
    }

    fn digests(
        &self,
        link: &str,
        layout: &LinkLayout,
        keys: &[RecordKey],
    ) -> Result<HashMap<RecordKey, DigestEntry>, StoreError> {
        let what = || format!("reading baselines of link {link}");
        let mut digests = HashMap::new();
        for row in block_on(rows_of_keys(self.session(), DIGEST_COLUMNS, link, keys, what))? {
            if let (key, Ok(entry)) = digest_row(&row, layout).context(what)? {
                digests.insert(key, entry);
            }
        }
        Ok(digests)
    }

    fn baselines(
        &self,
        link: &str,
        layout: &LinkLayout,
        keys: &[RecordKey],
    ) -> Result<HashMap<RecordKey, Baseline>, StoreError> {
        block_on(read_baselines(self.session(), link, layout, keys))
    }

    fn baseline_count(&self, link: &str) -> Result<u64, StoreError> {
        let what = || format!("counting the baselines of link {link}");
        let row = block_on(self.session().query_opt(
            "SELECT live FROM baseline_counts WHERE link = $1",
            &[&link],
            what,
        ))?;
        let live = row.map(|row| row.try_get::<_, i64>(0)).transpose().context(what)?;
        Ok(u64::try_from(live.unwrap_or(0)).unwrap_or(0))
    }

    fn cursor(&self, link: &str, side: Side) -> Result<CursorState, StoreError> {
        let what = || format!("reading the cursor of link {link}");
        let row = block_on(self.session().query_opt(
            "SELECT cursor_at, last_full_scan_at, sequence FROM cursors WHERE link = $1 AND side = $2",
            &[&link, &side.as_str()],
            what,
        ))?;
        let Some(row) = row else { return Ok(CursorState::default()) };
        Ok(CursorState {
            cursor: row.try_get(0).context(what)?,
            last_full_scan: row.try_get(1).context(what)?,
            sequence: row.try_get(2).context(what)?,
        })
    }

    fn keys_of_ids(
        &self,
        link: &str,
        side: Side,
        ids: &[RecordId],
    ) -> Result<HashMap<RecordId, RecordKey>, StoreError> {
        let what = || format!("finding baselines of link {link} by their {side} ids");
        let column = format!("{}_id", side.as_str());
        let select = format!("SELECT key, {column} FROM baselines WHERE link = $1");
        let ids: Vec<&str> = ids.iter().map(RecordId::as_str).collect();
        let mut keys = HashMap::new();
        for row in block_on(rows_where_in(self.session(), &select, link, &column, &ids, what))? {
            let key: &str = row.try_get(0).context(what)?;
            let id: &str = row.try_get(1).context(what)?;
            keys.insert(RecordId::new(id), RecordKey::new(key));
        }
        Ok(keys)
    }

    fn due_outbox(
        &self,
        link: &str,
        now: Timestamp,
        after: OutboxId,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        block_on(query_listed(
            self.session(),
            "WHERE link = $1 AND status IN ('pending', 'sending') AND id > $2 AND next_attempt_at <= $3 \
             ORDER BY id LIMIT $4",
            &[&link, &after, &stored(now), &i64::try_from(limit).unwrap_or(i64::MAX)],
        ))
    }

    fn next_due(&self, link: &str) -> Result<Option<Timestamp>, StoreError> {
        let what = || format!("reading the outbox of link {link}");
        let row = block_on(self.session().query_opt(
            "SELECT min(next_attempt_at) FROM outbox WHERE link = $1 AND status IN ('pending', 'sending')",
            &[&link],
            what,
        ))?;
        row.map(|row| row.try_get::<_, Option<Timestamp>>(0)).transpose().context(what).map(Option::flatten)
    }

    fn open_outbox_for(&self, link: &str, keys: &[RecordKey]) -> Result<Vec<OutboxEntry>, StoreError> {
        block_on(of_keys(self.session(), link, keys, "status IN ('pending', 'sending', 'moved', 'dead')"))
    }

    fn open_outbox_keys(&self, link: &str) -> Result<Vec<RecordKey>, StoreError> {
        block_on(keys_of(
            self.session(),
            link,
            "SELECT DISTINCT key FROM outbox WHERE link = $1 AND status IN ('pending', 'sending', 'moved', 'dead') \
             ORDER BY key",
            || format!("reading the outbox of link {link}"),
        ))
    }

    fn outbox_page(&self, query: OutboxQuery<'_>) -> Result<ListPage<OutboxEntry>, StoreError> {
        block_on(page(self.session(), query.in_rows(OutboxStatus::as_str, |id| id)))
    }

    fn outbox_entry(&self, id: OutboxId) -> Result<OutboxEntry, StoreError> {
        block_on(one(self.session(), id))
    }

    fn outbox_counts(&self, link: &str) -> Result<HashMap<OutboxStatus, u64>, StoreError> {
        let what = || format!("counting the outbox of link {link}");
        let rows = block_on(self.session().query(
            "SELECT status, count(*) FROM outbox WHERE link = $1 GROUP BY status",
            &[&link],
            what,
        ))?;
        let mut counts = HashMap::new();
        for row in rows {
            let status: &str = row.try_get(0).context(what)?;
            let count: i64 = row.try_get(1).context(what)?;
            if let Some(status) = OutboxStatus::parse(status) {
                counts.insert(status, u64::try_from(count).unwrap_or(0));
            }
        }
        Ok(counts)
    }

    fn live_reviews_for(&self, link: &str, keys: &[RecordKey]) -> Result<Vec<Review>, StoreError> {
        block_on(of_keys(self.session(), link, keys, "status IN ('open', 'resolved')"))
    }

    fn keys_with_live_reviews(&self, link: &str) -> Result<Vec<RecordKey>, StoreError> {
        block_on(keys_of(
            self.session(),
            link,
            "SELECT DISTINCT key FROM reviews WHERE link = $1 AND status IN ('open', 'resolved') ORDER BY key",
            || format!("reading the reviews of link {link}"),
        ))
    }

    fn reviews_page(&self, query: ReviewQuery<'_>) -> Result<ListPage<Review>, StoreError> {
        block_on(page(self.session(), query.in_rows(ReviewStatus::as_str, |id| id)))
    }

    fn review(&self, id: ReviewId) -> Result<Review, StoreError> {
        block_on(one(self.session(), id))
    }

    fn runs_page(&self, query: RunQuery<'_>) -> Result<ListPage<RunRow>, StoreError> {
        block_on(page(self.session(), query.in_rows(RunStatus::as_str, |run| run.0)))
    }

    fn run(&self, id: RunId) -> Result<RunRow, StoreError> {
        block_on(one(self.session(), id.0))
    }

    fn runs_since(&self, since: Timestamp) -> Result<Vec<RunRow>, StoreError> {
        block_on(query_listed(self.session(), "WHERE started_at >= $1 ORDER BY id DESC", &[&stored(since)]))
    }

    fn audit_for_run(&self, id: RunId) -> Result<Vec<AuditEntry>, StoreError> {
        block_on(query_audit(self.session(), "WHERE run_id = $1 ORDER BY id", &[&id.0]))
    }

    fn audit_for_record(&self, link: &str, key: &RecordKey) -> Result<Vec<AuditEntry>, StoreError> {
        block_on(query_audit(
            self.session(),
            "WHERE link = $1 AND key = $2 ORDER BY id",
            &[&link, &key.as_str()],
        ))
    }
}

impl Commit<'_> {
    /// Records the start of a run, after discarding the link's unpublished plans and
    /// counting the attempts of the sends a crash left open.
    async fn start_run(&self, link: &str, mode: &str, now: Timestamp) -> Result<RunId, StoreError> {
        let what = || format!("starting a run of link {link}");
        let session = self.session();
        // Only one run of a link holds its lease, so every earlier run still planning is dead:
        // the writes it planned were never published and never sent.
        let unpublished: Vec<i64> = session
            .query("SELECT id FROM runs WHERE link = $1 AND plan IS NULL", &[&link], what)
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()
            .context(what)?;
        if !unpublished.is_empty() {
            self.discard_plans(link, &unpublished).await?;
        }
        self.recover_sends(link, now).await?;
        // And every earlier run still running is gone (its process died or lost the lease):
        // the history says so, and when it was taken over.
        session
            .execute(
                "UPDATE runs SET status = 'failed', finished_at = $2, error = $3 \
                 WHERE link = $1 AND status = 'running'",
                &[&link, &stored(now), &fieldsync_store::ABANDONED],
                what,
            )
            .await?;
        let row = session
            .query_opt(
                "INSERT INTO runs (link, mode, status, started_at) VALUES ($1, $2, 'running', $3) RETURNING id",
                &[&link, &mode, &stored(now)],
                what,
            )
            .await?
            .ok_or_else(|| damaged("runs", "a new run has no id"))?;
        Ok(RunId(row.try_get(0).context(what)?))
    }

    /// Makes a run's planned writes deliverable.
    async fn publish_plan(&self, run: RunId) -> Result<(), StoreError> {
        self.session()
            .execute("UPDATE runs SET plan = 'published' WHERE id = $1", &[&run.0], || {
                format!("publishing the plan of run {run}")
            })
            .await?;
        Ok(())
    }

    /// Drops what `runs` planned and never published; returns how many writes were dropped.
    async fn discard_plans(&self, link: &str, runs: &[i64]) -> Result<u64, StoreError> {
        let what = || format!("discarding the plans of runs {runs:?}");
        let session = self.session();
        // Unpublished entries were never sent: they are all pending, never attempted.
        let dropped = session
            .execute(
                "DELETE FROM outbox WHERE link = $1 AND status = 'pending' AND attempts = 0 AND run_id = ANY ($2)",
                &[&link, &runs],
                what,
            )
            .await?;
        // A review keeps the run that opened it (updating one leaves its run as it was).
        session
            .execute("DELETE FROM reviews WHERE link = $1 AND run_id = ANY ($2)", &[&link, &runs], what)
            .await?;
        session.execute("DELETE FROM audit WHERE run_id = ANY ($1)", &[&runs], what).await?;
        session.execute("UPDATE runs SET plan = 'discarded' WHERE id = ANY ($1)", &[&runs], what).await?;
        Ok(dropped)
    }

    /// Records how a run ended.
    async fn finish_run(&self, end: &RunEnd) -> Result<(), StoreError> {
        self.session()
            .execute(
                "UPDATE runs SET status = $2, mode = $3, stats = $4, error = $5, finished_at = $6 WHERE id = $1",
                &[&end.run.0, &end.status.as_str(), &end.mode, &end.stats, &end.error, &stored(end.at)],
                || format!("finishing run {}", end.run),
            )
            .await?;
        Ok(())
    }

    /// Stores planned writes, due at `now`, their ids in the order given.
    async fn insert_outbox(
        &self,
        link: &str,
        run: RunId,
        entries: &[NewOutboxEntry],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = entries.iter().map(|entry| entry.key.as_str()).collect();
        let sides: Vec<&str> = entries.iter().map(|entry| entry.side.as_str()).collect();
        let operations: Vec<&str> = entries.iter().map(|entry| entry.operation.as_str()).collect();
        let record_ids: Vec<Option<&str>> =
            entries.iter().map(|entry| entry.record_id.as_ref().map(RecordId::as_str)).collect();
        let payloads: Vec<&str> = entries.iter().map(|entry| entry.payload.as_str()).collect();
        let bases: Vec<Option<Vec<u8>>> =
            entries.iter().map(|entry| entry.source.map(|source| source.basis.to_bytes().to_vec())).collect();
        let raws: Vec<Option<Vec<u8>>> =
            entries.iter().map(|entry| entry.source.map(|source| source.raw.to_bytes().to_vec())).collect();
        self.session()
            .execute(
                "INSERT INTO outbox (link, key, side, run_id, operation, record_id, payload, status, attempts, \
                 next_attempt_at, created_at, updated_at, source_basis, source_raw) \
                 SELECT $1, new.key, new.side, $2, new.operation, new.record_id, new.payload, 'pending', 0, $3, $3, $3, \
                 new.source_basis, new.source_raw \
                 FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bytea[], $10::bytea[]) \
                 WITH ORDINALITY AS new (key, side, operation, record_id, payload, source_basis, source_raw, position) \
                 ORDER BY new.position",
                &[&link, &run.0, &stored(now), &keys, &sides, &operations, &record_ids, &payloads, &bases, &raws],
                || format!("planning {} writes of link {link}", entries.len()),
            )
            .await?;
        Ok(())
    }

    /// Marks a batch of entries as being sent, by one row (see `StateStore::start_send`).
    async fn begin_send(&self, link: &str, ids: &[OutboxId], now: Timestamp) -> Result<SendId, StoreError> {
        let what = || format!("marking {} outbox entries of link {link} as being sent", ids.len());
        let row = self
            .session()
            .query_opt(
                "INSERT INTO outbox_sends (link, entries, started_at) VALUES ($1, $2, $3) RETURNING id",
                &[&link, &ids, &stored(now)],
                what,
            )
            .await?
            .ok_or_else(|| damaged("outbox_sends", "a new send has no id"))?;
        row.try_get(0).context(what)
    }

    /// Ends a send.
    async fn end_send(&self, send: SendId) -> Result<(), StoreError> {
        self.session()
            .execute("DELETE FROM outbox_sends WHERE id = $1", &[&send], || format!("ending send {send}"))
            .await?;
        Ok(())
    }

    /// Counts an attempt on each entry of every send of `link` a crash left open (once per
    /// send that holds it), marks those entries `sending`, and closes those sends.
    async fn recover_sends(&self, link: &str, now: Timestamp) -> Result<(), StoreError> {
        self.session()
            .execute(
                "WITH ended AS (DELETE FROM outbox_sends WHERE link = $1 RETURNING entries), \
                 counted AS (SELECT entry, count(*) AS sends FROM ended, unnest(ended.entries) AS entry \
                 GROUP BY entry) \
                 UPDATE outbox SET status = 'sending', attempts = outbox.attempts + counted.sends, updated_at = $2 \
                 FROM counted WHERE outbox.id = counted.entry",
                &[&link, &stored(now)],
                || format!("recovering the sends of link {link}"),
            )
            .await?;
        Ok(())
    }

    /// Sets each outbox entry's status, next attempt (when given) and last error (when
    /// given), counting the attempt when one was made; in order, as one statement per run of
    /// distinct entries.
    async fn set_outcomes(&self, outcomes: &[EntryOutcome], now: Timestamp) -> Result<(), StoreError> {
        let now = stored(now);
        for outcomes in distinct_runs(outcomes, |outcome| outcome.id) {
            let ids: Vec<i64> = outcomes.iter().map(|outcome| outcome.id).collect();
            let statuses: Vec<&str> = outcomes.iter().map(|outcome| outcome.status.as_str()).collect();
            let next: Vec<Option<Timestamp>> =
                outcomes.iter().map(|outcome| outcome.next_attempt_at.map(stored)).collect();
            let errors: Vec<Option<&str>> = outcomes.iter().map(|outcome| outcome.error.as_deref()).collect();
            let attempted: Vec<i64> = outcomes.iter().map(|outcome| i64::from(outcome.attempted)).collect();
            self.session()
                .execute(
                    "UPDATE outbox SET status = outcome.status, attempts = outbox.attempts + outcome.attempted, \
                     next_attempt_at = coalesce(outcome.next_attempt_at, outbox.next_attempt_at), \
                     last_error = coalesce(outcome.error, outbox.last_error), updated_at = $1 \
                     FROM unnest($2::bigint[], $3::text[], $4::timestamptz[], $5::text[], $6::bigint[]) \
                     AS outcome (id, status, next_attempt_at, error, attempted) \
                     WHERE outbox.id = outcome.id",
                    &[&now, &ids, &statuses, &next, &errors, &attempted],
                    || format!("updating outbox entries {ids:?}"),
                )
                .await?;
        }
        Ok(())
    }

    /// Opens reviews, or refreshes the live one for the same record and field (new values
    /// reopen it, clearing its decision; the same values leave it as it is), in order: one
    /// statement for the refreshed reviews and one for the new ones.
    async fn put_reviews(
        &self,
        link: &str,
        run: Option<RunId>,
        reviews: &[NewReview],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        /// The review a record's field has, as the reviews given so far leave it.
        enum Target {
            /// A live review already stored.
            Stored(i64),
            /// The new review at this index of `inserts`.
            New(usize),
        }
        /// The live review of a record's field and its values, as stored (JSON text).
        struct Live {
            target: Target,
            left: Option<String>,
            right: Option<String>,
        }
        if reviews.is_empty() {
            return Ok(());
        }
        let what = || format!("opening reviews of link {link}");
        let keys: Vec<&str> = reviews.iter().map(|review| review.key.as_str()).collect();
        let rows = self
            .session()
            .query(
                "SELECT id, key, field, left_value, right_value FROM reviews \
                 WHERE link = $1 AND key = ANY ($2) AND status IN ('open', 'resolved') ORDER BY id",
                &[&link, &keys],
                what,
            )
            .await?;
        let mut live: HashMap<(String, Option<String>), Live> = HashMap::new();
        for row in rows {
            let id: i64 = row.try_get(0).context(what)?;
            let field = (row.try_get(1).context(what)?, row.try_get(2).context(what)?);
            let (left, right) = (row.try_get(3).context(what)?, row.try_get(4).context(what)?);
            live.entry(field).or_insert(Live { target: Target::Stored(id), left, right });
        }
        // What each refreshed review is updated to, and the new reviews with the kind they
        // were opened with (a refresh keeps the kind).
        let mut updates: Vec<(i64, &NewReview)> = Vec::new();
        let mut inserts: Vec<(ReviewKind, &NewReview)> = Vec::new();
        for review in reviews {
            let (left, right) = (value_text(&review.left), value_text(&review.right));
            let field = (review.key.as_str().to_string(), review.field.clone());
            match live.get_mut(&field) {
                Some(stored) if stored.left == left && stored.right == right => {}
                Some(Live { target, left: old_left, right: old_right }) => {
                    (*old_left, *old_right) = (left, right);
                    match target {
                        Target::Stored(id) => match updates.iter_mut().find(|(updated, _)| updated == id) {
                            Some(update) => update.1 = review,
                            None => updates.push((*id, review)),
                        },
                        Target::New(index) => inserts[*index].1 = review,
                    }
                }
                None => {
                    live.insert(field, Live { target: Target::New(inserts.len()), left, right });
                    inserts.push((review.kind, review));
                }
            }
        }
        let now = stored(now);
        if !updates.is_empty() {
            let ids: Vec<i64> = updates.iter().map(|(id, _)| *id).collect();
            let ReviewValues { bases, lefts, rights, reasons, left_changed, right_changed } =
                ReviewValues::of(updates.iter().map(|(_, review)| *review));
            self.session()
                .execute(
                    "UPDATE reviews SET base = refreshed.base, left_value = refreshed.left_value, \
                     right_value = refreshed.right_value, reason = refreshed.reason, status = 'open', \
                     decision = NULL, updated_at = $1, left_changed = refreshed.left_changed, \
                     right_changed = refreshed.right_changed \
                     FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::timestamptz[], $8::timestamptz[]) \
                     AS refreshed (id, base, left_value, right_value, reason, left_changed, right_changed) \
                     WHERE reviews.id = refreshed.id",
                    &[&now, &ids, &bases, &lefts, &rights, &reasons, &left_changed, &right_changed],
                    what,
                )
                .await?;
        }
        if !inserts.is_empty() {
            let keys: Vec<&str> = inserts.iter().map(|(_, review)| review.key.as_str()).collect();
            let fields: Vec<Option<&str>> =
                inserts.iter().map(|(_, review)| review.field.as_deref()).collect();
            let kinds: Vec<&str> = inserts.iter().map(|(kind, _)| kind.as_str()).collect();
            let ReviewValues { bases, lefts, rights, reasons, left_changed, right_changed } =
                ReviewValues::of(inserts.iter().map(|(_, review)| *review));
            self.session()
                .execute(
                    "INSERT INTO reviews (link, key, field, kind, base, left_value, right_value, reason, status, \
                     run_id, created_at, updated_at, left_changed, right_changed) \
                     SELECT $1, new.key, new.field, new.kind, new.base, new.left_value, new.right_value, new.reason, \
                     'open', $2, $3, $3, new.left_changed, new.right_changed \
                     FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
                     $11::timestamptz[], $12::timestamptz[]) \
                     WITH ORDINALITY AS new (key, field, kind, base, left_value, right_value, reason, left_changed, \
                     right_changed, position) \
                     ORDER BY new.position",
                    &[
                        &link,
                        &run.map(|run| run.0),
                        &now,
                        &keys,
                        &fields,
                        &kinds,
                        &bases,
                        &lefts,
                        &rights,
                        &reasons,
                        &left_changed,
                        &right_changed,
                    ],
                    what,
                )
                .await?;
        }
        Ok(())
    }

    /// Records a person's decision on a live review.
    async fn resolve_review(
        &self,
        id: ReviewId,
        decision: &Decision,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(decision).unwrap_or_default();
        let changed = self
            .session()
            .execute(
                "UPDATE reviews SET status = 'resolved', decision = $2, resolved_at = $3, updated_at = $3 \
                 WHERE id = $1 AND status IN ('open', 'resolved')",
                &[&id, &text, &stored(now)],
                || format!("resolving review {id}"),
            )
            .await?;
        if changed == 0 { Err(StoreError::NotFound { what: "open review", id }) } else { Ok(()) }
    }

    /// Closes reviews.
    async fn close_reviews(&self, ids: &[ReviewId], now: Timestamp) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.session()
            .execute(
                "UPDATE reviews SET status = 'closed', updated_at = $2 WHERE id = ANY ($1)",
                &[&ids, &stored(now)],
                || format!("closing reviews {ids:?}"),
            )
            .await?;
        Ok(())
    }

    /// Removes every row of the record `key` of `link`, strikes it from the webhooks and
    /// messages that name it, and audits the erasure (see `StateStore::erase_record`); with the
    /// tables it changed.
    async fn erase(
        &self,
        link: &str,
        key: &RecordKey,
        by: &str,
        now: Timestamp,
    ) -> Result<(ErasedRecord, Vec<&'static str>), StoreError> {
        let what = || format!("erasing record {key} of link {link}");
        let session = self.session();
        let mut traces = Traces::new(key);
        let row_of_key: [Parameter<'_>; 2] = [&link, &key.as_str()];
        // What its rows held, to strike from the messages that stay.
        let rows = session
            .query(
                "SELECT left_id, right_id, field_values FROM baselines WHERE link = $1 AND key = $2",
                &row_of_key,
                what,
            )
            .await?;
        for row in &rows {
            let ids = [row.try_get(0).context(what)?, row.try_get(1).context(what)?];
            traces.baseline(ids, row.try_get(2).context(what)?);
        }
        let rows = session
            .query(
                "SELECT side, record_id, payload FROM outbox WHERE link = $1 AND key = $2",
                &row_of_key,
                what,
            )
            .await?;
        for row in &rows {
            let side = side_from(row.try_get(0).context(what)?, &what())?;
            traces.outbox_entry(side, row.try_get(1).context(what)?, row.try_get(2).context(what)?);
        }
        for (table, columns) in VALUE_COLUMNS {
            let sql = format!("SELECT {columns} FROM {table} WHERE link = $1 AND key = $2");
            for row in &session.query(&sql, &row_of_key, what).await? {
                for column in 0..row.len() {
                    if let Some(text) = row.try_get::<_, Option<&str>>(column).context(what)? {
                        traces.values(text);
                    }
                }
            }
        }
        let mut touched = Vec::new();
        let mut delete = async |table: &'static str| -> Result<u64, StoreError> {
            let sql = format!("DELETE FROM {table} WHERE link = $1 AND key = $2");
            let deleted = session.execute(&sql, &row_of_key, what).await?;
            if deleted > 0 {
                touched.push(table);
            }
            Ok(deleted)
        };
        let mut erased = ErasedRecord {
            baseline: delete("baselines").await? > 0,
            outbox_entries: delete("outbox").await?,
            reviews: delete("reviews").await?,
            audit_entries: delete("audit").await?,
            ..ErasedRecord::default()
        };
        // The webhooks that name it: its ids struck, a webhook naming nothing else removed.
        for row in
            &session.query("SELECT id, side, records FROM webhooks WHERE link = $1", &[&link], what).await?
        {
            let id: i64 = row.try_get(0).context(what)?;
            let side = side_from(row.try_get(1).context(what)?, &what())?;
            let named: Vec<String> = row.try_get(2).context(what)?;
            let Some(kept) = traces.unnamed(side, &named) else {
                continue;
            };
            erased.webhooks += 1;
            if kept.is_empty() {
                session.execute("DELETE FROM webhooks WHERE id = $1", &[&id], what).await?;
            } else {
                session
                    .execute("UPDATE webhooks SET records = $2 WHERE id = $1", &[&id, &kept], what)
                    .await?;
            }
        }
        if erased.webhooks > 0 {
            touched.push("webhooks");
        }
        // The messages that may quote it: runs' errors, failed writes' messages and reasons.
        for (table, column, only) in MESSAGE_COLUMNS {
            let sql = format!("SELECT id, {column} FROM {table} WHERE link = $1 AND {only}");
            let mut struck = Vec::new();
            for row in &session.query(&sql, &[&link], what).await? {
                if let Some(message) = traces.strike(row.try_get(1).context(what)?) {
                    struck.push((row.try_get::<_, i64>(0).context(what)?, message));
                }
            }
            let sql = format!("UPDATE {table} SET {column} = $2 WHERE id = $1");
            for (id, message) in &struck {
                session.execute(&sql, &[id, message], what).await?;
            }
            erased.messages += struck.len() as u64;
            if !struck.is_empty() && !touched.contains(&table) {
                touched.push(table);
            }
        }
        self.audit(link, &[erased.audit(link, key, by, now)]).await?;
        Ok((erased, touched))
    }

    /// Appends to the audit trail, in order.
    async fn audit(&self, link: &str, entries: &[AuditEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let runs: Vec<Option<i64>> = entries.iter().map(|entry| entry.run_id.map(|run| run.0)).collect();
        let keys: Vec<&str> = entries.iter().map(|entry| entry.key.as_str()).collect();
        let fields: Vec<Option<&str>> = entries.iter().map(|entry| entry.field.as_deref()).collect();
        let events: Vec<&str> = entries.iter().map(|entry| entry.event.as_str()).collect();
        let sides: Vec<Option<&str>> = entries.iter().map(|entry| entry.side.map(Side::as_str)).collect();
        let bases: Vec<Option<String>> = entries.iter().map(|entry| value_text(&entry.base)).collect();
        let lefts: Vec<Option<String>> = entries.iter().map(|entry| value_text(&entry.left)).collect();
        let rights: Vec<Option<String>> = entries.iter().map(|entry| value_text(&entry.right)).collect();
        let values: Vec<Option<String>> = entries.iter().map(|entry| value_text(&entry.value)).collect();
        let reasons: Vec<&str> = entries.iter().map(|entry| entry.reason.as_str()).collect();
        let times: Vec<Timestamp> = entries.iter().map(|entry| stored(entry.at)).collect();
        let kept: Vec<&str> = entries.iter().map(|entry| entry.values.as_str()).collect();
        self.session()
            .execute(
                "INSERT INTO audit (run_id, link, key, field, event, side, base, left_value, right_value, value, \
                 reason, at, kept) \
                 SELECT new.run_id, $1, new.key, new.field, new.event, new.side, new.base, new.left_value, \
                 new.right_value, new.value, new.reason, new.at, new.kept \
                 FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
                 $9::text[], $10::text[], $11::text[], $12::timestamptz[], $13::text[]) \
                 WITH ORDINALITY AS new (run_id, key, field, event, side, base, left_value, right_value, value, \
                 reason, at, kept, position) \
                 ORDER BY new.position",
                &[
                    &link, &runs, &keys, &fields, &events, &sides, &bases, &lefts, &rights, &values, &reasons, &times,
                    &kept,
                ],
                || format!("writing the audit of {} records of link {link}", entries.len()),
            )
            .await?;
        Ok(())
    }

    /// Writes and forgets baselines in the order given, a run of writes or of forgets at a
    /// time.
    async fn write_baselines(
        &self,
        link: &str,
        layout: &LinkLayout,
        writes: &[BaselineWrite],
    ) -> Result<(), StoreError> {
        let mut rest = writes;
        while let Some(first) = rest.first() {
            let forgets = matches!(first, BaselineWrite::Forget(_));
            let length = rest
                .iter()
                .position(|write| matches!(write, BaselineWrite::Forget(_)) != forgets)
                .unwrap_or(rest.len());
            let (run, later) = rest.split_at(length);
            if forgets {
                let keys: Vec<&str> = run
                    .iter()
                    .filter_map(|write| match write {
                        BaselineWrite::Forget(key) => Some(key.as_str()),
                        BaselineWrite::Put(_) => None,
                    })
                    .collect();
                self.session()
                    .execute(
                        "DELETE FROM baselines WHERE link = $1 AND key = ANY ($2)",
                        &[&link, &keys],
                        || format!("removing {} baselines of link {link}", keys.len()),
                    )
                    .await?;
            } else {
                let baselines: Vec<&Baseline> = run
                    .iter()
                    .filter_map(|write| match write {
                        BaselineWrite::Put(baseline) => Some(baseline),
                        BaselineWrite::Forget(_) => None,
                    })
                    .collect();
                for baselines in distinct_runs(&baselines, |baseline| &baseline.key) {
                    self.put_baselines(link, layout, baselines).await?;
                }
            }
            rest = later;
        }
        Ok(())
    }

    /// Writes records' baselines (replacing any, the keys distinct), with `layout` and their
    /// digests; forgets their raw digests.
    async fn put_baselines(
        &self,
        link: &str,
        layout: &LinkLayout,
        baselines: &[&Baseline],
    ) -> Result<(), StoreError> {
        if baselines.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = baselines.iter().map(|baseline| baseline.key.as_str()).collect();
        let left_ids: Vec<Option<&str>> =
            baselines.iter().map(|baseline| baseline.left_id.as_ref().map(RecordId::as_str)).collect();
        let right_ids: Vec<Option<&str>> =
            baselines.iter().map(|baseline| baseline.right_id.as_ref().map(RecordId::as_str)).collect();
        let digests: Vec<Vec<u8>> =
            baselines.iter().map(|baseline| baseline.digest().to_bytes().to_vec()).collect();
        let (values, meta): (Vec<String>, Vec<String>) =
            baselines.iter().map(|baseline| encode_fields(&baseline.fields)).unzip();
        let tombstones: Vec<Option<&str>> =
            baselines.iter().map(|baseline| baseline.tombstone.map(Side::as_str)).collect();
        self.session()
            .execute(
                "INSERT INTO baselines (link, key, layout, left_id, right_id, digest, field_values, field_meta, \
                 tombstone) \
                 SELECT $1, new.key, $2, new.left_id, new.right_id, new.digest, new.field_values, new.field_meta, \
                 new.tombstone \
                 FROM unnest($3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[], $8::text[], $9::text[]) \
                 AS new (key, left_id, right_id, digest, field_values, field_meta, tombstone) \
                 ON CONFLICT (link, key) DO UPDATE SET layout = excluded.layout, left_id = excluded.left_id, \
                 right_id = excluded.right_id, digest = excluded.digest, field_values = excluded.field_values, \
                 field_meta = excluded.field_meta, tombstone = excluded.tombstone, left_seen = NULL, \
                 right_seen = NULL",
                &[&link, &layout.id, &keys, &left_ids, &right_ids, &digests, &values, &meta, &tombstones],
                || format!("writing {} baselines of link {link}", baselines.len()),
            )
            .await?;
        Ok(())
    }

    /// Records the raw digests of what each side holds for records equal to their baselines
    /// (the last one given per record and side).
    async fn set_seen(&self, link: &str, seen: &[SeenDigest]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut by_key: Vec<(&str, [Option<Vec<u8>>; 2])> = Vec::new();
        let mut positions: HashMap<&str, usize> = HashMap::new();
        for digest in seen {
            let position = *positions.entry(digest.key.as_str()).or_insert_with(|| {
                by_key.push((digest.key.as_str(), [None, None]));
                by_key.len() - 1
            });
            by_key[position].1[usize::from(digest.side == Side::Right)] =
                Some(digest.digest.to_bytes().to_vec());
        }
        let keys: Vec<&str> = by_key.iter().map(|(key, _)| *key).collect();
        let [lefts, rights]: [Vec<Option<Vec<u8>>>; 2] =
            [0, 1].map(|side| by_key.iter().map(|(_, digests)| digests[side].clone()).collect());
        self.session()
            .execute(
                "UPDATE baselines SET left_seen = coalesce(seen.left_seen, baselines.left_seen), \
                 right_seen = coalesce(seen.right_seen, baselines.right_seen) \
                 FROM unnest($2::text[], $3::bytea[], $4::bytea[]) AS seen (key, left_seen, right_seen) \
                 WHERE baselines.link = $1 AND baselines.key = seen.key",
                &[&link, &keys, &lefts, &rights],
                || format!("recording what the sides hold for {} records of link {link}", keys.len()),
            )
            .await?;
        Ok(())
    }

    /// Sets where incremental reading of one side stands.
    async fn set_cursor(&self, link: &str, side: Side, state: CursorState) -> Result<(), StoreError> {
        self.session()
            .execute(
                "INSERT INTO cursors (link, side, cursor_at, last_full_scan_at, sequence) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (link, side) DO UPDATE SET cursor_at = excluded.cursor_at, \
                 last_full_scan_at = excluded.last_full_scan_at, sequence = excluded.sequence",
                &[
                    &link,
                    &side.as_str(),
                    &state.cursor.map(stored),
                    &state.last_full_scan.map(stored),
                    &state.sequence,
                ],
                || format!("writing the cursor of link {link}"),
            )
            .await?;
        Ok(())
    }
}

/// The keys `sql` (which binds `link` as `$1`) reads.
async fn keys_of(
    session: Session<'_>,
    link: &str,
    sql: &str,
    what: impl Fn() -> String,
) -> Result<Vec<RecordKey>, StoreError> {
    session
        .query(sql, &[&link], &what)
        .await?
        .iter()
        .map(|row| row.try_get::<_, &str>(0).map(RecordKey::new))
        .collect::<Result<_, _>>()
        .context(what)
}

/// The rows `select` (which binds `link` as `$1`) reads for `keys`, a chunk of keys at a time
/// (`AND key = ANY ($2)`).
async fn rows_of_keys(
    session: Session<'_>,
    select: &str,
    link: &str,
    keys: &[RecordKey],
    what: impl Fn() -> String,
) -> Result<Vec<Row>, StoreError> {
    let keys: Vec<&str> = keys.iter().map(RecordKey::as_str).collect();
    rows_where_in(session, select, link, "key", &keys, what).await
}

/// The rows `select` (which binds `link` as `$1`) reads whose `column` holds one of `values`,
/// a chunk of them at a time.
async fn rows_where_in(
    session: Session<'_>,
    select: &str,
    link: &str,
    column: &str,
    values: &[&str],
    what: impl Fn() -> String,
) -> Result<Vec<Row>, StoreError> {
    let sql = format!("{select} AND {column} = ANY ($2)");
    let mut rows = Vec::new();
    for chunk in values.chunks(CHUNK) {
        rows.extend(session.query(&sql, &[&link, &chunk], &what).await?);
    }
    Ok(rows)
}

/// Reads a row of `DIGEST_COLUMNS`: the entry has a digest only when the baseline was written
/// with `layout`.
fn digest_row(row: &Row, layout: &LinkLayout) -> Result<DigestRow, fieldsync_postgres::Error> {
    let key = RecordKey::new(row.try_get::<_, &str>(0)?);
    let columns = DigestColumns {
        layout: row.try_get(1)?,
        digest: row.try_get(2)?,
        ids: [row.try_get(3)?, row.try_get(4)?],
        tombstone: row.try_get(5)?,
        seen: [seen_column(row, 6), seen_column(row, 7)],
    };
    let entry = columns.entry(&key, layout);
    Ok((key, entry))
}

/// A raw digest column, `None` when empty or damaged.
fn seen_column(row: &Row, column: usize) -> Option<RecordDigest> {
    row.try_get::<_, Option<&[u8]>>(column).ok().flatten().and_then(RecordDigest::from_bytes)
}

/// The full baselines of `keys`, mapped onto `layout` by field name; damaged ones left out.
async fn read_baselines(
    session: Session<'_>,
    link: &str,
    layout: &LinkLayout,
    keys: &[RecordKey],
) -> Result<HashMap<RecordKey, Baseline>, StoreError> {
    let what = || format!("reading baselines of link {link}");
    let mut layouts: HashMap<i64, Vec<String>> = HashMap::new();
    for row in session.query("SELECT id, fields FROM layouts WHERE link = $1", &[&link], what).await? {
        let id: i64 = row.try_get(0).context(what)?;
        let fields: &str = row.try_get(1).context(what)?;
        let fields = serde_json::from_str(fields).map_err(|error| damaged("layout", error))?;
        layouts.insert(id, fields);
    }
    let select = "SELECT key, layout, left_id, right_id, field_values, field_meta, tombstone, digest \
                  FROM baselines WHERE link = $1";
    let mut baselines = HashMap::new();
    for row in rows_of_keys(session, select, link, keys, what).await? {
        let key = RecordKey::new(row.try_get::<_, &str>(0).context(what)?);
        let row_layout: i64 = row.try_get(1).context(what)?;
        let values: &str = row.try_get(4).context(what)?;
        let meta: &str = row.try_get(5).context(what)?;
        let tombstone: Option<&str> = row.try_get(6).context(what)?;
        let digest: &[u8] = row.try_get(7).context(what)?;
        // A damaged row is left out: its record then has no baseline, so its differences
        // go to `first_sync` (a review by default) rather than to any silent rule.
        let Some(stored_fields) = layouts.get(&row_layout) else { continue };
        let Ok(fields) = decode_fields(values, meta, digest, stored_fields, &layout.fields) else { continue };
        let Ok(tombstone) = tombstone.map(|side| side_from(side, "tombstone")).transpose() else { continue };
        let baseline = Baseline {
            left_id: row.try_get::<_, Option<&str>>(2).context(what)?.map(RecordId::new),
            right_id: row.try_get::<_, Option<&str>>(3).context(what)?.map(RecordId::new),
            fields,
            tombstone,
            key: key.clone(),
        };
        baselines.insert(key, baseline);
    }
    Ok(baselines)
}

/// A row type the store lists, pages and finds by id: how rows of it are read (its table,
/// names and id are its `Listing`).
trait Listed: Listing + Sized {
    /// The columns `from_row` reads, in its order.
    const COLUMNS: &'static str;

    /// Reads one row of `COLUMNS`; `what` names the reading for errors.
    fn from_row(row: &Row, what: &dyn Fn() -> String) -> Result<Self, StoreError>;
}

/// The rows `clause` (`WHERE …`, with `parameters`) selects.
async fn query_listed<T: Listed>(
    session: Session<'_>,
    clause: &str,
    parameters: &[Parameter<'_>],
) -> Result<Vec<T>, StoreError> {
    let sql = format!("SELECT {} FROM {} {clause}", T::COLUMNS, T::TABLE);
    let what = || T::READING.to_string();
    session.query(&sql, parameters, what).await?.iter().map(|row| T::from_row(row, &what)).collect()
}

/// The page of rows of one link (or all), in one status (or all), older than `before` (or
/// all), newest first, at most `limit` (all when `0`), with how many more there are.
async fn page<T: Listed>(
    session: Session<'_>,
    query: ListQuery<'_, &str, i64>,
) -> Result<ListPage<T>, StoreError> {
    let ListQuery { link, links, status, before, limit } = query;
    let clause = "($1::text IS NULL OR link = $1) AND ($2::text IS NULL OR status = $2) \
                  AND ($3::bigint IS NULL OR id < $3) AND ($4::text[] IS NULL OR link = ANY($4))";
    // No limit is `LIMIT NULL`.
    let limit = (limit != 0).then(|| i64::try_from(limit).unwrap_or(i64::MAX));
    let rows: Vec<T> = query_listed(
        session,
        &format!("WHERE {clause} ORDER BY id DESC LIMIT $5"),
        &[&link, &status, &before, &links, &limit],
    )
    .await?;
    let more = match rows.last() {
        Some(last) => {
            let what = || format!("counting the {}", T::TABLE);
            let row = session
                .query_opt(
                    &format!("SELECT count(*) FROM {} WHERE {clause}", T::TABLE),
                    &[&link, &status, &Some(last.id()), &links],
                    what,
                )
                .await?;
            row.map(|row| row.try_get::<_, i64>(0)).transpose().context(what)?.unwrap_or(0)
        }
        None => 0,
    };
    Ok(ListPage { rows, more: u64::try_from(more).unwrap_or(0) })
}

/// The row with this id.
async fn one<T: Listed>(session: Session<'_>, id: i64) -> Result<T, StoreError> {
    query_listed(session, "WHERE id = $1", &[&id])
        .await?
        .pop()
        .ok_or(StoreError::NotFound { what: T::ONE, id })
}

/// The rows of some records of `link` that `filter` (a condition) selects, oldest first
/// within each chunk of keys.
async fn of_keys<T: Listed>(
    session: Session<'_>,
    link: &str,
    keys: &[RecordKey],
    filter: &str,
) -> Result<Vec<T>, StoreError> {
    let clause = format!("WHERE link = $1 AND {filter} AND key = ANY ($2) ORDER BY id");
    let mut rows = Vec::new();
    for chunk in keys.chunks(CHUNK) {
        let chunk: Vec<&str> = chunk.iter().map(RecordKey::as_str).collect();
        rows.extend(query_listed(session, &clause, &[&link, &chunk]).await?);
    }
    Ok(rows)
}

impl Listed for OutboxEntry {
    // An entry being sent (or left so by a crash) reads `sending`, with the attempt counted
    // (`in_flight`).
    const COLUMNS: &'static str = "id, link, key, side, run_id, operation, record_id, payload, status, \
                                   attempts, next_attempt_at, last_error, created_at, updated_at, \
                                   source_basis, source_raw, \
                                   EXISTS (SELECT FROM outbox_sends WHERE outbox.id = ANY (outbox_sends.entries))";

    fn from_row(row: &Row, what: &dyn Fn() -> String) -> Result<Self, StoreError> {
        let id: i64 = row.try_get(0).context(what)?;
        let entry_what = format!("outbox entry {id}");
        let side: &str = row.try_get(3).context(what)?;
        let operation: &str = row.try_get(5).context(what)?;
        let status: &str = row.try_get(8).context(what)?;
        let write = NewOutboxEntry {
            key: RecordKey::new(row.try_get::<_, &str>(2).context(what)?),
            side: side_from(side, &entry_what)?,
            operation: Operation::parse(operation)
                .ok_or_else(|| damaged(&entry_what, "unknown operation"))?,
            record_id: row.try_get::<_, Option<&str>>(6).context(what)?.map(RecordId::new),
            payload: row.try_get(7).context(what)?,
            source: seen_column(row, 14)
                .zip(seen_column(row, 15))
                .map(|(basis, raw)| SourceDigest { basis, raw }),
        };
        let mut status = OutboxStatus::parse(status).ok_or_else(|| damaged(&entry_what, "unknown status"))?;
        let mut attempts = u32::try_from(row.try_get::<_, i64>(9).context(what)?).unwrap_or(u32::MAX);
        let in_flight: bool = row.try_get(16).context(what)?;
        if in_flight && matches!(status, OutboxStatus::Pending | OutboxStatus::Sending) {
            status = OutboxStatus::Sending;
            attempts += 1;
        }
        Ok(Self {
            id,
            link: row.try_get(1).context(what)?,
            run_id: RunId(row.try_get(4).context(what)?),
            write,
            status,
            attempts,
            next_attempt_at: row.try_get(10).context(what)?,
            last_error: row.try_get(11).context(what)?,
            created_at: row.try_get(12).context(what)?,
            updated_at: row.try_get(13).context(what)?,
        })
    }
}

impl Listed for Review {
    const COLUMNS: &'static str = "id, link, key, field, kind, base, left_value, right_value, reason, \
                                   status, decision, run_id, created_at, updated_at, left_changed, right_changed";

    fn from_row(row: &Row, what: &dyn Fn() -> String) -> Result<Self, StoreError> {
        let id: i64 = row.try_get(0).context(what)?;
        let review_what = format!("review {id}");
        let kind: &str = row.try_get(4).context(what)?;
        let status: &str = row.try_get(9).context(what)?;
        let decision: Option<&str> = row.try_get(10).context(what)?;
        Ok(Self {
            id,
            link: row.try_get(1).context(what)?,
            review: NewReview {
                key: RecordKey::new(row.try_get::<_, &str>(2).context(what)?),
                field: row.try_get(3).context(what)?,
                kind: ReviewKind::parse(kind).ok_or_else(|| damaged(&review_what, "unknown kind"))?,
                base: value_from(row.try_get(5).context(what)?, &review_what)?,
                left: value_from(row.try_get(6).context(what)?, &review_what)?,
                right: value_from(row.try_get(7).context(what)?, &review_what)?,
                left_changed: row.try_get(14).context(what)?,
                right_changed: row.try_get(15).context(what)?,
                reason: row.try_get(8).context(what)?,
            },
            status: ReviewStatus::parse(status).ok_or_else(|| damaged(&review_what, "unknown status"))?,
            decision: decision
                .map(|text| serde_json::from_str(text).map_err(|error| damaged(&review_what, error)))
                .transpose()?,
            run_id: row.try_get::<_, Option<i64>>(11).context(what)?.map(RunId),
            created_at: row.try_get(12).context(what)?,
            updated_at: row.try_get(13).context(what)?,
        })
    }
}

impl Listed for RunRow {
    const COLUMNS: &'static str = "id, link, mode, status, started_at, finished_at, stats, error";

    fn from_row(row: &Row, what: &dyn Fn() -> String) -> Result<Self, StoreError> {
        let id: i64 = row.try_get(0).context(what)?;
        let status: &str = row.try_get(3).context(what)?;
        let stats: Option<serde_json::Value> = row.try_get(6).context(what)?;
        Ok(Self {
            id: RunId(id),
            link: row.try_get(1).context(what)?,
            mode: row.try_get(2).context(what)?,
            status: RunStatus::parse(status).ok_or_else(|| damaged(format!("run {id}"), "unknown status"))?,
            started_at: row.try_get(4).context(what)?,
            finished_at: row.try_get(5).context(what)?,
            stats: stats.unwrap_or(serde_json::Value::Null),
            error: row.try_get(7).context(what)?,
        })
    }
}

/// The audit entries `clause` (`WHERE …`, with `parameters`) selects.
async fn query_audit(
    session: Session<'_>,
    clause: &str,
    parameters: &[Parameter<'_>],
) -> Result<Vec<AuditEntry>, StoreError> {
    let sql = format!(
        "SELECT run_id, key, field, event, side, base, left_value, right_value, value, reason, at, id, kept \
         FROM audit {clause}"
    );
    let what = || "reading the audit trail".to_string();
    let rows = session.query(&sql, parameters, what).await?;
    rows.iter()
        .map(|row| {
            let id: i64 = row.try_get(11).context(what)?;
            let entry_what = format!("audit entry {id}");
            let event: &str = row.try_get(3).context(what)?;
            let side: Option<&str> = row.try_get(4).context(what)?;
            Ok(AuditEntry {
                run_id: row.try_get::<_, Option<i64>>(0).context(what)?.map(RunId),
                key: RecordKey::new(row.try_get::<_, &str>(1).context(what)?),
                field: row.try_get(2).context(what)?,
                event: AuditEvent::parse(event).ok_or_else(|| damaged(&entry_what, "unknown event"))?,
                side: side.map(|side| side_from(side, &entry_what)).transpose()?,
                base: value_from(row.try_get(5).context(what)?, &entry_what)?,
                left: value_from(row.try_get(6).context(what)?, &entry_what)?,
                right: value_from(row.try_get(7).context(what)?, &entry_what)?,
                value: value_from(row.try_get(8).context(what)?, &entry_what)?,
                reason: row.try_get(9).context(what)?,
                at: row.try_get(10).context(what)?,
                values: AuditValues::parse(row.try_get(12).context(what)?)
                    .ok_or_else(|| damaged(&entry_what, "unknown policy of values"))?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_cut_into_runs_in_which_no_key_repeats() {
        let runs = distinct_runs(&[1, 2, 3, 2, 4, 1, 1], |item| *item);
        assert_eq!(runs, vec![&[1, 2, 3][..], &[2, 4, 1][..], &[1][..]]);
        assert!(distinct_runs(&[] as &[i32], |item| *item).is_empty());
    }

    #[test]
    fn times_are_kept_to_the_millisecond() {
        let time = Timestamp::from_nanosecond(1_700_000_000_123_456_789).unwrap();
        assert_eq!(stored(time), Timestamp::from_millisecond(1_700_000_000_123).unwrap());
        assert_eq!(micros(Duration::from_millis(1_500)), 1_500_000);
        assert_eq!(micros(Duration::MAX), micros(LONGEST_LEASE));
    }
}
