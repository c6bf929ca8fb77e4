//! `SqliteConnector`: reads records from a table of an SQLite file by keyset paging, looks
//! them up by key, and applies writes in one transaction with a savepoint per write.
//!
//! Names are validated identifiers, always double-quoted; values are always bound
//! parameters. Calls are synchronous inside the async methods (SQLite is a local file).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use fieldsync_connector::{
    Capabilities, Connector, ConnectorError, ConnectorRecord, ConnectorSettings, FieldWrite, Lookup, Page,
    PageToken, Probe, ReadRequest, Write, WriteOutcome, WriteResults,
};
use fieldsync_model::RecordId;
use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior, params_from_iter,
};

use crate::config::{ModifiedFormat, SqliteConfig};

/// How long a statement waits for another connection's lock before giving up as busy.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many ids or key values one lookup statement binds (each may bind twice).
const LOOKUP_CHUNK: usize = 400;

/// How many prepared statements a session keeps.
const STATEMENT_CACHE: usize = 64;

/// The connector over one table of an SQLite file. The file is opened at first use and
/// the connection kept; the user's journal mode is left as it is.
#[derive(Debug)]
pub struct SqliteConnector {
    config: Arc<SqliteConfig>,
    busy_timeout: Duration,
    session: Option<Session>,
    /// The page after the last one a listing returned, being read meanwhile.
    prefetch: Option<Prefetch>,
}

/// A page read ahead, on a blocking thread that holds the session until it is done.
#[derive(Debug)]
struct Prefetch {
    request: ReadRequest,
    token: PageToken,
    task: tokio::task::JoinHandle<(Option<Session>, Result<Page, ConnectorError>)>,
}

/// What the blocking thread of a call hands back: the session, and the call's answer.
type Offloaded<T> = (Option<Session>, Result<T, ConnectorError>);

/// An open connection and the table's column names (lower-cased, as SQLite compares them).
#[derive(Debug)]
struct Session {
    connection: Connection,
    columns: HashSet<String>,
    /// Whether the table has rowids (it was not made `WITHOUT ROWID`).
    rowid: bool,
}

/// How a listing is ordered, and so what its page tokens hold.
enum Order<'a> {
    /// By the key column.
    Key,
    /// By the modified column, then `tiebreak` (quoted: `rowid` or the key column).
    Modified { modified: &'a str, tiebreak: String },
}

impl SqliteConnector {
    /// A connector for `config`, which is validated here; the file is opened at first use.
    ///
    /// # Errors
    ///
    /// `ConnectorError::Misconfigured` when `config` fails `SqliteConfig::check`.
    pub fn open(config: SqliteConfig) -> Result<Self, ConnectorError> {
        config.check().map_err(|problem| ConnectorError::Misconfigured {
            message: format!("sqlite connector for {}: {problem}", config.path.display()),
        })?;
        Ok(Self {
            config: Arc::new(config),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            session: None,
            prefetch: None,
        })
    }

    /// Sets how long a statement waits for another connection's lock (5 s unless set).
    pub fn with_busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self.session = None;
        self
    }

    /// The configuration the connector runs with.
    pub fn config(&self) -> &SqliteConfig {
        &self.config
    }

    /// The configured date formats of the table's date columns.
    pub fn date_formats(&self) -> &[String] {
        self.config.date_formats()
    }

    /// Runs `work` on the session (opened first when there is none) on the runtime's
    /// blocking threads: SQLite calls block, and off the runtime's own thread they can run
    /// while the engine does other work — reading the other side, closing the last batch.
    async fn offload<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut Session, &SqliteConfig) -> Result<T, ConnectorError> + Send + 'static,
    ) -> Result<T, ConnectorError> {
        // A page read ahead and not asked for is dropped; its thread gives the session back.
        if let Some(prefetch) = self.prefetch.take() {
            let (slot, _) = self.join(prefetch.task).await?;
            self.session = slot;
        }
        let task = self.spawn(work);
        let (slot, result) = self.join(task).await?;
        self.session = slot;
        result
    }

    /// Starts `work` on a blocking thread, which takes the session with it.
    fn spawn<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut Session, &SqliteConfig) -> Result<T, ConnectorError> + Send + 'static,
    ) -> tokio::task::JoinHandle<Offloaded<T>> {
        let config = Arc::clone(&self.config);
        let busy_timeout = self.busy_timeout;
        let mut slot = self.session.take();
        tokio::task::spawn_blocking(move || {
            let result = session(&mut slot, &config, busy_timeout).and_then(|session| work(session, &config));
            (slot, result)
        })
    }

    /// Waits for a blocking thread's answer. It borrows nothing of the connector while it
    /// waits: the connector holds a SQLite connection, which is `Send` but not `Sync`.
    fn join<T>(
        &self,
        task: tokio::task::JoinHandle<Offloaded<T>>,
    ) -> impl Future<Output = Result<Offloaded<T>, ConnectorError>> + use<T> {
        let config = Arc::clone(&self.config);
        async move {
            task.await.map_err(|error| ConnectorError::Unavailable {
                what: config.path.display().to_string(),
                message: format!("the SQLite call did not finish: {error}"),
                retry_after: None,
            })
        }
    }
}

impl Connector for SqliteConnector {
    fn capabilities(&self) -> Capabilities {
        Capabilities::table(self.config.modified.is_some())
    }

    async fn check(&mut self, paths: &[String]) -> Result<Probe, ConnectorError> {
        // A check looks afresh, so that a file replaced since the last call is seen.
        if let Some(prefetch) = self.prefetch.take() {
            // Its session is dropped with it: the check opens a new one.
            let _answer = self.join(prefetch.task).await?;
        }
        self.session = None;
        let paths = paths.to_vec();
        let capabilities = self.capabilities();
        self.offload(move |session, config| {
            session.require_columns(config, &paths)?;
            let sql = format!("SELECT count(*) FROM {}", quote(&config.table));
            let count: i64 = session
                .connection
                .query_row(&sql, [], |row| row.get(0))
                .map_err(|error| classify(config, error))?;
            Ok(Probe {
                kind: "sqlite",
                target: format!("{} (table {})", config.path.display(), config.table),
                records: u64::try_from(count).ok(),
                capabilities,
            })
        })
        .await
    }

    async fn read_page(
        &mut self,
        request: &ReadRequest,
        token: Option<&PageToken>,
    ) -> Result<Page, ConnectorError> {
        // The page asked for may have been read ahead while the last one was worked on.
        let page = match self.prefetch.take() {
            Some(prefetch) if prefetch.request == *request && Some(&prefetch.token) == token => {
                let (slot, page) = self.join(prefetch.task).await?;
                self.session = slot;
                page?
            }
            other => {
                self.prefetch = other;
                let request = request.clone();
                let token = token.cloned();
                self.offload(move |session, config| read_page(session, config, &request, token.as_ref()))
                    .await?
            }
        };
        // Read the next page while this one is worked on.
        if let Some(next) = &page.next {
            let (ahead, token) = (request.clone(), next.clone());
            let task = self.spawn(move |session, config| read_page(session, config, &ahead, Some(&token)));
            self.prefetch = Some(Prefetch { request: request.clone(), token: next.clone(), task });
        }
        Ok(page)
    }

    async fn lookup(
        &mut self,
        paths: &[String],
        lookup: &Lookup,
    ) -> Result<Vec<ConnectorRecord>, ConnectorError> {
        let paths = paths.to_vec();
        let lookup = lookup.clone();
        self.offload(move |session, config| look_up(session, config, &paths, &lookup)).await
    }

    async fn apply(&mut self, writes: &[Write]) -> Result<WriteResults, ConnectorError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let writes = writes.to_vec();
        self.offload(move |session, config| apply(session, config, &writes)).await
    }
}

/// One page of a listing (`Connector::read_page`).
fn read_page(
    session: &mut Session,
    config: &SqliteConfig,
    request: &ReadRequest,
    token: Option<&PageToken>,
) -> Result<Page, ConnectorError> {
    session.require_columns(config, &request.paths)?;
    let batch_size = config.batch_size();

    // A full read pages by key. An incremental one pages by the modification time, then the
    // rowid (or the key of a table without rowids): the order of an index on the modified
    // column, so that only the records changed since are visited, never the whole table.
    let incremental = config.modified.as_deref().zip(request.since_time());
    let order = match incremental {
        Some((modified, _)) => Order::Modified { modified, tiebreak: session.tiebreak(config) },
        None => Order::Key,
    };
    let mut sql = match &order {
        Order::Key => select_clause(config, &request.paths),
        Order::Modified { tiebreak, .. } => select_clause_with(config, &request.paths, Some(tiebreak)),
    };
    let mut params = Vec::new();
    sql.push_str(&format!(" WHERE {key} IS NOT NULL", key = quote(&config.key)));
    if let Some((modified, since)) = incremental {
        let (condition, value) = since_condition(modified, config.modified_format(), since);
        sql.push_str(&format!(" AND {condition}"));
        params.push(value);
    }
    if let Some(token) = token {
        match &order {
            Order::Key => {
                sql.push_str(&format!(" AND {} > ?", quote(&config.key)));
                params.push(parse_token(token)?);
            }
            Order::Modified { modified, tiebreak } => {
                let (after_modified, after_tiebreak) = parse_pair_token(token)?;
                sql.push_str(&format!(" AND ({}, {tiebreak}) > (?, ?)", quote(modified)));
                params.push(after_modified);
                params.push(after_tiebreak);
            }
        }
    }
    // One record more than a page tells whether another page follows.
    let order_by = match &order {
        Order::Key => quote(&config.key),
        Order::Modified { modified, tiebreak } => format!("{}, {tiebreak}", quote(modified)),
    };
    sql.push_str(&format!(" ORDER BY {order_by} LIMIT {}", batch_size.saturating_add(1)));

    let (mut records, token) =
        query_records(session, config, &sql, params, &request.paths, Some((&order, batch_size)))?;
    let next = if records.len() > batch_size {
        records.truncate(batch_size);
        token
    } else {
        None
    };
    Ok(Page::new(records, next))
}

/// Records by ids or link keys (`Connector::lookup`).
fn look_up(
    session: &mut Session,
    config: &SqliteConfig,
    paths: &[String],
    lookup: &Lookup,
) -> Result<Vec<ConnectorRecord>, ConnectorError> {
    session.require_columns(config, paths)?;
    let (column, wanted): (&str, Vec<&str>) = match lookup {
        Lookup::Ids(ids) => (&config.key, ids.iter().map(RecordId::as_str).collect()),
        Lookup::Key { path, values } => {
            session.require_columns(config, std::slice::from_ref(path))?;
            (path, values.iter().map(String::as_str).collect())
        }
    };
    // Each value once, so that no record is found in two chunks.
    let mut seen = HashSet::new();
    let wanted: Vec<&str> = wanted.into_iter().filter(|text| seen.insert(*text)).collect();
    let mut found = Vec::new();
    for chunk in wanted.chunks(LOOKUP_CHUNK) {
        let params: Vec<SqlValue> = chunk.iter().flat_map(|text| text_forms(text)).collect();
        let sql = format!(
            "{select} WHERE {key} IS NOT NULL AND {column} IN ({placeholders})",
            select = select_clause(config, paths),
            key = quote(&config.key),
            column = quote(column),
            placeholders = placeholders(params.len()),
        );
        found.extend(query_records(session, config, &sql, params, paths, None)?.0);
    }
    Ok(found)
}

/// Writes, each in its own savepoint of one transaction (`Connector::apply`).
fn apply(
    session: &mut Session,
    config: &SqliteConfig,
    writes: &[Write],
) -> Result<WriteResults, ConnectorError> {
    let paths: Vec<String> = writes
        .iter()
        .flat_map(|write| match write {
            Write::Update { fields, .. } | Write::Create { fields } => fields.as_slice(),
            Write::Delete { .. } => &[],
        })
        .map(|field| field.path.clone())
        .collect();
    // Columns that seem missing make the session read the table's columns again now,
    // outside the transaction; a write naming a column that is still missing then fails
    // on its own below, so the error is deliberately not returned here.
    let _ = session.require_columns(config, &paths);
    let columns = session.columns.clone();
    // IMMEDIATE takes the write lock now: a busy database fails the whole call before
    // anything is written, rather than one write in the middle.
    let transaction = session
        .connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|error| classify(config, error))?;
    let now = Timestamp::now();
    let mut results = Vec::with_capacity(writes.len());
    for write in writes {
        let result =
            in_savepoint(&transaction, config, || apply_one(&transaction, config, &columns, write, now));
        if transaction.is_autocommit() {
            // SQLite rolled the whole transaction back (a full disk, an I/O error), so
            // the writes reported as done so far are undone too.
            let cause =
                result.err().map_or_else(|| "the transaction ended".to_string(), |error| error.to_string());
            return Err(ConnectorError::Unavailable {
                what: config.path.display().to_string(),
                message: format!("SQLite rolled the transaction back: {cause}"),
                retry_after: None,
            });
        }
        results.push(result);
    }
    transaction.commit().map_err(|error| classify(config, error))?;
    Ok(results)
}

/// The open session, opening one first if there is none.
fn session<'a>(
    slot: &'a mut Option<Session>,
    config: &SqliteConfig,
    busy_timeout: Duration,
) -> Result<&'a mut Session, ConnectorError> {
    let session = match slot.take() {
        Some(session) => session,
        None => Session::connect(config, busy_timeout)?,
    };
    Ok(slot.insert(session))
}

impl Session {
    fn connect(config: &SqliteConfig, busy_timeout: Duration) -> Result<Self, ConnectorError> {
        let file = config.path.display();
        if !config.path.is_file() {
            return Err(ConnectorError::Misconfigured {
                message: format!(
                    "the SQLite file {file} does not exist (the sqlite connector never creates one)"
                ),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection =
            Connection::open_with_flags(&config.path, flags).map_err(|error| classify(config, error))?;
        connection.busy_timeout(busy_timeout).map_err(|error| classify(config, error))?;
        // Reads and writes are built from a few shapes of statement; keep them all prepared.
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let without_rowid: bool = connection
            .query_row("SELECT wr FROM pragma_table_list WHERE name = ?1", [&config.table], |row| row.get(0))
            .optional()
            .map_err(|error| classify(config, error))?
            .unwrap_or(false);
        let mut session = Self { connection, columns: HashSet::new(), rowid: !without_rowid };
        session.load_columns(config)?;
        let mut required = vec![config.key.clone()];
        required.extend(config.modified.iter().cloned());
        required.extend(config.deleted.iter().cloned());
        session.require_columns(config, &required)?;
        Ok(session)
    }

    fn load_columns(&mut self, config: &SqliteConfig) -> Result<(), ConnectorError> {
        let mut statement = self
            .connection
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .map_err(|error| classify(config, error))?;
        let names = statement
            .query_map([&config.table], |row| row.get::<_, String>(0))
            .and_then(|names| names.collect::<Result<HashSet<String>, _>>())
            .map_err(|error| classify(config, error))?;
        if names.is_empty() {
            return Err(ConnectorError::Misconfigured {
                message: format!("table `{}` does not exist in {}", config.table, config.path.display()),
            });
        }
        self.columns = names.into_iter().map(|name| name.to_ascii_lowercase()).collect();
        Ok(())
    }

    /// What orders records with equal modification times: the rowid, or the key column of a
    /// table without rowids.
    fn tiebreak(&self, config: &SqliteConfig) -> String {
        if self.rowid { "rowid".to_string() } else { quote(&config.key) }
    }

    /// Checks that every path is a column of the table, reading the table's columns again
    /// once when one seems missing (the schema may have changed).
    fn require_columns(&mut self, config: &SqliteConfig, paths: &[String]) -> Result<(), ConnectorError> {
        for path in paths {
            SqliteConfig::validate_path(path).map_err(|problem| ConnectorError::Misconfigured {
                message: format!("sqlite connector for {}: {problem}", config.path.display()),
            })?;
        }
        if paths.iter().all(|path| self.columns.contains(&path.to_ascii_lowercase())) {
            return Ok(());
        }
        self.load_columns(config)?;
        match paths.iter().find(|path| !self.columns.contains(&path.to_ascii_lowercase())) {
            None => Ok(()),
            Some(path) => Err(missing_column(config, path)),
        }
    }
}

fn missing_column(config: &SqliteConfig, column: &str) -> ConnectorError {
    ConnectorError::Misconfigured {
        message: format!(
            "column `{column}` does not exist in table `{}` of {}",
            config.table,
            config.path.display()
        ),
    }
}

fn quote(identifier: &str) -> String {
    // Validated identifiers hold no double quote; doubling keeps this safe regardless.
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

/// `(CASE …)` yielding 1 for a soft-deleted record: anything but NULL, 0 or ''.
fn deleted_expression(column: &str) -> String {
    let column = quote(column);
    format!("(CASE WHEN {column} IS NULL OR {column} IN (0, '0', '') THEN 0 ELSE 1 END)")
}

/// `SELECT key, deleted flag, modified, paths… FROM table`.
fn select_clause(config: &SqliteConfig, paths: &[String]) -> String {
    select_clause_with(config, paths, None)
}

/// `select_clause` with one more (already quoted) column after the paths.
fn select_clause_with(config: &SqliteConfig, paths: &[String], extra: Option<&str>) -> String {
    let deleted = config.deleted.as_deref().map_or_else(|| "0".to_string(), deleted_expression);
    let modified = config.modified.as_deref().map_or_else(|| "NULL".to_string(), quote);
    let mut sql = format!("SELECT {}, {deleted}, {modified}", quote(&config.key));
    for path in paths.iter().map(|path| quote(path)).chain(extra.map(str::to_string)) {
        let _ = write!(sql, ", {path}");
    }
    let _ = write!(sql, " FROM {}", quote(&config.table));
    sql
}

/// The forms in which a text may be stored: itself, and the integer it spells, so that a
/// lookup matches INTEGER columns, TEXT columns and columns without a type alike.
fn text_forms(text: &str) -> Vec<SqlValue> {
    let mut forms = vec![SqlValue::Text(text.to_string())];
    if let Ok(integer) = text.parse::<i64>()
        && integer.to_string() == text
    {
        forms.push(SqlValue::Integer(integer));
    }
    forms
}

/// `"key" IN (?, ?)` over the forms of `id`, with the bound values.
fn id_condition(config: &SqliteConfig, id: &RecordId) -> (String, Vec<SqlValue>) {
    let forms = text_forms(id.as_str());
    (format!("{} IN ({})", quote(&config.key), placeholders(forms.len())), forms)
}

/// A page token holds the last key with its SQLite type, so that the next page continues
/// after it in SQLite's own order (integers before text) whatever the column's type.
fn token_for(key: ValueRef<'_>) -> PageToken {
    PageToken(match key {
        ValueRef::Integer(integer) => format!("i:{integer}"),
        ValueRef::Real(real) => format!("r:{real}"),
        ValueRef::Text(text) => format!("t:{}", String::from_utf8_lossy(text)),
        ValueRef::Null | ValueRef::Blob(_) => String::new(),
    })
}

/// The token of an incremental listing: the last record's modified value and tiebreak.
fn pair_token(modified: ValueRef<'_>, tiebreak: ValueRef<'_>) -> PageToken {
    let PageToken(modified) = token_for(modified);
    let PageToken(tiebreak) = token_for(tiebreak);
    PageToken(serde_json::json!([modified, tiebreak]).to_string())
}

fn parse_pair_token(token: &PageToken) -> Result<(SqlValue, SqlValue), ConnectorError> {
    let not_ours = || ConnectorError::Misconfigured {
        message: "a page token that the sqlite connector did not make".into(),
    };
    let (modified, tiebreak): (String, String) = serde_json::from_str(&token.0).map_err(|_| not_ours())?;
    Ok((parse_token(&PageToken(modified))?, parse_token(&PageToken(tiebreak))?))
}

fn parse_token(token: &PageToken) -> Result<SqlValue, ConnectorError> {
    let parsed = match token.0.split_once(':') {
        Some(("i", integer)) => integer.parse().ok().map(SqlValue::Integer),
        Some(("r", real)) => real.parse().ok().map(SqlValue::Real),
        Some(("t", text)) => Some(SqlValue::Text(text.to_string())),
        _ => None,
    };
    parsed.ok_or_else(|| ConnectorError::Misconfigured {
        message: "a page token that the sqlite connector did not make".into(),
    })
}

/// The condition on `modified` for records modified at or after `since`, and its value.
fn since_condition(column: &str, format: ModifiedFormat, since: Timestamp) -> (String, SqlValue) {
    let column = quote(column);
    let millisecond = since.as_millisecond();
    match format {
        // Text comparison, so that an index on the column serves it. The instant is cut to
        // whole milliseconds (never later than `since`) and written without a fraction when
        // it has none, since "…:05" sorts before "…:05.000" but "…:05.000" not before "…:05".
        ModifiedFormat::Sqlite => (format!("{column} >= ?"), SqlValue::Text(sqlite_text(since, false))),
        // SQLite's own parse, which keeps milliseconds as this division does, exactly.
        ModifiedFormat::Rfc3339 => {
            (format!("unixepoch({column}, 'subsec') >= ?"), SqlValue::Real(millisecond as f64 / 1000.0))
        }
        ModifiedFormat::Unix => (format!("{column} >= ?"), SqlValue::Integer(millisecond.div_euclid(1000))),
        ModifiedFormat::UnixMs => (format!("{column} >= ?"), SqlValue::Integer(millisecond)),
    }
}

/// `YYYY-MM-DD HH:MM:SS[.SSS]` in UTC, cut to milliseconds; the fraction is written always
/// when `always_fraction`, else only when it is not zero.
fn sqlite_text(instant: Timestamp, always_fraction: bool) -> String {
    let time = TimeZone::UTC.to_datetime(instant);
    let mut text = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        time.year(),
        time.month(),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    );
    let millisecond = time.subsec_nanosecond() / 1_000_000;
    if always_fraction || millisecond != 0 {
        let _ = write!(text, ".{millisecond:03}");
    }
    text
}

/// The value a write stores in the `modified` column for `now`.
fn modified_value(format: ModifiedFormat, now: Timestamp) -> SqlValue {
    match format {
        ModifiedFormat::Sqlite => SqlValue::Text(sqlite_text(now, true)),
        ModifiedFormat::Rfc3339 => {
            SqlValue::Text(Timestamp::from_millisecond(now.as_millisecond()).unwrap_or(now).to_string())
        }
        ModifiedFormat::Unix => SqlValue::Integer(now.as_millisecond().div_euclid(1000)),
        ModifiedFormat::UnixMs => SqlValue::Integer(now.as_millisecond()),
    }
}

/// The value a delete stores in the soft-delete column: the time as text in the modified
/// column's style, or 1 where that style is a number.
fn deleted_value(format: ModifiedFormat, now: Timestamp) -> SqlValue {
    match format {
        ModifiedFormat::Sqlite | ModifiedFormat::Rfc3339 => modified_value(format, now),
        ModifiedFormat::Unix | ModifiedFormat::UnixMs => SqlValue::Integer(1),
    }
}

/// Reads a stored modification time, `None` when it is not of the column's format.
fn parse_modified(format: ModifiedFormat, value: ValueRef<'_>) -> Option<Timestamp> {
    let text = || match value {
        ValueRef::Text(bytes) => std::str::from_utf8(bytes).ok(),
        _ => None,
    };
    match format {
        ModifiedFormat::Sqlite => {
            let text = text()?;
            // Text with an offset ("…Z", "…+02:00") is an instant already; the civil parse
            // would ignore the offset. Without one, the text is UTC, as SQLite writes it.
            Timestamp::from_str(text).ok().or_else(|| {
                let time = DateTime::from_str(text).ok()?;
                time.to_zoned(TimeZone::UTC).ok().map(|zoned| zoned.timestamp())
            })
        }
        ModifiedFormat::Rfc3339 => Timestamp::from_str(text()?).ok(),
        ModifiedFormat::Unix | ModifiedFormat::UnixMs => {
            let number = match value {
                ValueRef::Integer(integer) => integer,
                ValueRef::Text(_) => text()?.trim().parse().ok()?,
                _ => return None,
            };
            if format == ModifiedFormat::Unix {
                Timestamp::from_second(number).ok()
            } else {
                Timestamp::from_millisecond(number).ok()
            }
        }
    }
}

/// A JSON value as the SQLite value bound for it.
fn to_sql(value: &serde_json::Value) -> SqlValue {
    match value {
        serde_json::Value::Null => SqlValue::Null,
        serde_json::Value::Bool(flag) => SqlValue::Integer(i64::from(*flag)),
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(integer) => SqlValue::Integer(integer),
            // Integers beyond i64 and fractions are stored as REAL, as SQLite would.
            None => SqlValue::Real(number.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(text) => SqlValue::Text(text.clone()),
        array_or_object => SqlValue::Text(array_or_object.to_string()),
    }
}

/// Runs a SELECT built by `select_clause` and reads each SQL row into a record; with
/// `token_at`, also the page token after the row of that number (counted from 1), in that
/// order — made for that row alone, as a page needs no other.
fn query_records(
    session: &Session,
    config: &SqliteConfig,
    sql: &str,
    params: Vec<SqlValue>,
    paths: &[String],
    token_at: Option<(&Order<'_>, usize)>,
) -> Result<(Vec<ConnectorRecord>, Option<PageToken>), ConnectorError> {
    let mut statement = session.connection.prepare_cached(sql).map_err(|error| classify(config, error))?;
    let mut rows = statement.query(params_from_iter(params)).map_err(|error| classify(config, error))?;
    let mut records = Vec::new();
    let mut token = None;
    while let Some(row) = rows.next().map_err(|error| classify(config, error))? {
        let (record, key) = read_record(config, row, paths)?;
        records.push(record);
        match token_at {
            Some((Order::Key, at)) if at == records.len() => token = Some(token_for(key)),
            Some((Order::Modified { .. }, at)) if at == records.len() => {
                let value = |index: usize| row.get_ref(index).map_err(|error| classify(config, error));
                token = Some(pair_token(value(2)?, value(3 + paths.len())?));
            }
            _ => {}
        }
    }
    Ok((records, token))
}

/// Reads one SQL row into a record, and hands back its key column's value.
fn read_record<'row>(
    config: &SqliteConfig,
    row: &'row Row<'_>,
    paths: &[String],
) -> Result<(ConnectorRecord, ValueRef<'row>), ConnectorError> {
    let cell = |index: usize| row.get_ref(index).map_err(|error| classify(config, error));
    let key = cell(0)?;
    let id = match key {
        ValueRef::Integer(integer) => integer.to_string(),
        ValueRef::Real(real) => real.to_string(),
        ValueRef::Text(text) => String::from_utf8(text.to_vec()).map_err(|_| {
            malformed(config, format!("a record's key column `{}` holds text that is not UTF-8", config.key))
        })?,
        ValueRef::Null | ValueRef::Blob(_) => {
            return Err(malformed(config, format!("a record's key column `{}` holds a blob", config.key)));
        }
    };
    let deleted = matches!(cell(1)?, ValueRef::Integer(flag) if flag != 0);
    let modified = match (&config.modified, cell(2)?) {
        (Some(_), ValueRef::Null) | (None, _) => None,
        (Some(column), value) => Some(parse_modified(config.modified_format(), value).ok_or_else(|| {
            malformed(
                config,
                format!("record {id}: column `{column}` does not hold a {:?} time", config.modified_format()),
            )
        })?),
    };
    let mut values = Vec::with_capacity(paths.len());
    for (offset, path) in paths.iter().enumerate() {
        let value = match cell(3 + offset)? {
            ValueRef::Null => serde_json::Value::Null,
            ValueRef::Integer(integer) => serde_json::Value::from(integer),
            ValueRef::Real(real) => {
                serde_json::Number::from_f64(real).map(serde_json::Value::Number).ok_or_else(|| {
                    malformed(config, format!("record {id}: column `{path}` holds a number JSON cannot hold"))
                })?
            }
            ValueRef::Text(bytes) => {
                serde_json::Value::String(String::from_utf8(bytes.to_vec()).map_err(|_| {
                    malformed(config, format!("record {id}: column `{path}` holds text that is not UTF-8"))
                })?)
            }
            ValueRef::Blob(_) => {
                return Err(malformed(config, format!("record {id}: column `{path}` holds a blob")));
            }
        };
        values.push(value);
    }
    let record = ConnectorRecord { id: RecordId::new(id), values, modified, deleted };
    Ok((record, key))
}

fn malformed(config: &SqliteConfig, message: String) -> ConnectorError {
    ConnectorError::Malformed { what: format!("{} (table {})", config.path.display(), config.table), message }
}

/// Runs `body` (one write) inside its own savepoint, which is released on success and rolled
/// back on failure, so one write's failure leaves the others of the transaction standing.
fn in_savepoint<T>(
    connection: &Connection,
    config: &SqliteConfig,
    body: impl FnOnce() -> Result<T, ConnectorError>,
) -> Result<T, ConnectorError> {
    let run = |sql: &str| {
        connection
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map_err(|error| classify(config, error))
    };
    run("SAVEPOINT fieldsync_write")?;
    let result = body();
    if connection.is_autocommit() {
        // SQLite ended the transaction itself; there is no savepoint left to end.
        return result;
    }
    if result.is_err() {
        run("ROLLBACK TO fieldsync_write")?;
    }
    run("RELEASE fieldsync_write")?;
    result
}

fn apply_one(
    connection: &Connection,
    config: &SqliteConfig,
    columns: &HashSet<String>,
    write: &Write,
    now: Timestamp,
) -> Result<WriteOutcome, ConnectorError> {
    let fields = match write {
        Write::Update { fields, .. } | Write::Create { fields } => fields.as_slice(),
        Write::Delete { .. } => &[],
    };
    for field in fields {
        SqliteConfig::validate_path(&field.path).map_err(|problem| ConnectorError::Misconfigured {
            message: format!("sqlite connector for {}: {problem}", config.path.display()),
        })?;
        if !columns.contains(&field.path.to_ascii_lowercase()) {
            return Err(missing_column(config, &field.path));
        }
    }
    let format = config.modified_format();
    // The modified column is stamped unless the write sets it itself.
    let stamp = config
        .modified
        .as_deref()
        .filter(|modified| !fields.iter().any(|field| field.path.eq_ignore_ascii_case(modified)));
    let execute = |sql: &str, params: Vec<SqlValue>| {
        connection
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute(params_from_iter(params)))
            .map_err(|error| classify(config, error))
    };
    match write {
        Write::Update { id, fields } => {
            update(connection, config, id, fields, stamp.map(|column| (column, modified_value(format, now))))
        }
        Write::Create { fields } => {
            create(connection, config, fields, stamp.map(|column| (column, modified_value(format, now))))
        }
        Write::Delete { id } => {
            let (id_sql, mut params) = id_condition(config, id);
            let changed = match &config.deleted {
                Some(deleted) => {
                    let mut sets = vec![(deleted.as_str(), deleted_value(format, now))];
                    sets.extend(stamp.map(|column| (column, modified_value(format, now))));
                    let assignments: Vec<String> =
                        sets.iter().map(|(column, _)| format!("{} = ?", quote(column))).collect();
                    let mut all: Vec<SqlValue> = sets.into_iter().map(|(_, value)| value).collect();
                    all.append(&mut params);
                    let sql = format!(
                        "UPDATE {} SET {} WHERE {id_sql} AND {} = 0",
                        quote(&config.table),
                        assignments.join(", "),
                        deleted_expression(deleted)
                    );
                    execute(&sql, all)?
                }
                None => execute(&format!("DELETE FROM {} WHERE {id_sql}", quote(&config.table)), params)?,
            };
            match changed {
                0 => Err(ConnectorError::NotFound { id: id.clone() }),
                1 => Ok(WriteOutcome { id: id.clone() }),
                many => Err(not_unique(config, many)),
            }
        }
    }
}

fn not_unique(config: &SqliteConfig, count: usize) -> ConnectorError {
    ConnectorError::Rejected {
        message: format!(
            "{count} records of table `{}` share the key; column `{}` must be unique",
            config.table, config.key
        ),
    }
}

fn update(
    connection: &Connection,
    config: &SqliteConfig,
    id: &RecordId,
    fields: &[FieldWrite],
    stamp: Option<(&str, SqlValue)>,
) -> Result<WriteOutcome, ConnectorError> {
    let (id_sql, id_params) = id_condition(config, id);
    let live = config
        .deleted
        .as_deref()
        .map_or_else(String::new, |deleted| format!(" AND {} = 0", deleted_expression(deleted)));
    if fields.is_empty() {
        let sql = format!("SELECT count(*) FROM {} WHERE {id_sql}{live}", quote(&config.table));
        let count: i64 = connection
            .query_row(&sql, params_from_iter(id_params), |row| row.get(0))
            .map_err(|error| classify(config, error))?;
        return if count == 0 {
            Err(ConnectorError::NotFound { id: id.clone() })
        } else {
            Ok(WriteOutcome { id: id.clone() })
        };
    }
    let mut assignments = Vec::new();
    let mut params = Vec::new();
    for field in fields {
        assignments.push(format!("{} = ?", quote(&field.path)));
        params.push(to_sql(&field.value));
    }
    if let Some((column, value)) = stamp {
        assignments.push(format!("{} = ?", quote(column)));
        params.push(value);
    }
    params.extend(id_params.iter().cloned());
    let mut conditions = String::new();
    for field in fields {
        if let Some(expected) = &field.expected {
            let _ = write!(conditions, " AND {} IS ?", quote(&field.path));
            params.push(to_sql(expected));
        }
    }
    let sql = format!(
        "UPDATE {} SET {} WHERE {id_sql}{live}{conditions}",
        quote(&config.table),
        assignments.join(", ")
    );
    let changed = connection
        .prepare_cached(&sql)
        .and_then(|mut statement| statement.execute(params_from_iter(params)))
        .map_err(|error| classify_write(config, error))?;
    match changed {
        1 => Ok(WriteOutcome { id: id.clone() }),
        0 => {
            // Nothing changed: either there is no such (live) record, or it no longer holds
            // the expected values.
            let sql = format!("SELECT count(*) FROM {} WHERE {id_sql}{live}", quote(&config.table));
            let count: i64 = connection
                .query_row(&sql, params_from_iter(id_params), |row| row.get(0))
                .map_err(|error| classify(config, error))?;
            if count == 0 {
                Err(ConnectorError::NotFound { id: id.clone() })
            } else {
                Err(ConnectorError::TargetMoved { id: id.clone() })
            }
        }
        many => Err(not_unique(config, many)),
    }
}

fn create(
    connection: &Connection,
    config: &SqliteConfig,
    fields: &[FieldWrite],
    stamp: Option<(&str, SqlValue)>,
) -> Result<WriteOutcome, ConnectorError> {
    if fields.is_empty() {
        return Err(ConnectorError::Rejected { message: "a new record needs at least one value".into() });
    }
    let mut columns: Vec<String> = fields.iter().map(|field| quote(&field.path)).collect();
    let mut params: Vec<SqlValue> = fields.iter().map(|field| to_sql(&field.value)).collect();
    if let Some((column, value)) = stamp {
        columns.push(quote(column));
        params.push(value);
    }
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({}) RETURNING {}",
        quote(&config.table),
        columns.join(", "),
        placeholders(params.len()),
        quote(&config.key)
    );
    let key = connection.prepare_cached(&sql).and_then(|mut statement| {
        statement.query_row(params_from_iter(params), |row| row.get::<_, SqlValue>(0))
    });
    match key {
        Ok(SqlValue::Integer(integer)) => Ok(WriteOutcome { id: RecordId::new(integer.to_string()) }),
        Ok(SqlValue::Real(real)) => Ok(WriteOutcome { id: RecordId::new(real.to_string()) }),
        Ok(SqlValue::Text(text)) => Ok(WriteOutcome { id: RecordId::new(text) }),
        // The savepoint is rolled back, so the record without an id is not kept.
        Ok(SqlValue::Null | SqlValue::Blob(_)) => Err(ConnectorError::Rejected {
            message: format!("a new record needs a text or integer value in key column `{}`", config.key),
        }),
        Err(error) if is_unique_violation(&error) => {
            // AlreadyExists only when the key itself is taken; another UNIQUE column's
            // violation is the system refusing the values.
            let key_field = fields.iter().find(|field| field.path.eq_ignore_ascii_case(&config.key));
            if let Some(field) = key_field {
                let id = RecordId::new(match &field.value {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                });
                let (id_sql, id_params) = id_condition(config, &id);
                let sql = format!("SELECT count(*) FROM {} WHERE {id_sql}", quote(&config.table));
                let count: i64 = connection
                    .query_row(&sql, params_from_iter(id_params), |row| row.get(0))
                    .map_err(|error| classify(config, error))?;
                if count > 0 {
                    return Err(ConnectorError::AlreadyExists { id });
                }
            }
            Err(classify_write(config, error))
        }
        Err(error) => Err(classify_write(config, error)),
    }
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_extended_error_code(),
        Some(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    )
}

/// Classifies an error of a statement that writes values: the system refusing them
/// (constraints, type mismatches, sizes) is `Rejected`; the rest as `classify`.
fn classify_write(config: &SqliteConfig, error: rusqlite::Error) -> ConnectorError {
    match error.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig) => {
            ConnectorError::Rejected { message: sqlite_message(&error) }
        }
        _ => classify(config, error),
    }
}

/// Classifies an SQLite error by its code, never by its text.
fn classify(config: &SqliteConfig, error: rusqlite::Error) -> ConnectorError {
    let file = config.path.display();
    let message = sqlite_message(&error);
    let unavailable =
        |message: String| ConnectorError::Unavailable { what: file.to_string(), message, retry_after: None };
    let Some(code) = error.sqlite_error_code() else {
        // rusqlite's own errors are about reading what SQLite returned.
        return malformed(config, message);
    };
    match code {
        ErrorCode::DatabaseBusy
        | ErrorCode::DatabaseLocked
        | ErrorCode::SystemIoFailure
        | ErrorCode::DiskFull
        | ErrorCode::OutOfMemory
        | ErrorCode::SchemaChanged
        | ErrorCode::OperationInterrupted
        | ErrorCode::FileLockingProtocolFailed
        | ErrorCode::CannotOpen => unavailable(message),
        ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig => {
            ConnectorError::Rejected { message }
        }
        ErrorCode::DatabaseCorrupt => malformed(config, message),
        ErrorCode::NotADatabase
        | ErrorCode::ReadOnly
        | ErrorCode::PermissionDenied
        | ErrorCode::AuthorizationForStatementDenied
        | ErrorCode::Unknown => ConnectorError::Misconfigured {
            // SQLITE_ERROR is a statement SQLite cannot run: "no such table: …", "no such
            // column: …"; its message names the table or column.
            message: format!("{message} (table `{}` in {file})", config.table),
        },
        _ => unavailable(message),
    }
}

/// SQLite's own message, which names constraints, tables and columns but holds no values.
fn sqlite_message(error: &rusqlite::Error) -> String {
    match error {
        rusqlite::Error::SqliteFailure(_, Some(message)) => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_text_and_parse() {
        let instant = Timestamp::from_millisecond(1_704_067_201_500).expect("in range");
        assert_eq!(sqlite_text(instant, false), "2024-01-01 00:00:01.500");
        let whole = Timestamp::from_second(1_704_067_201).expect("in range");
        assert_eq!(sqlite_text(whole, false), "2024-01-01 00:00:01");
        assert_eq!(sqlite_text(whole, true), "2024-01-01 00:00:01.000");
        for text in [
            "2024-01-01 00:00:01",
            "2024-01-01 00:00:01.000",
            "2024-01-01T00:00:01Z",
            "2024-01-01 02:00:01+02:00",
        ] {
            assert_eq!(
                parse_modified(ModifiedFormat::Sqlite, ValueRef::Text(text.as_bytes())),
                Some(whole),
                "{text}"
            );
        }
        assert_eq!(parse_modified(ModifiedFormat::Sqlite, ValueRef::Text(b"yesterday")), None);
        assert_eq!(
            parse_modified(ModifiedFormat::Rfc3339, ValueRef::Text(b"2024-01-01T02:00:01+02:00")),
            Some(whole)
        );
        assert_eq!(parse_modified(ModifiedFormat::Unix, ValueRef::Integer(1_704_067_201)), Some(whole));
        assert_eq!(parse_modified(ModifiedFormat::UnixMs, ValueRef::Integer(1_704_067_201_000)), Some(whole));
        assert_eq!(parse_modified(ModifiedFormat::Unix, ValueRef::Real(1.5)), None);
    }

    #[test]
    fn tokens_round_trip() {
        for key in [SqlValue::Integer(-7), SqlValue::Text("m:0001".into()), SqlValue::Real(1.25)] {
            assert_eq!(parse_token(&token_for((&key).into())).expect("a token of ours"), key);
        }
        assert!(parse_token(&PageToken("x".into())).is_err());
    }

    #[test]
    fn values_to_sql() {
        assert_eq!(to_sql(&serde_json::json!(true)), SqlValue::Integer(1));
        assert_eq!(to_sql(&serde_json::json!(3)), SqlValue::Integer(3));
        assert_eq!(to_sql(&serde_json::json!(2.5)), SqlValue::Real(2.5));
        assert_eq!(to_sql(&serde_json::json!(["a"])), SqlValue::Text("[\"a\"]".into()));
        assert_eq!(text_forms("42"), vec![SqlValue::Text("42".into()), SqlValue::Integer(42)]);
        assert_eq!(text_forms("042"), vec![SqlValue::Text("042".into())]);
    }
}
