//! `SqliteStore`, the `StateStore` on SQLite: one file in WAL mode, written through short transactions, with a
//! lock file per link so that at most one run of a link holds it at a time on this machine.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use fieldsync_model::{RecordDigest, RecordId, RecordKey, RunId, Side};
use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};

use fieldsync_store::codec::{
    DigestColumns, DigestRow, MESSAGE_COLUMNS, Traces, VALUE_COLUMNS, damaged, decode_fields, digest_page,
    encode_fields, from_millis, millis, named_records, side_from, value_from, value_text,
};
use fieldsync_store::*;

use crate::checkpoint::Checkpointer;
use crate::context::Context;
use crate::schema::MIGRATIONS;

/// The number of keys bound in one `IN (…)` list.
const CHUNK: usize = 500;

/// What a digest entry is read from: the baselines of a link (bound first).
const DIGEST_COLUMNS: &str = "SELECT key, layout, digest, left_id, right_id, tombstone, left_seen, right_seen \
                              FROM baselines WHERE link = ?1";

/// The state store.
#[derive(Debug)]
pub struct SqliteStore {
    /// Behind a lock so that the store is `Sync`: detection reads it through a shared borrow
    /// while it awaits the connectors, and a run's future must stay `Send`. Never contended:
    /// a store serves one run at a time.
    connection: std::sync::Mutex<rusqlite::Connection>,
    /// Copies the connection's write-ahead log into the file while runs go on.
    checkpointer: Checkpointer,
    path: PathBuf,
    crash: Arc<CrashPlan>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        let connection = self.connection.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.checkpointer.stop(connection);
    }
}

/// A crash planned by `SqliteStore::crash_at_commit`: commits left before it (negative: none
/// planned), and whether the fatal commit lands before the crash.
#[derive(Debug)]
struct CrashPlan {
    commits_left: AtomicI64,
    committed: AtomicBool,
}

/// Held while a run of a link is in progress. The operating system releases the lock when
/// the process ends, however it ends, so a killed run never blocks the next one.
#[derive(Debug)]
pub struct SqliteLock {
    _file: File,
}

/// One commit of a use case, private to this store: the table-level writes its `StateStore`
/// methods are made of, kept together so that a baseline moves in the same commit that
/// closes its outbox entry. Its commit checks the lease and is where a planned crash strikes.
#[derive(Debug)]
struct SqliteTransaction<'store> {
    transaction: rusqlite::Transaction<'store>,
    crash: Arc<CrashPlan>,
    lease: Option<LeaseCheck>,
}

/// The lease a transaction's commit checks and renews.
#[derive(Debug)]
struct LeaseCheck {
    link: String,
    owner: String,
    token: i64,
    ttl: Duration,
}

impl SqliteStore {
    /// Opens (creating if needed) the state store at `path` and brings its schema up to date.
    ///
    /// # Errors
    ///
    /// Fails when the file cannot be opened or migrated, or was written by a newer fieldsync.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let what = || format!("opening {}", path.display());
        let mut connection = rusqlite::Connection::open(path).context(what)?;
        connection.busy_timeout(std::time::Duration::from_secs(10)).context(what)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
            )
            .context(what)?;
        migrate(&mut connection)?;
        let checkpointer = Checkpointer::start(path, &mut connection).context(what)?;
        let crash =
            Arc::new(CrashPlan { commits_left: AtomicI64::new(-1), committed: AtomicBool::new(false) });
        Ok(Self {
            connection: std::sync::Mutex::new(connection),
            checkpointer,
            path: path.to_path_buf(),
            crash,
        })
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the OS lock of `link` (a file beside the state file); fails at once when another
    /// handle or process holds it. The kernel releases it when the process dies, however it
    /// dies. `lease` takes it first.
    ///
    /// # Errors
    ///
    /// `StoreError::Locked` when a run of the link is in progress elsewhere.
    pub fn lock_link(&self, link: &str) -> Result<SqliteLock, StoreError> {
        let path = self.lock_path(link);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::LockFile { path: path.display().to_string(), source })?;
        match file.try_lock() {
            Ok(()) => Ok(SqliteLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(StoreError::Locked { link: link.to_string(), holder: format!("lock {}", path.display()) })
            }
            Err(std::fs::TryLockError::Error(source)) => {
                Err(StoreError::LockFile { path: path.display().to_string(), source })
            }
        }
    }

    /// Writes the file anew from its live rows (`VACUUM`), so that no deleted row, nor any
    /// earlier version of a row, is left in its pages, then empties the write-ahead log into
    /// it and truncates the log to nothing (`wal_checkpoint(TRUNCATE)`, which waits up to the
    /// busy timeout for other connections to finish reading). Whether both were done. The
    /// store's checkpointer waits meanwhile: SQLite refuses a checkpoint while another is made.
    fn wipe(&mut self) -> bool {
        let _held = self.checkpointer.hold();
        let connection = self.connection.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        if connection.execute_batch("VACUUM").is_err() {
            return false;
        }
        connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<_, i64>(0))
            .is_ok_and(|busy| busy == 0)
    }

    /// The connection, for a read through a shared borrow.
    fn connection(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.connection.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection, for a write through the store's exclusive borrow: no lock taken.
    fn connection_mut(&mut self) -> &mut rusqlite::Connection {
        self.connection.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts an immediate transaction, checking `lease` at its commit.
    fn begin(&mut self, lease: Option<LeaseCheck>) -> Result<SqliteTransaction<'_>, StoreError> {
        let crash = Arc::clone(&self.crash);
        let transaction = self
            .connection_mut()
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .context(|| "starting a transaction".into())?;
        Ok(SqliteTransaction { transaction, crash, lease })
    }

    /// Starts an immediate transaction whose commit checks and renews `lease`.
    fn leased(&mut self, lease: &Lease) -> Result<SqliteTransaction<'_>, StoreError> {
        self.begin(Some(LeaseCheck {
            link: lease.link.clone(),
            owner: lease.owner.clone(),
            token: lease.token,
            ttl: lease.ttl,
        }))
    }

    /// The lock file of `link`, beside the state file: an organisation's instance of a link
    /// (`members/hcu`) has its `/` as `+`, which no link name holds.
    fn lock_path(&self, link: &str) -> PathBuf {
        let mut name = self.path.file_name().map(|name| name.to_os_string()).unwrap_or_default();
        name.push(format!(".{}.lock", link.replace('/', "+")));
        self.path.with_file_name(name)
    }

    /// Fault injection for simulations: the `commits`-th commit from now (1 is the next one)
    /// fails with `StoreError::InjectedCrash`, as if the process died just before it
    /// (`committed = false`: nothing of it is kept) or just after it (`committed = true`).
    /// A caller must then drop its engine and reopen the store, as after a real crash.
    pub fn crash_at_commit(&self, commits: u32, committed: bool) {
        self.crash.committed.store(committed, Ordering::SeqCst);
        self.crash.commits_left.store(i64::from(commits), Ordering::SeqCst);
    }

    /// Runs SQLite's integrity check; `Ok(())` when it answers "ok".
    ///
    /// # Errors
    ///
    /// `StoreError::Damaged` with SQLite's findings.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        let answer: String = self
            .connection()
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .context(|| "checking integrity".into())?;
        if answer == "ok" { Ok(()) } else { Err(damaged("state store", answer)) }
    }
}

impl StateStore for SqliteStore {
    fn lease_within(
        &mut self,
        link: &str,
        owner: &str,
        ttl: Duration,
        max_running: Option<usize>,
    ) -> Result<Lease, StoreError> {
        // Holding the lock file proves that an earlier holder on this machine is gone; without
        // it, only an expired lease is taken over (its holder stalled), and a lock file held
        // with no lease (an older fieldsync, `flock`) is respected.
        let lock = match self.lock_link(link) {
            Ok(lock) => Some(lock),
            Err(StoreError::Locked { .. }) => None,
            Err(error) => return Err(error),
        };
        let what = || format!("leasing link {link}");
        let lock_path = self.lock_path(link).display().to_string();
        let now = Timestamp::now();
        let transaction = self
            .connection_mut()
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .context(what)?;
        let held: Option<(i64, i64, bool)> = transaction
            .query_row(
                "SELECT token, expires_ms, os_locked FROM leases WHERE link = ?1",
                params![link],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .context(what)?;
        let live = |expires_ms: i64| expires_ms > millis(now);
        let granted = match (&lock, held) {
            (Some(_), Some((_, expires_ms, false))) => !live(expires_ms),
            (Some(_), _) => true,
            (None, Some((_, expires_ms, _))) => !live(expires_ms),
            (None, None) => false,
        };
        if !granted {
            return Err(StoreError::Locked { link: link.to_string(), holder: format!("lock {lock_path}") });
        }
        if let Some(max_running) = max_running {
            // The immediate transaction keeps any other process from taking a lease meanwhile.
            let running: i64 = transaction
                .query_row(
                    "SELECT count(*) FROM leases WHERE link != ?1 AND expires_ms > ?2",
                    params![link, millis(now)],
                    |row| row.get(0),
                )
                .context(what)?;
            let running = usize::try_from(running).unwrap_or(usize::MAX);
            if running >= max_running {
                return Err(StoreError::AtCapacity { link: link.to_string(), running });
            }
        }
        let token = held.map_or(1, |(token, _, _)| token + 1);
        let expires_at = now + ttl;
        transaction
            .execute(
                "INSERT INTO leases (link, owner, token, expires_ms, os_locked) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (link) DO UPDATE SET owner = ?2, token = ?3, expires_ms = ?4, os_locked = ?5",
                params![link, owner, token, millis(expires_at), lock.is_some()],
            )
            .context(what)?;
        transaction.commit().context(what)?;
        let hold = lock.map(|lock| Box::new(lock) as Box<dyn std::any::Any + Send + Sync>);
        Ok(Lease::new(link, owner, token, expires_at, ttl, hold))
    }

    fn release(&mut self, lease: Lease) -> Result<(), StoreError> {
        self.connection_mut()
            .execute(
                "UPDATE leases SET expires_ms = 0 WHERE link = ?1 AND token = ?2",
                params![lease.link, lease.token],
            )
            .context(|| format!("releasing the lease of link {}", lease.link))?;
        Ok(())
    }

    fn renew(&self, lease: &Lease) -> Result<(), StoreError> {
        // Not a commit of the run's: crash injection does not count it.
        renew_lease(&self.connection(), &lease.link, &lease.owner, lease.token, lease.ttl)
    }

    fn start_run(
        &mut self,
        lease: &Lease,
        mode: &str,
        published: bool,
        now: Timestamp,
    ) -> Result<RunId, StoreError> {
        let transaction = self.leased(lease)?;
        let run = transaction.start_run(&lease.link, mode, now)?;
        if published {
            transaction.publish_plan(run)?;
        }
        transaction.commit()?;
        Ok(run)
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
        let transaction = self.leased(lease)?;
        for entry in &chunk.entries {
            transaction.insert_outbox(link, run, entry, now)?;
        }
        for baseline in &chunk.baselines {
            transaction.put_baseline(link, layout, baseline)?;
        }
        for review in &chunk.reviews {
            transaction.put_review(link, Some(run), review, now)?;
        }
        for entry in &chunk.audit {
            transaction.audit(link, entry)?;
        }
        // After the baselines: writing one forgets its raw digests.
        for seen in &chunk.seen {
            transaction.set_seen(link, &seen.key, seen.side, seen.digest)?;
        }
        transaction.commit()
    }

    fn discard_plan(&mut self, lease: &Lease, run: RunId) -> Result<usize, StoreError> {
        let transaction = self.leased(lease)?;
        let dropped = transaction.discard_plan(&lease.link, run)?;
        transaction.commit()?;
        Ok(dropped)
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
        let outcomes = publication.settled_outcomes(now);
        let transaction = self.leased(lease)?;
        for (side, cursor) in publication.cursors {
            transaction.set_cursor(link, side, cursor)?;
        }
        for id in publication.closed_reviews {
            transaction.close_review(id, now)?;
        }
        for outcome in &outcomes {
            transaction.set_outcome(outcome, now)?;
        }
        for entry in &publication.audit {
            transaction.audit(link, entry)?;
        }
        write_baselines(&transaction, link, layout, &publication.baselines)?;
        transaction.publish_plan(run)?;
        transaction.commit()
    }

    fn start_send(
        &mut self,
        lease: &Lease,
        ids: Vec<OutboxId>,
        now: Timestamp,
    ) -> Result<SendId, StoreError> {
        let transaction = self.leased(lease)?;
        let send = transaction.begin_send(&lease.link, &ids, now)?;
        transaction.commit()?;
        Ok(send)
    }

    fn close_batch(
        &mut self,
        lease: &Lease,
        layout: &LinkLayout,
        batch: BatchClose,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let link = lease.link.as_str();
        let transaction = self.leased(lease)?;
        if let Some(send) = batch.send {
            transaction.end_send(send)?;
        }
        write_baselines(&transaction, link, layout, &batch.baselines)?;
        for seen in &batch.seen {
            transaction.set_seen(link, &seen.key, seen.side, seen.digest)?;
        }
        for entry in &batch.audit {
            transaction.audit(link, entry)?;
        }
        for outcome in &batch.outcomes {
            transaction.set_outcome(outcome, now)?;
        }
        if let Some(side) = batch.full_scan_of {
            transaction
                .transaction
                .execute(
                    "UPDATE cursors SET last_full_scan_ms = NULL WHERE link = ?1 AND side = ?2",
                    params![link, side.as_str()],
                )
                .context(|| format!("asking for a full scan of the {side} side of link {link}"))?;
        }
        transaction.commit()
    }

    fn move_sequence(&mut self, lease: &Lease, side: Side, from: &str, to: &str) -> Result<bool, StoreError> {
        let link = lease.link.as_str();
        let transaction = self.leased(lease)?;
        let moved = transaction
            .transaction
            .execute(
                "UPDATE cursors SET sequence = ?4 WHERE link = ?1 AND side = ?2 AND sequence = ?3",
                params![link, side.as_str(), from, to],
            )
            .context(|| format!("moving the sequence of the {side} side of link {link}"))?;
        transaction.commit()?;
        Ok(moved > 0)
    }

    fn finish_run(&mut self, lease: &Lease, end: RunEnd) -> Result<(), StoreError> {
        let transaction = self.leased(lease)?;
        transaction.finish_run(&end)?;
        transaction.commit()
    }

    fn decide_review(
        &mut self,
        link: &str,
        id: ReviewId,
        decision: &Decision,
        audit: &AuditEntry,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let transaction = self.begin(None)?;
        transaction.resolve_review(id, decision, now)?;
        transaction.audit(link, audit)?;
        transaction.commit()
    }

    fn retry_dead(&mut self, ids: &[OutboxId], now: Timestamp) -> Result<(), StoreError> {
        let transaction = self.begin(None)?;
        for &id in ids {
            transaction.retry_dead(id, now)?;
        }
        transaction.commit()
    }

    fn drop_dead(&mut self, id: OutboxId, now: Timestamp) -> Result<(), StoreError> {
        let transaction = self.begin(None)?;
        transaction.drop_dead(id, now)?;
        transaction.commit()
    }

    fn purge_history(&mut self, link: &str, before: Timestamp) -> Result<PurgedHistory, StoreError> {
        let what = || format!("purging the history of link {link}");
        let transaction = self.begin(None)?;
        let delete = |sql: &str| -> Result<u64, StoreError> {
            let deleted =
                transaction.transaction.execute(sql, params![link, millis(before)]).context(what)?;
            Ok(deleted as u64)
        };
        let purged = PurgedHistory {
            audit_entries: delete("DELETE FROM audit WHERE link = ?1 AND at_ms < ?2")?,
            // Not a run still planning, nor the last that read both sides
            // (`RunRow::read_both_sides`), which a schedule counts from.
            runs: delete(
                "DELETE FROM runs WHERE link = ?1 AND finished_ms < ?2 AND plan IS NOT NULL \
                 AND id IS NOT (SELECT max(id) FROM runs WHERE link = ?1 \
                 AND mode NOT IN ('deliver', 'targeted') AND status IN ('done', 'partial', 'guarded'))",
            )?,
            outbox_entries: delete(
                "DELETE FROM outbox WHERE link = ?1 AND status IN ('done', 'superseded', 'dropped') \
                 AND updated_ms < ?2",
            )?,
            reviews: delete("DELETE FROM reviews WHERE link = ?1 AND status = 'closed' AND updated_ms < ?2")?,
        };
        transaction.commit()?;
        Ok(purged)
    }

    fn erase_record(
        &mut self,
        link: &str,
        key: &RecordKey,
        by: &str,
        now: Timestamp,
    ) -> Result<ErasedRecord, StoreError> {
        let what = || format!("erasing record {key} of link {link}");
        // What the erasure deletes is overwritten with zeros as it goes, not only left in free
        // space; older copies (a row's earlier versions, pages freed before) go with the
        // rebuild that follows.
        let secure: i64 =
            self.connection_mut().query_row("PRAGMA secure_delete", [], |row| row.get(0)).context(what)?;
        self.connection_mut().execute_batch("PRAGMA secure_delete = ON").context(what)?;
        let erased = self.begin(None).and_then(|transaction| {
            let erased = transaction.erase(link, key, by, now)?;
            transaction.commit()?;
            Ok(erased)
        });
        let restored = self.connection_mut().execute_batch(&format!("PRAGMA secure_delete = {secure}"));
        let erased = erased?;
        restored.context(what)?;
        Ok(ErasedRecord { wiped: self.wipe(), ..erased })
    }

    fn accept_webhook(&mut self, hook: &NewWebhook, seen_since: Timestamp) -> Result<bool, StoreError> {
        let what = || format!("keeping a webhook of link {}", hook.link);
        let transaction = self.begin(None)?;
        let seen = transaction
            .transaction
            .query_row(
                "SELECT count(*) FROM webhooks WHERE link = ?1 AND side = ?2 AND hook_id = ?3 AND received_ms >= ?4",
                params![hook.link, hook.side.as_str(), hook.hook_id, millis(seen_since)],
                |row| row.get::<_, i64>(0),
            )
            .context(what)?;
        if seen > 0 {
            return Ok(false);
        }
        let records = serde_json::to_string(&hook.records).unwrap_or_default();
        transaction
            .transaction
            .execute(
                "INSERT INTO webhooks (link, side, hook_id, received_ms, records) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hook.link, hook.side.as_str(), hook.hook_id, millis(hook.received_at), records],
            )
            .context(what)?;
        transaction.commit()?;
        Ok(true)
    }

    fn settle_webhooks(
        &mut self,
        link: &str,
        read_at: Timestamp,
        forget_before: Timestamp,
    ) -> Result<(), StoreError> {
        let what = || format!("settling the webhooks of link {link}");
        let transaction = self.begin(None)?;
        transaction
            .transaction
            .execute(
                "UPDATE webhooks SET read = 1 WHERE link = ?1 AND read = 0 AND received_ms < ?2",
                params![link, millis(read_at)],
            )
            .context(what)?;
        transaction
            .transaction
            .execute(
                "DELETE FROM webhooks WHERE link = ?1 AND read = 1 AND received_ms < ?2",
                params![link, millis(forget_before)],
            )
            .context(what)?;
        transaction.commit()
    }

    fn waiting_webhook(&self, link: &str) -> Result<Option<Timestamp>, StoreError> {
        let oldest = self
            .connection()
            .query_row(
                "SELECT min(received_ms) FROM webhooks WHERE link = ?1 AND read = 0",
                params![link],
                |row| row.get::<_, Option<i64>>(0),
            )
            .context(|| format!("reading the webhooks of link {link}"))?;
        Ok(oldest.map(from_millis))
    }

    fn webhook_records(&self, link: &str, limit: usize) -> Result<Option<NamedRecords>, StoreError> {
        let what = || format!("reading the webhooks of link {link}");
        let connection = self.connection();
        let mut statement = connection
            .prepare_cached("SELECT id, side, records FROM webhooks WHERE link = ?1 AND read = 0 LIMIT ?2")
            .context(what)?;
        let rows = statement
            .query_map(params![link, i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?))
            })
            .context(what)?
            .map(|row| {
                let (id, side, records) = row.context(what)?;
                let records: Vec<String> =
                    serde_json::from_str(&records).map_err(|error| damaged(what(), error))?;
                Ok((id, side, records))
            });
        named_records(rows, limit, &what())
    }

    fn settle_named_webhooks(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        let what = || "settling webhooks a targeted run read".to_string();
        let transaction = self.begin(None)?;
        for id in ids {
            transaction
                .transaction
                .execute("UPDATE webhooks SET read = 1 WHERE id = ?1", params![id])
                .context(what)?;
        }
        transaction.commit()
    }

    fn layout(&mut self, link: &str, fields: &[String]) -> Result<LinkLayout, StoreError> {
        let text = serde_json::to_string(fields).unwrap_or_default();
        let what = || format!("registering the fields of link {link}");
        self.connection_mut()
            .execute("INSERT OR IGNORE INTO layouts (link, fields) VALUES (?1, ?2)", params![link, text])
            .context(what)?;
        let id = self
            .connection_mut()
            .query_row("SELECT id FROM layouts WHERE link = ?1 AND fields = ?2", params![link, text], |row| {
                row.get(0)
            })
            .context(what)?;
        Ok(LinkLayout { id, fields: fields.to_vec() })
    }

    fn digest_page(
        &self,
        link: &str,
        layout: &LinkLayout,
        after: Option<&RecordKey>,
        limit: usize,
        each: impl FnMut(RecordKey, DigestEntry),
    ) -> Result<Option<RecordKey>, StoreError> {
        let connection = self.connection();
        let what = || format!("reading the baselines of link {link}");
        let columns = DIGEST_COLUMNS;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut first;
        let mut next;
        let rows = match after {
            None => {
                first =
                    connection.prepare_cached(&format!("{columns} ORDER BY key LIMIT ?2")).context(what)?;
                first.query(params![link, limit]).context(what)?
            }
            Some(after) => {
                next = connection
                    .prepare_cached(&format!("{columns} AND key > ?2 ORDER BY key LIMIT ?3"))
                    .context(what)?;
                next.query(params![link, after.as_str(), limit]).context(what)?
            }
        };
        let rows = rows.mapped(|row| digest_row(row, layout)).map(|row| row.context(what));
        digest_page(rows, &what(), each)
    }

    fn digests(
        &self,
        link: &str,
        layout: &LinkLayout,
        keys: &[RecordKey],
    ) -> Result<HashMap<RecordKey, DigestEntry>, StoreError> {
        let what = || format!("reading baselines of link {link}");
        let mut digests = HashMap::new();
        rows_of_keys(&self.connection(), DIGEST_COLUMNS, link, keys, what, |row| {
            if let (key, Ok(entry)) = digest_row(row, layout).context(what)? {
                digests.insert(key, entry);
            }
            Ok(())
        })?;
        Ok(digests)
    }

    fn baselines(
        &self,
        link: &str,
        layout: &LinkLayout,
        keys: &[RecordKey],
    ) -> Result<HashMap<RecordKey, Baseline>, StoreError> {
        read_baselines(&self.connection(), link, layout, keys)
    }

    fn baseline_count(&self, link: &str) -> Result<u64, StoreError> {
        self.connection()
            .query_row("SELECT live FROM baseline_counts WHERE link = ?1", params![link], |row| {
                row.get::<_, i64>(0)
            })
            .optional()
            .map(|count| u64::try_from(count.unwrap_or(0)).unwrap_or(0))
            .context(|| format!("counting the baselines of link {link}"))
    }

    fn cursor(&self, link: &str, side: Side) -> Result<CursorState, StoreError> {
        self.connection()
            .query_row(
                "SELECT cursor_ms, last_full_scan_ms, sequence FROM cursors WHERE link = ?1 AND side = ?2",
                params![link, side.as_str()],
                |row| {
                    Ok(CursorState {
                        cursor: row.get::<_, Option<i64>>(0)?.map(from_millis),
                        last_full_scan: row.get::<_, Option<i64>>(1)?.map(from_millis),
                        sequence: row.get(2)?,
                    })
                },
            )
            .optional()
            .map(Option::unwrap_or_default)
            .context(|| format!("reading the cursor of link {link}"))
    }

    fn keys_of_ids(
        &self,
        link: &str,
        side: Side,
        ids: &[RecordId],
    ) -> Result<HashMap<RecordId, RecordKey>, StoreError> {
        let what = || format!("finding baselines of link {link} by their {side} ids");
        let select = format!("SELECT key, {side}_id FROM baselines WHERE link = ?1", side = side.as_str());
        let ids: Vec<&str> = ids.iter().map(RecordId::as_str).collect();
        let mut keys = HashMap::new();
        rows_where_in(
            &self.connection(),
            &select,
            link,
            &format!("{}_id", side.as_str()),
            &ids,
            what,
            |row| {
                let key = RecordKey::new(row.get_ref(0).and_then(|value| Ok(value.as_str()?)).context(what)?);
                let id: String = row.get(1).context(what)?;
                keys.insert(RecordId::new(id), key);
                Ok(())
            },
        )?;
        Ok(keys)
    }

    fn due_outbox(
        &self,
        link: &str,
        now: Timestamp,
        after: OutboxId,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        OutboxEntry::query(
            &self.connection(),
            "WHERE link = ?1 AND status IN ('pending', 'sending') AND id > ?2 AND next_attempt_ms <= ?3 \
             ORDER BY id LIMIT ?4",
            params![link, after, millis(now), limit as i64],
        )
    }

    fn next_due(&self, link: &str) -> Result<Option<Timestamp>, StoreError> {
        self.connection()
            .query_row(
                "SELECT min(next_attempt_ms) FROM outbox WHERE link = ?1 AND status IN ('pending', 'sending')",
                params![link],
                |row| row.get::<_, Option<i64>>(0),
            )
            .map(|ms| ms.map(from_millis))
            .context(|| format!("reading the outbox of link {link}"))
    }

    fn open_outbox_for(&self, link: &str, keys: &[RecordKey]) -> Result<Vec<OutboxEntry>, StoreError> {
        of_keys(&self.connection(), link, keys, "status IN ('pending', 'sending', 'moved', 'dead')")
    }

    fn open_outbox_keys(&self, link: &str) -> Result<Vec<RecordKey>, StoreError> {
        // Not DISTINCT, which would make SQLite walk every entry of the link by key rather
        // than only the unfinished ones by status.
        let sql =
            "SELECT key FROM outbox WHERE link = ?1 AND status IN ('pending', 'sending', 'moved', 'dead')";
        let mut keys =
            keys_of(&self.connection(), link, sql, || format!("reading the outbox of link {link}"))?;
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    fn outbox_page(&self, query: OutboxQuery<'_>) -> Result<ListPage<OutboxEntry>, StoreError> {
        page(&self.connection(), query.in_rows(OutboxStatus::as_str, |id| id))
    }

    fn outbox_entry(&self, id: OutboxId) -> Result<OutboxEntry, StoreError> {
        one(&self.connection(), id)
    }

    fn outbox_counts(&self, link: &str) -> Result<HashMap<OutboxStatus, u64>, StoreError> {
        let connection = self.connection();
        let what = || format!("counting the outbox of link {link}");
        let mut statement = connection
            .prepare_cached("SELECT status, count(*) FROM outbox WHERE link = ?1 GROUP BY status")
            .context(what)?;
        let rows = statement
            .query_map(params![link], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
            .context(what)?;
        let mut counts = HashMap::new();
        for row in rows {
            let (status, count) = row.context(what)?;
            if let Some(status) = OutboxStatus::parse(&status) {
                counts.insert(status, count as u64);
            }
        }
        Ok(counts)
    }

    fn live_reviews_for(&self, link: &str, keys: &[RecordKey]) -> Result<Vec<Review>, StoreError> {
        of_keys(&self.connection(), link, keys, "status IN ('open', 'resolved')")
    }

    fn keys_with_live_reviews(&self, link: &str) -> Result<Vec<RecordKey>, StoreError> {
        let sql = "SELECT DISTINCT key FROM reviews WHERE link = ?1 AND status IN ('open', 'resolved')";
        keys_of(&self.connection(), link, sql, || format!("reading the reviews of link {link}"))
    }

    fn reviews_page(&self, query: ReviewQuery<'_>) -> Result<ListPage<Review>, StoreError> {
        page(&self.connection(), query.in_rows(ReviewStatus::as_str, |id| id))
    }

    fn review(&self, id: ReviewId) -> Result<Review, StoreError> {
        one(&self.connection(), id)
    }

    fn runs_page(&self, query: RunQuery<'_>) -> Result<ListPage<RunRow>, StoreError> {
        page(&self.connection(), query.in_rows(RunStatus::as_str, |run| run.0))
    }

    fn run(&self, id: RunId) -> Result<RunRow, StoreError> {
        one(&self.connection(), id.0)
    }

    fn runs_since(&self, since: Timestamp) -> Result<Vec<RunRow>, StoreError> {
        RunRow::query(&self.connection(), "WHERE started_ms >= ?1 ORDER BY id DESC", params![millis(since)])
    }

    fn audit_for_run(&self, id: RunId) -> Result<Vec<AuditEntry>, StoreError> {
        query_audit(&self.connection(), "WHERE run_id = ?1 ORDER BY id", params![id.0])
    }

    fn audit_for_record(&self, link: &str, key: &RecordKey) -> Result<Vec<AuditEntry>, StoreError> {
        query_audit(
            &self.connection(),
            "WHERE link = ?1 AND key = ?2 ORDER BY id",
            params![link, key.as_str()],
        )
    }
}

/// Renews the lease of `link` whose token is `token` for `ttl` from now.
///
/// # Errors
///
/// `StoreError::LeaseLost` when the token no longer holds (another holder took the link).
fn renew_lease(
    connection: &rusqlite::Connection,
    link: &str,
    owner: &str,
    token: i64,
    ttl: Duration,
) -> Result<(), StoreError> {
    let renewed = connection
        .execute(
            "UPDATE leases SET expires_ms = ?3 WHERE link = ?1 AND token = ?2",
            params![link, token, millis(Timestamp::now() + ttl)],
        )
        .context(|| format!("renewing the lease of link {link}"))?;
    if renewed == 0 {
        return Err(StoreError::LeaseLost { link: link.to_string(), owner: owner.to_string() });
    }
    Ok(())
}

impl SqliteTransaction<'_> {
    /// Commits every write at once, checking and renewing the lease first.
    fn commit(self) -> Result<(), StoreError> {
        if let Some(lease) = &self.lease {
            renew_lease(&self.transaction, &lease.link, &lease.owner, lease.token, lease.ttl)?;
        }
        if self.crash.commits_left.load(Ordering::SeqCst) > 0
            && self.crash.commits_left.fetch_sub(1, Ordering::SeqCst) == 1
        {
            let committed = self.crash.committed.load(Ordering::SeqCst);
            if committed {
                self.transaction.commit().context(|| "committing".into())?;
            }
            return Err(StoreError::InjectedCrash { committed });
        }
        self.transaction.commit().context(|| "committing".into())
    }

    /// Writes a record's baseline (replacing any), with `layout` and its digest; forgets its raw digests.
    fn put_baseline(&self, link: &str, layout: &LinkLayout, baseline: &Baseline) -> Result<(), StoreError> {
        let (values, meta) = encode_fields(&baseline.fields);
        self.transaction
            .prepare_cached(
                // An upsert rather than a replace, so that the counting triggers see an update
                // (a replace's delete fires no trigger).
                "INSERT INTO baselines \
                 (link, key, layout, left_id, right_id, digest, field_values, field_meta, tombstone) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (link, key) DO UPDATE SET layout = excluded.layout, left_id = excluded.left_id, \
                 right_id = excluded.right_id, digest = excluded.digest, field_values = excluded.field_values, \
                 field_meta = excluded.field_meta, tombstone = excluded.tombstone, left_seen = NULL, \
                 right_seen = NULL",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    link,
                    baseline.key.as_str(),
                    layout.id,
                    baseline.left_id.as_ref().map(RecordId::as_str),
                    baseline.right_id.as_ref().map(RecordId::as_str),
                    baseline.digest().to_bytes().as_slice(),
                    values,
                    meta,
                    baseline.tombstone.map(Side::as_str),
                ])
            })
            .context(|| format!("writing the baseline of record {} of link {link}", baseline.key))?;
        Ok(())
    }

    /// Records the raw digest of what `side` holds for a record equal to its baseline.
    fn set_seen(
        &self,
        link: &str,
        key: &RecordKey,
        side: Side,
        digest: RecordDigest,
    ) -> Result<(), StoreError> {
        let sql = match side {
            Side::Left => "UPDATE baselines SET left_seen = ?3 WHERE link = ?1 AND key = ?2",
            Side::Right => "UPDATE baselines SET right_seen = ?3 WHERE link = ?1 AND key = ?2",
        };
        self.transaction
            .prepare_cached(sql)
            .and_then(|mut statement| {
                statement.execute(params![link, key.as_str(), digest.to_bytes().as_slice()])
            })
            .context(|| format!("recording what the {side} side holds for record {key} of link {link}"))?;
        Ok(())
    }

    /// Removes a record's baseline.
    fn delete_baseline(&self, link: &str, key: &RecordKey) -> Result<(), StoreError> {
        self.transaction
            .execute("DELETE FROM baselines WHERE link = ?1 AND key = ?2", params![link, key.as_str()])
            .context(|| format!("removing the baseline of record {key} of link {link}"))?;
        Ok(())
    }

    /// Sets where incremental reading of one side stands.
    fn set_cursor(&self, link: &str, side: Side, state: CursorState) -> Result<(), StoreError> {
        self.transaction
            .execute(
                "INSERT OR REPLACE INTO cursors (link, side, cursor_ms, last_full_scan_ms, sequence) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    link,
                    side.as_str(),
                    state.cursor.map(millis),
                    state.last_full_scan.map(millis),
                    state.sequence
                ],
            )
            .context(|| format!("writing the cursor of link {link}"))?;
        Ok(())
    }

    /// Records the start of a run, after discarding the link's unpublished plans and
    /// counting the attempts of the sends a crash left open.
    fn start_run(&self, link: &str, mode: &str, now: Timestamp) -> Result<RunId, StoreError> {
        let what = || format!("starting a run of link {link}");
        // Only one run of a link holds its lock, so every earlier run still planning is dead:
        // the writes it planned were never published and never sent.
        let unpublished: Vec<i64> = self
            .transaction
            .prepare_cached("SELECT id FROM runs WHERE link = ?1 AND plan IS NULL")
            .and_then(|mut statement| {
                statement.query_map(params![link], |row| row.get(0))?.collect::<Result<_, _>>()
            })
            .context(what)?;
        for run in unpublished {
            self.discard_plan(link, RunId(run))?;
        }
        self.recover_sends(link, now)?;
        // And every earlier run still running is gone (its process died or lost the lease):
        // the history says so, and when it was taken over.
        self.transaction
            .execute(
                "UPDATE runs SET status = 'failed', finished_ms = ?2, error = ?3 \
                 WHERE link = ?1 AND status = 'running'",
                params![link, millis(now), ABANDONED],
            )
            .context(what)?;
        self.transaction
            .execute(
                "INSERT INTO runs (link, mode, status, started_ms) VALUES (?1, ?2, 'running', ?3)",
                params![link, mode, millis(now)],
            )
            .context(what)?;
        Ok(RunId(self.transaction.last_insert_rowid()))
    }

    /// Makes a run's planned writes deliverable.
    fn publish_plan(&self, run: RunId) -> Result<(), StoreError> {
        self.transaction
            .execute("UPDATE runs SET plan = 'published' WHERE id = ?1", params![run.0])
            .context(|| format!("publishing the plan of run {run}"))?;
        Ok(())
    }

    /// Drops what a run planned and never published; returns how many writes were dropped.
    fn discard_plan(&self, link: &str, run: RunId) -> Result<usize, StoreError> {
        let what = || format!("discarding the plan of run {run}");
        // Unpublished entries were never sent: they are all pending, never attempted.
        let dropped = self
            .transaction
            .execute(
                "DELETE FROM outbox WHERE link = ?1 AND status = 'pending' AND attempts = 0 AND run_id = ?2",
                params![link, run.0],
            )
            .context(what)?;
        // A review keeps the run that opened it (updating one leaves its run as it was).
        self.transaction
            .execute("DELETE FROM reviews WHERE link = ?1 AND run_id = ?2", params![link, run.0])
            .context(what)?;
        self.transaction.execute("DELETE FROM audit WHERE run_id = ?1", params![run.0]).context(what)?;
        self.transaction
            .execute("UPDATE runs SET plan = 'discarded' WHERE id = ?1", params![run.0])
            .context(what)?;
        Ok(dropped)
    }

    /// Records how a run ended.
    fn finish_run(&self, end: &RunEnd) -> Result<(), StoreError> {
        self.transaction
            .execute(
                "UPDATE runs SET status = ?2, mode = ?3, stats = ?4, error = ?5, finished_ms = ?6 WHERE id = ?1",
                params![end.run.0, end.status.as_str(), end.mode, end.stats.to_string(), end.error, millis(end.at)],
            )
            .context(|| format!("finishing run {}", end.run))?;
        Ok(())
    }

    /// Stores a planned write, due at `now`.
    fn insert_outbox(
        &self,
        link: &str,
        run_id: RunId,
        entry: &NewOutboxEntry,
        now: Timestamp,
    ) -> Result<OutboxId, StoreError> {
        self.transaction
            .prepare_cached(
                "INSERT INTO outbox (link, key, side, run_id, operation, record_id, payload, status, \
                 attempts, next_attempt_ms, created_ms, updated_ms, source_basis, source_raw) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8, ?8, ?9, ?10)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    link,
                    entry.key.as_str(),
                    entry.side.as_str(),
                    run_id.0,
                    entry.operation.as_str(),
                    entry.record_id.as_ref().map(RecordId::as_str),
                    entry.payload,
                    millis(now),
                    entry.source.map(|source| source.basis.to_bytes().to_vec()),
                    entry.source.map(|source| source.raw.to_bytes().to_vec()),
                ])
            })
            .context(|| format!("planning a write of record {} of link {link}", entry.key))?;
        Ok(self.transaction.last_insert_rowid())
    }

    /// Marks entries as being sent: one more attempt counted.
    fn mark_sending(&self, ids: &[OutboxId], now: Timestamp) -> Result<(), StoreError> {
        let mut statement = self
            .transaction
            .prepare_cached(
                "UPDATE outbox SET status = 'sending', attempts = attempts + 1, updated_ms = ?2 WHERE id = ?1",
            )
            .context(|| "marking outbox entries as sending".into())?;
        for id in ids {
            statement.execute(params![id, millis(now)]).context(|| format!("marking outbox entry {id}"))?;
        }
        Ok(())
    }

    /// Marks a batch of entries as being sent, by one row (see `StateStore::start_send`).
    fn begin_send(&self, link: &str, ids: &[OutboxId], now: Timestamp) -> Result<SendId, StoreError> {
        let entries = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        self.transaction
            .prepare_cached("INSERT INTO outbox_sends (link, entries, started_ms) VALUES (?1, ?2, ?3)")
            .and_then(|mut statement| statement.execute(params![link, entries, millis(now)]))
            .context(|| format!("marking {} outbox entries of link {link} as being sent", ids.len()))?;
        Ok(self.transaction.last_insert_rowid())
    }

    /// Ends a send.
    fn end_send(&self, send: SendId) -> Result<(), StoreError> {
        self.transaction
            .prepare_cached("DELETE FROM outbox_sends WHERE id = ?1")
            .and_then(|mut statement| statement.execute(params![send]))
            .context(|| format!("ending send {send}"))?;
        Ok(())
    }

    /// Puts a dead entry back in line: pending, due now, attempts reset.
    fn retry_dead(&self, id: OutboxId, now: Timestamp) -> Result<(), StoreError> {
        let changed = self
            .transaction
            .execute(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_ms = ?2, updated_ms = ?2 \
                 WHERE id = ?1 AND status = 'dead'",
                params![id, millis(now)],
            )
            .context(|| format!("retrying outbox entry {id}"))?;
        if changed == 0 { Err(StoreError::NotFound { what: "dead outbox entry", id }) } else { Ok(()) }
    }

    /// Drops a dead entry for good.
    fn drop_dead(&self, id: OutboxId, now: Timestamp) -> Result<(), StoreError> {
        let changed = self
            .transaction
            .execute(
                "UPDATE outbox SET status = 'dropped', updated_ms = ?2 WHERE id = ?1 AND status = 'dead'",
                params![id, millis(now)],
            )
            .context(|| format!("dropping outbox entry {id}"))?;
        if changed == 0 { Err(StoreError::NotFound { what: "dead outbox entry", id }) } else { Ok(()) }
    }

    /// Opens a review, or refreshes the live one for the same record and field (new values
    /// reopen it).
    fn put_review(
        &self,
        link: &str,
        run_id: Option<RunId>,
        review: &NewReview,
        now: Timestamp,
    ) -> Result<ReviewId, StoreError> {
        let what = || format!("opening a review of record {} of link {link}", review.key);
        let existing: Option<(i64, Option<String>, Option<String>)> = self
            .transaction
            .query_row(
                "SELECT id, left_value, right_value FROM reviews WHERE link = ?1 AND key = ?2 \
                 AND field IS ?3 AND status IN ('open', 'resolved')",
                params![link, review.key.as_str(), review.field],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .context(what)?;
        let left = value_text(&review.left);
        let right = value_text(&review.right);
        match existing {
            Some((id, old_left, old_right)) if old_left == left && old_right == right => Ok(id),
            Some((id, _, _)) => {
                self.transaction
                    .execute(
                        "UPDATE reviews SET base = ?2, left_value = ?3, right_value = ?4, reason = ?5, \
                         status = 'open', decision = NULL, updated_ms = ?6, left_changed_ms = ?7, \
                         right_changed_ms = ?8 WHERE id = ?1",
                        params![
                            id,
                            value_text(&review.base),
                            left,
                            right,
                            review.reason,
                            millis(now),
                            review.left_changed.map(millis),
                            review.right_changed.map(millis),
                        ],
                    )
                    .context(what)?;
                Ok(id)
            }
            None => {
                self.transaction
                    .execute(
                        "INSERT INTO reviews (link, key, field, kind, base, left_value, right_value, reason, \
                         status, run_id, created_ms, updated_ms, left_changed_ms, right_changed_ms) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'open', ?9, ?10, ?10, ?11, ?12)",
                        params![
                            link,
                            review.key.as_str(),
                            review.field,
                            review.kind.as_str(),
                            value_text(&review.base),
                            left,
                            right,
                            review.reason,
                            run_id.map(|id| id.0),
                            millis(now),
                            review.left_changed.map(millis),
                            review.right_changed.map(millis),
                        ],
                    )
                    .context(what)?;
                Ok(self.transaction.last_insert_rowid())
            }
        }
    }

    /// Records a person's decision on a live review.
    fn resolve_review(&self, id: ReviewId, decision: &Decision, now: Timestamp) -> Result<(), StoreError> {
        let text = serde_json::to_string(decision).unwrap_or_default();
        let changed = self
            .transaction
            .execute(
                "UPDATE reviews SET status = 'resolved', decision = ?2, resolved_ms = ?3, updated_ms = ?3 \
                 WHERE id = ?1 AND status IN ('open', 'resolved')",
                params![id, text, millis(now)],
            )
            .context(|| format!("resolving review {id}"))?;
        if changed == 0 { Err(StoreError::NotFound { what: "open review", id }) } else { Ok(()) }
    }

    /// Closes a review.
    fn close_review(&self, id: ReviewId, now: Timestamp) -> Result<(), StoreError> {
        self.transaction
            .execute(
                "UPDATE reviews SET status = 'closed', updated_ms = ?2 WHERE id = ?1",
                params![id, millis(now)],
            )
            .context(|| format!("closing review {id}"))?;
        Ok(())
    }

    /// Appends to the audit trail.
    fn audit(&self, link: &str, entry: &AuditEntry) -> Result<(), StoreError> {
        self.transaction
            .prepare_cached(
                "INSERT INTO audit (run_id, link, key, field, event, side, base, left_value, right_value, \
                 value, reason, at_ms, kept) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    entry.run_id.map(|id| id.0),
                    link,
                    entry.key.as_str(),
                    entry.field,
                    entry.event.as_str(),
                    entry.side.map(Side::as_str),
                    value_text(&entry.base),
                    value_text(&entry.left),
                    value_text(&entry.right),
                    value_text(&entry.value),
                    entry.reason,
                    millis(entry.at),
                    entry.values.as_str(),
                ])
            })
            .context(|| format!("writing the audit of record {} of link {link}", entry.key))?;
        Ok(())
    }

    /// Removes every row of the record `key` of `link`, strikes it from the webhooks and
    /// messages that name it, and audits the erasure (see `StateStore::erase_record`).
    fn erase(
        &self,
        link: &str,
        key: &RecordKey,
        by: &str,
        now: Timestamp,
    ) -> Result<ErasedRecord, StoreError> {
        let what = || format!("erasing record {key} of link {link}");
        let connection = &*self.transaction;
        let mut traces = Traces::new(key);
        let row_of_key = params![link, key.as_str()];
        // What its rows held, to strike from the messages that stay.
        let mut statement = connection
            .prepare("SELECT left_id, right_id, field_values FROM baselines WHERE link = ?1 AND key = ?2")
            .context(what)?;
        let mut rows = statement.query(row_of_key).context(what)?;
        while let Some(row) = rows.next().context(what)? {
            let ids = [row.get::<_, Option<String>>(0).context(what)?, row.get(1).context(what)?];
            traces.baseline(ids.each_ref().map(Option::as_deref), &row.get::<_, String>(2).context(what)?);
        }
        let mut statement = connection
            .prepare("SELECT side, record_id, payload FROM outbox WHERE link = ?1 AND key = ?2")
            .context(what)?;
        let mut rows = statement.query(row_of_key).context(what)?;
        while let Some(row) = rows.next().context(what)? {
            let side = side_from(&row.get::<_, String>(0).context(what)?, &what())?;
            let record_id: Option<String> = row.get(1).context(what)?;
            traces.outbox_entry(side, record_id.as_deref(), &row.get::<_, String>(2).context(what)?);
        }
        for (table, columns) in VALUE_COLUMNS {
            let sql = format!("SELECT {columns} FROM {table} WHERE link = ?1 AND key = ?2");
            let mut statement = connection.prepare(&sql).context(what)?;
            let mut rows = statement.query(row_of_key).context(what)?;
            while let Some(row) = rows.next().context(what)? {
                for column in 0..row.as_ref().column_count() {
                    if let Some(text) = row.get::<_, Option<String>>(column).context(what)? {
                        traces.values(&text);
                    }
                }
            }
        }
        let delete = |table: &str| -> Result<u64, StoreError> {
            let sql = format!("DELETE FROM {table} WHERE link = ?1 AND key = ?2");
            Ok(connection.execute(&sql, row_of_key).context(what)? as u64)
        };
        let mut erased = ErasedRecord {
            baseline: delete("baselines")? > 0,
            outbox_entries: delete("outbox")?,
            reviews: delete("reviews")?,
            audit_entries: delete("audit")?,
            ..ErasedRecord::default()
        };
        // The webhooks that name it: its ids struck, a webhook naming nothing else removed.
        let mut statement =
            connection.prepare("SELECT id, side, records FROM webhooks WHERE link = ?1").context(what)?;
        let webhooks: Vec<(i64, String, String)> = statement
            .query_map(params![link], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .context(what)?
            .collect::<Result<_, _>>()
            .context(what)?;
        for (id, side, records) in webhooks {
            let side = side_from(&side, &what())?;
            let named: Vec<String> =
                serde_json::from_str(&records).map_err(|error| damaged(what(), error))?;
            let Some(kept) = traces.unnamed(side, &named) else {
                continue;
            };
            erased.webhooks += 1;
            if kept.is_empty() {
                connection.execute("DELETE FROM webhooks WHERE id = ?1", params![id]).context(what)?;
            } else {
                let records = serde_json::to_string(&kept).unwrap_or_default();
                connection
                    .execute("UPDATE webhooks SET records = ?2 WHERE id = ?1", params![id, records])
                    .context(what)?;
            }
        }
        // The messages that may quote it: runs' errors, failed writes' messages and reasons.
        for (table, column, only) in MESSAGE_COLUMNS {
            let sql = format!("SELECT id, {column} FROM {table} WHERE link = ?1 AND {only}");
            let mut statement = connection.prepare(&sql).context(what)?;
            let struck: Vec<(i64, String)> = statement
                .query_map(params![link], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))
                .context(what)?
                .filter_map(|row| match row {
                    Ok((id, message)) => traces.strike(&message).map(|struck| Ok((id, struck))),
                    Err(error) => Some(Err(error)),
                })
                .collect::<Result<_, _>>()
                .context(what)?;
            let sql = format!("UPDATE {table} SET {column} = ?2 WHERE id = ?1");
            for (id, message) in struck {
                connection.execute(&sql, params![id, message]).context(what)?;
                erased.messages += 1;
            }
        }
        self.audit(link, &erased.audit(link, key, by, now))?;
        Ok(erased)
    }

    /// Counts an attempt on each entry of every send of `link` a crash left open (the next
    /// run's `start_run` does this), and closes those sends.
    fn recover_sends(&self, link: &str, now: Timestamp) -> Result<(), StoreError> {
        let what = || format!("recovering the sends of link {link}");
        let open: Vec<(i64, String)> = self
            .transaction
            .prepare_cached("SELECT id, entries FROM outbox_sends WHERE link = ?1")
            .and_then(|mut statement| {
                statement
                    .query_map(params![link], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<_, _>>()
            })
            .context(what)?;
        for (send, entries) in open {
            self.mark_sending(&send_entries(send, &entries)?, now)?;
            self.end_send(send)?;
        }
        Ok(())
    }

    /// Sets an outbox entry's status, next attempt (when given) and last error (when given),
    /// counting the attempt when one was made.
    fn set_outcome(&self, outcome: &EntryOutcome, now: Timestamp) -> Result<(), StoreError> {
        self.transaction
            .prepare_cached(
                "UPDATE outbox SET status = ?2, attempts = attempts + ?6, \
                 next_attempt_ms = coalesce(?3, next_attempt_ms), last_error = coalesce(?4, last_error), \
                 updated_ms = ?5 WHERE id = ?1",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    outcome.id,
                    outcome.status.as_str(),
                    outcome.next_attempt_at.map(millis),
                    outcome.error,
                    millis(now),
                    i64::from(outcome.attempted)
                ])
            })
            .context(|| format!("updating outbox entry {}", outcome.id))?;
        Ok(())
    }
}

/// Writes and forgets baselines in the order given.
fn write_baselines(
    transaction: &SqliteTransaction<'_>,
    link: &str,
    layout: &LinkLayout,
    baselines: &[BaselineWrite],
) -> Result<(), StoreError> {
    for write in baselines {
        match write {
            BaselineWrite::Put(baseline) => transaction.put_baseline(link, layout, baseline)?,
            BaselineWrite::Forget(key) => transaction.delete_baseline(link, key)?,
        }
    }
    Ok(())
}

fn migrate(connection: &mut rusqlite::Connection) -> Result<(), StoreError> {
    let what = || "migrating the schema".to_string();
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive).context(what)?;
    transaction
        .execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .context(what)?;
    let version: i64 = transaction
        .query_row("SELECT coalesce(max(version), 0) FROM schema_version", [], |row| row.get(0))
        .context(what)?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew { found: version, known });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        transaction.execute_batch(migration).context(|| format!("applying migration {}", index + 1))?;
    }
    if version < known {
        transaction.execute("DELETE FROM schema_version", []).context(what)?;
        transaction
            .execute("INSERT INTO schema_version (version) VALUES (?1)", params![known])
            .context(what)?;
    }
    transaction.commit().context(what)
}

fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

/// The keys `sql` (which binds `link` as `?1`) reads.
fn keys_of(
    connection: &rusqlite::Connection,
    link: &str,
    sql: &str,
    what: impl Fn() -> String,
) -> Result<Vec<RecordKey>, StoreError> {
    let mut statement = connection.prepare_cached(sql).context(&what)?;
    let keys = statement
        .query_map(params![link], |row| Ok(RecordKey::new(row.get::<_, String>(0)?)))
        .context(&what)?
        .collect::<Result<Vec<_>, _>>()
        .context(&what)?;
    Ok(keys)
}

/// Hands `each` the rows `select` (which binds `link` as `?1`) reads for `keys`, a chunk at a
/// time (`AND key IN (…)`).
fn rows_of_keys(
    connection: &rusqlite::Connection,
    select: &str,
    link: &str,
    keys: &[RecordKey],
    what: impl Fn() -> String,
    each: impl FnMut(&rusqlite::Row<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let keys: Vec<&str> = keys.iter().map(RecordKey::as_str).collect();
    rows_where_in(connection, select, link, "key", &keys, what, each)
}

/// Runs `select` (which binds `link` as `?1`) for the rows whose `column` holds one of `values`,
/// a chunk of them at a time, handing each row to `each`.
fn rows_where_in(
    connection: &rusqlite::Connection,
    select: &str,
    link: &str,
    column: &str,
    values: &[&str],
    what: impl Fn() -> String,
    mut each: impl FnMut(&rusqlite::Row<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for chunk in values.chunks(CHUNK) {
        let sql = format!("{select} AND {column} IN ({})", placeholders(chunk.len()));
        let mut statement = connection.prepare_cached(&sql).context(&what)?;
        let bound = std::iter::once(link).chain(chunk.iter().copied());
        let mut rows = statement.query(rusqlite::params_from_iter(bound)).context(&what)?;
        while let Some(row) = rows.next().context(&what)? {
            each(row)?;
        }
    }
    Ok(())
}

fn digest_row(row: &rusqlite::Row<'_>, layout: &LinkLayout) -> Result<DigestRow, rusqlite::Error> {
    // Read in place, without copying what is only looked at: a full scan reads every row.
    let key = RecordKey::new(row.get_ref(0)?.as_str()?);
    // An id equal to the key is not copied at all.
    let id = |column: usize| match row.get_ref(column) {
        Ok(rusqlite::types::ValueRef::Text(bytes)) => std::str::from_utf8(bytes).ok(),
        _ => None,
    };
    let columns = DigestColumns {
        layout: row.get(1)?,
        digest: row.get_ref(2)?.as_blob()?,
        ids: [id(3), id(4)],
        tombstone: row.get_ref(5)?.as_str_or_null()?,
        seen: [seen_column(row, 6), seen_column(row, 7)],
    };
    let entry = columns.entry(&key, layout);
    Ok((key, entry))
}

fn seen_column(row: &rusqlite::Row<'_>, column: usize) -> Option<RecordDigest> {
    row.get_ref(column).ok()?.as_blob_or_null().ok().flatten().and_then(RecordDigest::from_bytes)
}

fn read_baselines(
    connection: &rusqlite::Connection,
    link: &str,
    layout: &LinkLayout,
    keys: &[RecordKey],
) -> Result<HashMap<RecordKey, Baseline>, StoreError> {
    let what = || format!("reading baselines of link {link}");
    let mut layouts: HashMap<i64, Vec<String>> = HashMap::new();
    {
        let mut statement =
            connection.prepare_cached("SELECT id, fields FROM layouts WHERE link = ?1").context(what)?;
        let rows = statement
            .query_map(params![link], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))
            .context(what)?;
        for row in rows {
            let (id, fields) = row.context(what)?;
            let fields = serde_json::from_str(&fields).map_err(|error| damaged("layout", error))?;
            layouts.insert(id, fields);
        }
    }
    let mut baselines = HashMap::new();
    let select = "SELECT key, layout, left_id, right_id, field_values, field_meta, tombstone, digest FROM baselines \
                  WHERE link = ?1";
    rows_of_keys(connection, select, link, keys, what, |row| {
        let key = RecordKey::new(row.get::<_, String>(0).context(what)?);
        let row_layout: i64 = row.get(1).context(what)?;
        let values: String = row.get(4).context(what)?;
        let meta: String = row.get(5).context(what)?;
        let tombstone: Option<String> = row.get(6).context(what)?;
        let digest: Vec<u8> = row.get(7).context(what)?;
        // A damaged row is left out: its record then has no baseline, so its differences
        // go to `first_sync` (a review by default) rather than to any silent rule.
        let Some(stored_fields) = layouts.get(&row_layout) else { return Ok(()) };
        let Ok(fields) = decode_fields(&values, &meta, &digest, stored_fields, &layout.fields) else {
            return Ok(());
        };
        let Ok(tombstone) = tombstone.as_deref().map(|side| side_from(side, "tombstone")).transpose() else {
            return Ok(());
        };
        let baseline = Baseline {
            left_id: row.get::<_, Option<String>>(2).context(what)?.map(RecordId::new),
            right_id: row.get::<_, Option<String>>(3).context(what)?.map(RecordId::new),
            fields,
            tombstone,
            key: key.clone(),
        };
        baselines.insert(key, baseline);
        Ok(())
    })?;
    Ok(baselines)
}

/// A row type the store lists, pages and finds by id: how rows of it are read (`query`, with
/// a `WHERE …` clause and its parameters; its table, names and id are its `Listing`).
trait Listed: Listing + Sized {
    /// The columns `from_row` reads, in its order.
    const COLUMNS: &'static str;

    /// Reads one row of `COLUMNS`; `what` names the reading for errors.
    fn from_row(row: &rusqlite::Row<'_>, what: &dyn Fn() -> String) -> Result<Self, StoreError>;

    /// Completes rows just read, from what else the store holds.
    fn complete(_connection: &rusqlite::Connection, _rows: &mut [Self]) -> Result<(), StoreError> {
        Ok(())
    }

    /// The rows `clause` (`WHERE …`, with `params`) selects.
    fn query(
        connection: &rusqlite::Connection,
        clause: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<Self>, StoreError> {
        let sql = format!("SELECT {} FROM {} {clause}", Self::COLUMNS, Self::TABLE);
        let mut rows = read_rows(connection, &sql, params, &|| Self::READING.to_string(), Self::from_row)?;
        Self::complete(connection, &mut rows)?;
        Ok(rows)
    }
}

/// The rows `sql` reads with `params`, each read by `from_row`; `what` names the reading for
/// errors.
fn read_rows<T>(
    connection: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    what: &dyn Fn() -> String,
    from_row: impl Fn(&rusqlite::Row<'_>, &dyn Fn() -> String) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = connection.prepare_cached(sql).context(what)?;
    let mut rows = statement.query(params).context(what)?;
    let mut read = Vec::new();
    while let Some(row) = rows.next().context(what)? {
        read.push(from_row(row, what)?);
    }
    Ok(read)
}

/// The page of rows `query` asks for, in the rows' terms (`ListQuery::in_rows`).
fn page<T: Listed>(
    connection: &rusqlite::Connection,
    query: ListQuery<'_, &str, i64>,
) -> Result<ListPage<T>, StoreError> {
    let ListQuery { link, links, status, before, limit } = query;
    let clause = "(?1 IS NULL OR link = ?1) AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR id < ?3) \
                  AND (?4 IS NULL OR link IN (SELECT value FROM json_each(?4)))";
    let links = links.map(|links| serde_json::Value::from(links.to_vec()).to_string());
    let limit = if limit == 0 { -1 } else { limit as i64 };
    let rows = T::query(
        connection,
        &format!("WHERE {clause} ORDER BY id DESC LIMIT ?5"),
        params![link, status, before, links, limit],
    )?;
    let more = match rows.last() {
        Some(last) => connection
            .query_row(
                &format!("SELECT count(*) FROM {} WHERE {clause}", T::TABLE),
                params![link, status, last.id(), links],
                |row| row.get::<_, i64>(0),
            )
            .context(|| format!("counting the {}", T::TABLE))?,
        None => 0,
    };
    Ok(ListPage { rows, more: more as u64 })
}

/// The row with this id.
fn one<T: Listed>(connection: &rusqlite::Connection, id: i64) -> Result<T, StoreError> {
    T::query(connection, "WHERE id = ?1", params![id])?.pop().ok_or(StoreError::NotFound { what: T::ONE, id })
}

/// The rows of some records of `link` that `filter` (a condition) selects, oldest first.
fn of_keys<T: Listed>(
    connection: &rusqlite::Connection,
    link: &str,
    keys: &[RecordKey],
    filter: &str,
) -> Result<Vec<T>, StoreError> {
    let mut rows = Vec::new();
    for chunk in keys.chunks(CHUNK) {
        let clause =
            format!("WHERE link = ? AND {filter} AND key IN ({}) ORDER BY id", placeholders(chunk.len()));
        let bound = std::iter::once(link).chain(chunk.iter().map(RecordKey::as_str));
        rows.extend(T::query(connection, &clause, rusqlite::params_from_iter(bound))?);
    }
    Ok(rows)
}

impl Listed for OutboxEntry {
    const COLUMNS: &'static str = "id, link, key, side, run_id, operation, record_id, payload, status, \
                                   attempts, next_attempt_ms, last_error, created_ms, updated_ms, \
                                   source_basis, source_raw";

    fn from_row(row: &rusqlite::Row<'_>, what: &dyn Fn() -> String) -> Result<Self, StoreError> {
        let id: i64 = row.get(0).context(what)?;
        let entry_what = format!("outbox entry {id}");
        let side: String = row.get(3).context(what)?;
        let operation: String = row.get(5).context(what)?;
        let status: String = row.get(8).context(what)?;
        let write = NewOutboxEntry {
            key: RecordKey::new(row.get::<_, String>(2).context(what)?),
            side: side_from(&side, &entry_what)?,
            operation: Operation::parse(&operation)
                .ok_or_else(|| damaged(&entry_what, "unknown operation"))?,
            record_id: row.get::<_, Option<String>>(6).context(what)?.map(RecordId::new),
            payload: row.get(7).context(what)?,
            source: seen_column(row, 14)
                .zip(seen_column(row, 15))
                .map(|(basis, raw)| SourceDigest { basis, raw }),
        };
        Ok(Self {
            id,
            link: row.get(1).context(what)?,
            run_id: RunId(row.get(4).context(what)?),
            write,
            status: OutboxStatus::parse(&status).ok_or_else(|| damaged(&entry_what, "unknown status"))?,
            attempts: row.get::<_, i64>(9).context(what)? as u32,
            next_attempt_at: from_millis(row.get(10).context(what)?),
            last_error: row.get(11).context(what)?,
            created_at: from_millis(row.get(12).context(what)?),
            updated_at: from_millis(row.get(13).context(what)?),
        })
    }

    /// An entry being sent (or left so by a crash) reads `sending`, with the attempt counted.
    fn complete(connection: &rusqlite::Connection, entries: &mut [Self]) -> Result<(), StoreError> {
        let in_flight = in_flight(connection)?;
        for entry in entries {
            if in_flight.contains(&entry.id)
                && matches!(entry.status, OutboxStatus::Pending | OutboxStatus::Sending)
            {
                entry.status = OutboxStatus::Sending;
                entry.attempts += 1;
            }
        }
        Ok(())
    }
}

/// The entries of every open send (`StateStore::start_send`).
fn in_flight(connection: &rusqlite::Connection) -> Result<std::collections::HashSet<OutboxId>, StoreError> {
    let what = || "reading the open sends".to_string();
    let mut statement = connection.prepare_cached("SELECT id, entries FROM outbox_sends").context(what)?;
    let mut rows = statement.query([]).context(what)?;
    let mut ids = std::collections::HashSet::new();
    while let Some(row) = rows.next().context(what)? {
        let send: i64 = row.get(0).context(what)?;
        let entries: String = row.get(1).context(what)?;
        ids.extend(send_entries(send, &entries)?);
    }
    Ok(ids)
}

/// The entries a send marked, as `SqliteTransaction::begin_send` wrote them.
fn send_entries(send: i64, entries: &str) -> Result<Vec<OutboxId>, StoreError> {
    serde_json::from_str(entries).map_err(|error| damaged(format!("send {send}"), error))
}

impl Listed for Review {
    const COLUMNS: &'static str = "id, link, key, field, kind, base, left_value, right_value, reason, \
                                   status, decision, run_id, created_ms, updated_ms, left_changed_ms, \
                                   right_changed_ms";

    fn from_row(row: &rusqlite::Row<'_>, what: &dyn Fn() -> String) -> Result<Self, StoreError> {
        let id: i64 = row.get(0).context(what)?;
        let review_what = format!("review {id}");
        let kind: String = row.get(4).context(what)?;
        let status: String = row.get(9).context(what)?;
        let decision: Option<String> = row.get(10).context(what)?;
        Ok(Self {
            id,
            link: row.get(1).context(what)?,
            review: NewReview {
                key: RecordKey::new(row.get::<_, String>(2).context(what)?),
                field: row.get(3).context(what)?,
                kind: ReviewKind::parse(&kind).ok_or_else(|| damaged(&review_what, "unknown kind"))?,
                base: value_from(row.get(5).context(what)?, &review_what)?,
                left: value_from(row.get(6).context(what)?, &review_what)?,
                right: value_from(row.get(7).context(what)?, &review_what)?,
                left_changed: row.get::<_, Option<i64>>(14).context(what)?.map(from_millis),
                right_changed: row.get::<_, Option<i64>>(15).context(what)?.map(from_millis),
                reason: row.get(8).context(what)?,
            },
            status: ReviewStatus::parse(&status).ok_or_else(|| damaged(&review_what, "unknown status"))?,
            decision: decision
                .map(|text| serde_json::from_str(&text).map_err(|error| damaged(&review_what, error)))
                .transpose()?,
            run_id: row.get::<_, Option<i64>>(11).context(what)?.map(RunId),
            created_at: from_millis(row.get(12).context(what)?),
            updated_at: from_millis(row.get(13).context(what)?),
        })
    }
}

impl Listed for RunRow {
    const COLUMNS: &'static str = "id, link, mode, status, started_ms, finished_ms, stats, error";

    fn from_row(row: &rusqlite::Row<'_>, what: &dyn Fn() -> String) -> Result<Self, StoreError> {
        let id: i64 = row.get(0).context(what)?;
        let status: String = row.get(3).context(what)?;
        let stats: Option<String> = row.get(6).context(what)?;
        Ok(Self {
            id: RunId(id),
            link: row.get(1).context(what)?,
            mode: row.get(2).context(what)?,
            status: RunStatus::parse(&status)
                .ok_or_else(|| damaged(format!("run {id}"), "unknown status"))?,
            started_at: from_millis(row.get(4).context(what)?),
            finished_at: row.get::<_, Option<i64>>(5).context(what)?.map(from_millis),
            stats: stats
                .map(|text| serde_json::from_str(&text).map_err(|error| damaged(format!("run {id}"), error)))
                .transpose()?
                .unwrap_or(serde_json::Value::Null),
            error: row.get(7).context(what)?,
        })
    }
}

fn query_audit(
    connection: &rusqlite::Connection,
    clause: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<AuditEntry>, StoreError> {
    let sql = format!(
        "SELECT run_id, key, field, event, side, base, left_value, right_value, value, reason, at_ms, id, \
         kept FROM audit {clause}"
    );
    read_rows(connection, &sql, params, &|| "reading the audit trail".to_string(), |row, what| {
        let id: i64 = row.get(11).context(what)?;
        let entry_what = format!("audit entry {id}");
        let event: String = row.get(3).context(what)?;
        let side: Option<String> = row.get(4).context(what)?;
        Ok(AuditEntry {
            run_id: row.get::<_, Option<i64>>(0).context(what)?.map(RunId),
            key: RecordKey::new(row.get::<_, String>(1).context(what)?),
            field: row.get(2).context(what)?,
            event: AuditEvent::parse(&event).ok_or_else(|| damaged(&entry_what, "unknown event"))?,
            side: side.as_deref().map(|side| side_from(side, &entry_what)).transpose()?,
            base: value_from(row.get(5).context(what)?, &entry_what)?,
            left: value_from(row.get(6).context(what)?, &entry_what)?,
            right: value_from(row.get(7).context(what)?, &entry_what)?,
            value: value_from(row.get(8).context(what)?, &entry_what)?,
            reason: row.get(9).context(what)?,
            at: from_millis(row.get(10).context(what)?),
            values: AuditValues::parse(&row.get::<_, String>(12).context(what)?)
                .ok_or_else(|| damaged(&entry_what, "unknown policy of values"))?,
        })
    })
}
