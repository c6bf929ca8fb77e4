//! The state store a [`World`](crate::World) holds: [`TestStore`], SQLite in the world's
//! temporary directory or, with `FIELDSYNC_TEST_STORE=postgres`, a fresh schema of the one
//! PostgreSQL server of the test binary — so that the engine's tests prove the same guarantees
//! on both stores without a test written twice. `TestStore` is a `StateStore` by
//! `dispatch_store!`, as the app's `AnyStore` is.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use fieldsync_connector::testkit::postgres::{PostgresServer, SHARED_DATABASE};
use fieldsync_postgres::{block_on, quote_ident};
use fieldsync_store::{StoreError, StoreLocation};
use fieldsync_store_postgres::{PostgresLocation, PostgresStore};
use fieldsync_store_sqlite::SqliteStore;

/// The variable that chooses the store of a test binary's worlds: `sqlite` (the default) or
/// `postgres`.
pub const STORE_VARIABLE: &str = "FIELDSYNC_TEST_STORE";

/// The database of the test binary's PostgreSQL server that holds every world's schema.
const DATABASE: &str = SHARED_DATABASE;

/// A kind of state store a world may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// `SqliteStore`, a file in the world's temporary directory.
    Sqlite,
    /// `PostgresStore`, a schema of its own on the test binary's PostgreSQL server.
    Postgres,
}

impl StoreKind {
    /// The kind [`STORE_VARIABLE`] names: SQLite unless it says `postgres`.
    ///
    /// # Panics
    ///
    /// When the variable names neither kind.
    pub fn from_env() -> StoreKind {
        match std::env::var(STORE_VARIABLE) {
            Err(std::env::VarError::NotPresent) => StoreKind::Sqlite,
            Ok(kind) if kind.is_empty() || kind == "sqlite" => StoreKind::Sqlite,
            Ok(kind) if kind == "postgres" => StoreKind::Postgres,
            other => panic!("{STORE_VARIABLE} is {other:?}; it says sqlite (the default) or postgres"),
        }
    }
}

/// The state store of a world: either kind, a `StateStore` by dispatch.
#[derive(Debug)]
pub enum TestStore {
    /// The SQLite store.
    Sqlite(SqliteStore),
    /// The PostgreSQL store.
    Postgres(PostgresStore),
}

fieldsync_store::dispatch_store!(TestStore { Sqlite, Postgres });

impl TestStore {
    /// Which kind of store this is.
    pub fn kind(&self) -> StoreKind {
        match self {
            TestStore::Sqlite(_) => StoreKind::Sqlite,
            TestStore::Postgres(_) => StoreKind::Postgres,
        }
    }

    /// Fault injection: the `commits`-th commit from now (1 is the next one) fails with
    /// `StoreError::InjectedCrash`, before it lands or (`committed`) after; `0` plans none.
    /// Both stores count the same commits, those of the use cases (not taking, renewing or
    /// releasing a lease).
    pub fn crash_at_commit(&self, commits: u32, committed: bool) {
        match self {
            TestStore::Sqlite(store) => store.crash_at_commit(commits, committed),
            TestStore::Postgres(store) => store.crash_at_commit(commits, committed),
        }
    }
}

/// Where a world's store lives: what opens it again, and reaches its tables around it.
pub(crate) enum StoreHome {
    /// The SQLite file.
    Sqlite(PathBuf),
    /// The schema on the test binary's PostgreSQL server.
    Postgres {
        /// The server.
        server: &'static PostgresServer,
        /// The schema, as a configuration's `state` names it.
        location: PostgresLocation,
    },
}

impl std::fmt::Debug for StoreHome {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreHome::Sqlite(path) => formatter.debug_tuple("Sqlite").field(path).finish(),
            StoreHome::Postgres { location, .. } => {
                formatter.debug_tuple("Postgres").field(location).finish()
            }
        }
    }
}

impl StoreHome {
    /// A new store of the kind [`StoreKind::from_env`] names: a file in `dir`, or a schema of
    /// its own on the test binary's PostgreSQL server. Without PostgreSQL the world is made on
    /// SQLite after a `SKIPPED:` line (a failure when `FIELDSYNC_REQUIRE_ALL` is set).
    pub(crate) fn new(dir: &Path) -> StoreHome {
        let sqlite = || StoreHome::Sqlite(dir.join("state.db"));
        match StoreKind::from_env() {
            StoreKind::Sqlite => sqlite(),
            StoreKind::Postgres => match postgres_server() {
                Some(server) => {
                    static NEXT: AtomicUsize = AtomicUsize::new(0);
                    let schema = format!("world_{}", NEXT.fetch_add(1, Ordering::SeqCst));
                    let url = server.url(DATABASE);
                    let rest = url.strip_prefix("postgres://").expect("a postgres:// URL");
                    let state = format!("{rest}?sslmode=disable&schema={schema}");
                    let location = PostgresLocation::parse(&state, Path::new("")).expect("a state location");
                    StoreHome::Postgres { server, location }
                }
                None => {
                    skipped_once();
                    sqlite()
                }
            },
        }
    }

    /// Opens the store (making it the first time): another handle on the same store, as
    /// another process opens it — for PostgreSQL a connection of its own.
    ///
    /// # Errors
    ///
    /// When the store cannot be opened.
    pub(crate) fn open(&self) -> Result<TestStore, StoreError> {
        match self {
            StoreHome::Sqlite(path) => SqliteStore::open(path).map(TestStore::Sqlite),
            StoreHome::Postgres { location, .. } => location.open().map(TestStore::Postgres),
        }
    }

    /// The SQLite file, for a test of what only SQLite has.
    pub(crate) fn sqlite_path(&self) -> Option<&Path> {
        match self {
            StoreHome::Sqlite(path) => Some(path),
            StoreHome::Postgres { .. } => None,
        }
    }

    /// After a crash, what the next process finds once the crashed one is gone. On SQLite the
    /// crashed holder's lock file died with it, which lets the next run take its lease at once;
    /// PostgreSQL has no such lock, and a dead worker's lease is taken over once it expired
    /// (`lease_timeout`), so every lease still live is let run out here.
    pub(crate) fn after_crash(&self) {
        if let StoreHome::Postgres { .. } = self {
            self.execute(
                "UPDATE leases SET expires_at = clock_timestamp() WHERE expires_at > clock_timestamp()",
            );
        }
    }

    /// Runs one SQL statement on the store's tables directly, around the store; how many rows
    /// it changed.
    ///
    /// # Panics
    ///
    /// When the statement fails.
    pub(crate) fn execute(&self, sql: &str) -> u64 {
        match self {
            StoreHome::Sqlite(path) => {
                let connection = rusqlite::Connection::open(path).expect("the state store's file");
                let changed = connection.execute(sql, []).unwrap_or_else(|error| panic!("{sql}: {error}"));
                u64::try_from(changed).unwrap_or(u64::MAX)
            }
            StoreHome::Postgres { server, location } => block_on(async {
                let client = postgres_client(server, location).await;
                client.execute(sql, &[]).await.unwrap_or_else(|error| panic!("{sql}: {error}"))
            }),
        }
    }

    /// Every row of `table`, each as one line of text, sorted.
    ///
    /// # Panics
    ///
    /// When the table cannot be read.
    pub(crate) fn rows(&self, table: &str) -> Vec<String> {
        let mut rows: Vec<String> = match self {
            StoreHome::Sqlite(path) => {
                let connection = rusqlite::Connection::open(path).expect("the state store's file");
                let mut statement = connection.prepare(&format!("SELECT * FROM {table}")).expect(table);
                let columns = statement.column_count();
                let mut query = statement.query([]).expect(table);
                let mut rows = Vec::new();
                while let Some(row) = query.next().expect(table) {
                    let values: Vec<String> =
                        (0..columns).map(|index| format!("{:?}", row.get_ref(index).expect(table))).collect();
                    rows.push(values.join(", "));
                }
                rows
            }
            StoreHome::Postgres { server, location } => block_on(async {
                let client = postgres_client(server, location).await;
                let sql = format!("SELECT row::text FROM {} AS row", quote_ident(table));
                let rows = client.query(&sql, &[]).await.unwrap_or_else(|error| panic!("{sql}: {error}"));
                rows.iter().map(|row| row.get::<_, String>(0)).collect()
            }),
        };
        rows.sort();
        rows
    }
}

/// The PostgreSQL server of this test binary (`PostgresServer::shared`), or `None` when the
/// system has none.
fn postgres_server() -> Option<&'static PostgresServer> {
    PostgresServer::shared()
}

/// Says once per test (a thread's name) that it runs on SQLite for want of PostgreSQL.
fn skipped_once() {
    static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let first =
        SAID.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert_default().insert(test);
    if first {
        fieldsync_connector::testkit::skip(
            &format!("a PostgreSQL server ({STORE_VARIABLE}=postgres)"),
            "none could be started, so its worlds hold SQLite stores",
            "apt-get install --no-install-recommends postgresql",
        );
    }
}

/// A connection of its own to the world's schema, for statements around the store.
async fn postgres_client(server: &PostgresServer, location: &PostgresLocation) -> fieldsync_postgres::Client {
    let client =
        fieldsync_postgres::connect(&server.url(DATABASE)).await.expect("a connection to the test server");
    client
        .batch_execute(&format!("SET search_path TO {}", quote_ident(location.schema())))
        .await
        .expect("the world's schema");
    client
}
