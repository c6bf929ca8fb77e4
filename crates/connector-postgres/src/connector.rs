//! `PostgresConnector`: reads records from a table (or a view) of a PostgreSQL database by
//! keyset paging, looks them up by key, and applies writes in one transaction with a savepoint
//! per write, creates in multi-row inserts.
//!
//! Column types come from the catalogue when the connection is made; names are validated
//! identifiers, always quoted; values are always bound parameters (`values::TextParam`).

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};

use fieldsync_connector::{
    Capabilities, Connector, ConnectorError, ConnectorRecord, FieldWrite, Lookup, Page, PageToken, Probe,
    ReadRequest, Write, WriteOutcome, WriteResults,
};
use fieldsync_model::RecordId;
use fieldsync_postgres::tokio_postgres::types::ToSql;
use fieldsync_postgres::tokio_postgres::{Row, Statement};
use fieldsync_postgres::{Client, ConnectError, Error, SqlState, quote_ident};
use jiff::Timestamp;
use serde_json::Value as Json;

use crate::config::PostgresConfig;
use crate::values::{
    ColumnKind, Decode, TextParam, instant_in_utc, read_expression, same_as_expected, text_for,
};

/// How many ids or key values one lookup statement binds (as one array).
const LOOKUP_CHUNK: usize = 5_000;

/// How many prepared statements a session keeps; reads and writes are built from a few
/// shapes of statement, so this holds them all.
const STATEMENT_CACHE: usize = 128;

/// How many parameters one multi-row insert binds at most (PostgreSQL allows 65,535).
const MAX_INSERT_PARAMETERS: usize = 30_000;

/// How many records one multi-row insert makes at most.
const MAX_INSERT_RECORDS: usize = 1_000;

/// The alias of the relation a listing reads, through which its columns are named.
const LISTED: &str = "listed";

/// The savepoint each write runs inside.
const SAVEPOINT: &str = "fieldsync_write";

/// A bound parameter of a statement.
type Param = Box<dyn ToSql + Sync + Send>;

/// The connector over one table of a PostgreSQL database (read, optionally, through a view).
/// It connects at first use and keeps the connection; a connection that fails is dropped and
/// made again by the next call.
pub struct PostgresConnector {
    config: PostgresConfig,
    session: Option<Session>,
}

impl fmt::Debug for PostgresConnector {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PostgresConnector")
            .field("config", &self.config)
            .field("connected", &self.session.is_some())
            .finish()
    }
}

/// An open connection, the columns of the relation read and of the table written, and the
/// statements prepared on it.
struct Session {
    client: Client,
    read: Relation,
    write: Relation,
    statements: HashMap<String, Statement>,
}

/// Which relation a statement works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// The relation listings and lookups read: the view, or the table without one.
    Read,
    /// The table writes go to.
    Write,
}

/// A table or view and its columns' kinds, by name.
#[derive(Clone, Debug)]
struct Relation {
    /// The relation's name, without its schema.
    name: String,
    columns: HashMap<String, Column>,
}

/// One column as the catalogue describes it.
#[derive(Clone, Debug)]
struct Column {
    kind: ColumnKind,
    /// Its type as PostgreSQL spells it (`character varying(80)`), for messages.
    type_name: String,
}

/// A write that failed, before its savepoint is rolled back.
enum Failure {
    /// PostgreSQL refused a statement; classified once the savepoint is rolled back.
    Database(Error),
    /// The connector's own verdict (the record is missing, moved or not unique).
    Refused(ConnectorError),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Database(error)
    }
}

/// Where a listing's next page starts.
#[derive(Debug, PartialEq, Eq)]
enum Token {
    /// After this key (its text), for a listing by key.
    Key(String),
    /// After this modification time (microseconds since the epoch) and key, for an
    /// incremental listing.
    Modified(i64, String),
}

impl PostgresConnector {
    /// A connector for `config`, which is validated here; the database is connected at first
    /// use.
    ///
    /// # Errors
    ///
    /// `ConnectorError::Misconfigured` when `config` fails `PostgresConfig::check`.
    pub fn open(config: PostgresConfig) -> Result<Self, ConnectorError> {
        use fieldsync_connector::ConnectorSettings as _;
        config.check().map_err(|problem| ConnectorError::Misconfigured {
            message: format!("postgres connector for {}: {problem}", config.url),
        })?;
        Ok(Self { config, session: None })
    }

    /// The configuration the connector runs with.
    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    /// The `NOTIFY` channel the database announces changes on, if configured.
    pub fn notify(&self) -> Option<&str> {
        self.config.notify()
    }

    /// The open session and the configuration, connecting first when there is no session or
    /// its connection has closed.
    async fn session(&mut self) -> Result<(&mut Session, &PostgresConfig), ConnectorError> {
        if self.session.as_ref().is_some_and(|session| session.client.is_closed()) {
            self.session = None;
        }
        let session = match self.session.take() {
            Some(session) => session,
            None => Session::connect(&self.config).await?,
        };
        Ok((self.session.insert(session), &self.config))
    }

    /// Runs `work` on the session (connecting first when there is none), and forgets the
    /// session after an error that may have broken it, so that the next call connects afresh.
    async fn with_session<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut Session, &PostgresConfig) -> Result<T, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        let result = match self.session().await {
            Ok((session, config)) => work(session, config).await,
            Err(error) => Err(error),
        };
        if result.as_ref().is_err_and(ConnectorError::is_retryable) {
            self.session = None;
        }
        result
    }
}

impl Connector for PostgresConnector {
    fn capabilities(&self) -> Capabilities {
        Capabilities::table(self.config.modified.is_some())
    }

    async fn check(&mut self, paths: &[String]) -> Result<Probe, ConnectorError> {
        // A check looks afresh, so that a table changed since the last call is seen.
        self.session = None;
        let capabilities = self.capabilities();
        self.with_session(async |session, config| check(session, config, paths, capabilities).await).await
    }

    async fn read_page(
        &mut self,
        request: &ReadRequest,
        token: Option<&PageToken>,
    ) -> Result<Page, ConnectorError> {
        self.with_session(async |session, config| read_page(session, config, request, token).await).await
    }

    async fn lookup(
        &mut self,
        paths: &[String],
        lookup: &Lookup,
    ) -> Result<Vec<ConnectorRecord>, ConnectorError> {
        self.with_session(async |session, config| look_up(session, config, paths, lookup).await).await
    }

    async fn apply(&mut self, writes: &[Write]) -> Result<WriteResults, ConnectorError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        self.with_session(async |session, config| apply(session, config, writes).await).await
    }
}

/// What `Connector::check` reports: the configured columns and `paths` exist, the user may
/// read the relation and write the table, and how many records it holds.
async fn check(
    session: &mut Session,
    config: &PostgresConfig,
    paths: &[String],
    capabilities: Capabilities,
) -> Result<Probe, ConnectorError> {
    session.require_columns(config, Side::Read, paths).await?;
    let read = qualified(config, &session.read.name);
    let table = qualified(config, &config.table);
    let sql = "SELECT has_any_column_privilege($1::text, 'SELECT'), \
               has_any_column_privilege($2::text, 'INSERT'), \
               has_any_column_privilege($2::text, 'UPDATE'), \
               has_table_privilege($2::text, 'DELETE')";
    let params: Vec<Param> = vec![Box::new(read.clone()), Box::new(table)];
    let rows = session.query(sql, &params).await.map_err(|error| classify(config, error))?;
    let row = rows.first().ok_or_else(|| malformed(config, "no answer about privileges".into()))?;
    let mut missing = Vec::new();
    for (index, (privilege, on)) in [
        ("SELECT", config.read_from()),
        ("INSERT", config.table.as_str()),
        ("UPDATE", config.table.as_str()),
        ("DELETE", config.table.as_str()),
    ]
    .into_iter()
    .enumerate()
    {
        // A soft delete is an update; without one, deletes need their own privilege.
        let needed = privilege != "DELETE" || config.deleted.is_none();
        let granted: bool = row.try_get(index).map_err(|error| malformed(config, error.to_string()))?;
        if needed && !granted {
            missing.push(format!("{privilege} on {}.{on}", config.schema()));
        }
    }
    if !missing.is_empty() {
        let user = config.url.parse().ok().and_then(|url| url.get_user().map(str::to_string));
        return Err(ConnectorError::Misconfigured {
            message: format!(
                "the user {} lacks {} ({})",
                user.unwrap_or_else(|| "connecting".into()),
                missing.join(", "),
                config.url
            ),
        });
    }
    let rows = session
        .query(&format!("SELECT count(*) FROM {read}"), &[])
        .await
        .map_err(|error| classify(config, error))?;
    let count: i64 = rows
        .first()
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(|error| malformed(config, error.to_string()))?
        .unwrap_or_default();
    Ok(Probe { kind: "postgres", target: target(config), records: u64::try_from(count).ok(), capabilities })
}

/// One page of a listing (`Connector::read_page`): by key, or by modification time then key
/// from `since` on.
async fn read_page(
    session: &mut Session,
    config: &PostgresConfig,
    request: &ReadRequest,
    token: Option<&PageToken>,
) -> Result<Page, ConnectorError> {
    session.require_columns(config, Side::Read, &request.paths).await?;
    let relation = &session.read;
    let batch_size = config.batch_size();
    let incremental = config.modified.as_deref().zip(request.since_time());
    let (mut sql, decodes) = select_clause(config, relation, &request.paths);
    let key_order = key_order(config);
    let mut params: Vec<Param> = Vec::new();
    let _ = write!(sql, " WHERE {} IS NOT NULL", quote_ident(&config.key));
    if let Some((modified, since)) = incremental {
        let kind = relation.kind(modified);
        params.push(Box::new(whole_microseconds(since)));
        let column = quote_ident(modified);
        let _ = write!(sql, " AND {column} >= {} AND isfinite({column})", instant_param(kind, params.len()));
    }
    match (token.map(|token| parse_token(config, token)).transpose()?, incremental) {
        (None, _) => {}
        (Some(Token::Key(key)), None) => {
            params.push(Box::new(TextParam(Some(key))));
            let _ = write!(sql, " AND {key_order} > ${}", params.len());
        }
        (Some(Token::Modified(microseconds, key)), Some((modified, _))) => {
            let kind = relation.kind(modified);
            let after = Timestamp::from_microsecond(microseconds).map_err(|_| foreign_token(config))?;
            params.push(Box::new(after));
            let after = instant_param(kind, params.len());
            params.push(Box::new(TextParam(Some(key))));
            let _ =
                write!(sql, " AND ({}, {key_order}) > ({after}, ${})", quote_ident(modified), params.len());
        }
        // A token of the other kind of listing: the request changed between pages.
        (Some(_), _) => return Err(foreign_token(config)),
    }
    // One record more than a page tells whether another page follows.
    let order_by = match incremental {
        Some((modified, _)) => format!("{LISTED}.{}, {key_order}", quote_ident(modified)),
        None => key_order,
    };
    let _ = write!(sql, " ORDER BY {order_by} LIMIT {}", batch_size.saturating_add(1));

    let rows = session.query(&sql, &params).await.map_err(|error| classify(config, error))?;
    let mut records =
        rows.iter().map(|row| read_record(config, row, &decodes)).collect::<Result<Vec<_>, _>>()?;
    let next = if records.len() > batch_size {
        records.truncate(batch_size);
        let last = records.last().expect("a page holds at least one record when batch_size is at least 1");
        let key = last.id.as_str().to_string();
        let token = match (incremental, last.modified) {
            (None, _) => Token::Key(key),
            (Some(_), Some(modified)) => Token::Modified(modified.as_microsecond(), key),
            // The listing's condition holds only for records with a finite time.
            (Some(_), None) => return Err(malformed(config, format!("record {key} lost its modified time"))),
        };
        Some(token_text(&token))
    } else {
        None
    };
    Ok(Page::new(records, next))
}

/// Records by ids or by the values at a path (`Connector::lookup`).
async fn look_up(
    session: &mut Session,
    config: &PostgresConfig,
    paths: &[String],
    lookup: &Lookup,
) -> Result<Vec<ConnectorRecord>, ConnectorError> {
    session.require_columns(config, Side::Read, paths).await?;
    let (column, wanted): (&str, Vec<&str>) = match lookup {
        Lookup::Ids(ids) => (&config.key, ids.iter().map(RecordId::as_str).collect()),
        Lookup::Key { path, values } => {
            session.require_columns(config, Side::Read, std::slice::from_ref(path)).await?;
            (path, values.iter().map(String::as_str).collect())
        }
    };
    // Each value once, so that no record is found in two chunks.
    let mut seen = HashSet::new();
    let wanted: Vec<&str> = wanted.into_iter().filter(|text| seen.insert(*text)).collect();
    let mut found = Vec::new();
    for chunk in wanted.chunks(LOOKUP_CHUNK) {
        let relation = &session.read;
        let Some((condition, param)) = any_condition(column, relation.kind(column), chunk, 1) else {
            continue;
        };
        let (select, decodes) = select_clause(config, relation, paths);
        let sql = format!("{select} WHERE {} IS NOT NULL AND {condition}", quote_ident(&config.key));
        let rows = session.query(&sql, &[param]).await.map_err(|error| classify(config, error))?;
        for row in &rows {
            found.push(read_record(config, row, &decodes)?);
        }
    }
    Ok(found)
}

/// Writes in one transaction, each in its own savepoint, runs of creates in multi-row inserts
/// (`Connector::apply`).
async fn apply(
    session: &mut Session,
    config: &PostgresConfig,
    writes: &[Write],
) -> Result<WriteResults, ConnectorError> {
    let paths: Vec<String> = writes.iter().flat_map(fields_of).map(|field| field.path.clone()).collect();
    // Columns that seem missing make the session read the table's columns again now, outside
    // the transaction; a write naming a column that is still missing then fails on its own
    // below, so only an error that stops every write is returned here.
    if let Err(error) = session.require_columns(config, Side::Write, &paths).await
        && error.is_retryable()
    {
        return Err(error);
    }
    session.simple("BEGIN").await.map_err(|error| classify(config, error))?;
    match apply_in_transaction(session, config, writes).await {
        Ok(results) => {
            session.simple("COMMIT").await.map_err(|error| classify(config, error))?;
            Ok(results)
        }
        Err(error) => {
            // The connection is usually gone already; a ROLLBACK that fails changes nothing.
            let _ = session.simple("ROLLBACK").await;
            Err(error)
        }
    }
}

/// The writes of `apply`, inside its transaction: runs of creates together, the rest one by
/// one; an error means the transaction failed as a whole.
async fn apply_in_transaction(
    session: &mut Session,
    config: &PostgresConfig,
    writes: &[Write],
) -> Result<WriteResults, ConnectorError> {
    let mut results = Vec::with_capacity(writes.len());
    let mut start = 0;
    while start < writes.len() {
        let end = start + creates_together(session, &writes[start..]);
        if end - start > 1 {
            match create_many(session, config, &writes[start..end]).await? {
                Some(outcomes) => results.extend(outcomes),
                // One of them failed: each goes on its own, to learn which.
                None => {
                    for write in &writes[start..end] {
                        results.push(apply_one(session, config, write).await?);
                    }
                }
            }
            start = end;
        } else {
            results.push(apply_one(session, config, &writes[start]).await?);
            start += 1;
        }
    }
    Ok(results)
}

/// How many writes from the first one are creates of the same columns, all of the table's,
/// that one insert can make.
fn creates_together(session: &Session, writes: &[Write]) -> usize {
    let Some(Write::Create { fields: first }) = writes.first() else { return 0 };
    if first.is_empty() || first.iter().any(|field| !session.write.columns.contains_key(&field.path)) {
        return 0;
    }
    let same_columns = |write: &Write| match write {
        Write::Create { fields } => {
            fields.len() == first.len()
                && fields.iter().zip(first).all(|(field, other)| field.path == other.path)
        }
        _ => false,
    };
    let most = (MAX_INSERT_PARAMETERS / first.len()).clamp(1, MAX_INSERT_RECORDS);
    writes.iter().take(most).take_while(|write| same_columns(write)).count()
}

/// Creates every record of `writes` (creates of the same columns) in one insert inside a
/// savepoint; `None` when the insert failed and was rolled back.
///
/// PostgreSQL returns the rows of an `INSERT … VALUES … RETURNING` in the order of the
/// `VALUES` list, as Django's bulk creates rely on too; the count is checked all the same.
async fn create_many(
    session: &mut Session,
    config: &PostgresConfig,
    writes: &[Write],
) -> Result<Option<WriteResults>, ConnectorError> {
    let records: Vec<&[FieldWrite]> = writes.iter().map(fields_of).collect();
    session.simple(&format!("SAVEPOINT {SAVEPOINT}")).await.map_err(|error| classify(config, error))?;
    let inserted = insert(session, config, &records).await;
    let ids: Option<Vec<String>> = match &inserted {
        Ok(rows) if rows.len() == records.len() => {
            rows.iter().map(|row| row.try_get::<_, Option<String>>(0).ok().flatten()).collect()
        }
        _ => None,
    };
    match ids {
        Some(ids) => {
            session.simple(&format!("RELEASE {SAVEPOINT}")).await.map_err(|error| classify(config, error))?;
            Ok(Some(ids.into_iter().map(|id| Ok(WriteOutcome { id: RecordId::new(id) })).collect()))
        }
        None => {
            if let Err(error) = roll_back_savepoint(session).await {
                // The transaction is gone (the connection dropped): nothing of it stays.
                return Err(classify(config, inserted.err().unwrap_or(error)));
            }
            Ok(None)
        }
    }
}

/// One write inside its own savepoint: the inner result is the write's own; the outer error
/// means the transaction itself failed, so nothing of it stays.
async fn apply_one(
    session: &mut Session,
    config: &PostgresConfig,
    write: &Write,
) -> Result<Result<WriteOutcome, ConnectorError>, ConnectorError> {
    session.simple(&format!("SAVEPOINT {SAVEPOINT}")).await.map_err(|error| classify(config, error))?;
    let outcome = match write {
        Write::Update { id, fields } => update(session, config, id, fields).await,
        Write::Create { fields } => create(session, config, fields).await,
        Write::Delete { id } => delete(session, config, id).await,
    };
    let failure = match outcome {
        Ok(outcome) => {
            session.simple(&format!("RELEASE {SAVEPOINT}")).await.map_err(|error| classify(config, error))?;
            return Ok(Ok(outcome));
        }
        Err(failure) => failure,
    };
    if let Err(error) = roll_back_savepoint(session).await {
        // The transaction is gone (the connection dropped): nothing of it stays.
        return Err(match failure {
            Failure::Database(cause) => classify(config, cause),
            Failure::Refused(_) => classify(config, error),
        });
    }
    Ok(Err(match failure {
        Failure::Refused(error) => error,
        Failure::Database(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            match (write, error.as_db_error().and_then(|db| db.constraint())) {
                (Write::Create { fields }, Some(constraint)) => {
                    match existing_record(session, config, fields, constraint).await {
                        Ok(Some(id)) => ConnectorError::AlreadyExists { id },
                        Ok(None) => classify(config, error),
                        Err(lookup) => return Err(classify(config, lookup)),
                    }
                }
                _ => classify(config, error),
            }
        }
        Failure::Database(error) => classify(config, error),
    }))
}

/// Rolls the write's savepoint back and releases it, in one round trip.
async fn roll_back_savepoint(session: &mut Session) -> Result<(), Error> {
    session.simple(&format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE {SAVEPOINT}")).await
}

/// Changes the values of one live record, where it still holds every expected value.
async fn update(
    session: &mut Session,
    config: &PostgresConfig,
    id: &RecordId,
    fields: &[FieldWrite],
) -> Result<WriteOutcome, Failure> {
    let table = &session.write;
    require_writable(config, table, fields)?;
    let Some((id_sql, id_param)) = id_condition(config, table, id, 1) else {
        return Err(Failure::Refused(ConnectorError::NotFound { id: id.clone() }));
    };
    if fields.is_empty() {
        return match exists(session, config, id, true).await? {
            true => Ok(WriteOutcome { id: id.clone() }),
            false => Err(Failure::Refused(ConnectorError::NotFound { id: id.clone() })),
        };
    }
    let mut params: Vec<Param> = vec![id_param];
    let mut assignments = Vec::new();
    for field in fields {
        params.push(Box::new(TextParam(text_for(&field.value, table.kind(&field.path)))));
        assignments.push(format!("{} = ${}", quote_ident(&field.path), params.len()));
    }
    assignments.extend(stamp(config, table, fields));
    let mut conditions = live_condition(config, table);
    for field in fields {
        if let Some(expected) = &field.expected {
            let kind = table.kind(&field.path);
            params.push(Box::new(TextParam(text_for(expected, kind))));
            let _ = write!(conditions, " AND {}", same_as_expected(&field.path, kind, params.len()));
        }
    }
    let sql = format!(
        "UPDATE {} SET {} WHERE {id_sql}{conditions} RETURNING 1",
        qualified(config, &config.table),
        assignments.join(", ")
    );
    let rows = session.query(&sql, &params).await?;
    match rows.len() {
        1 => Ok(WriteOutcome { id: id.clone() }),
        // Nothing changed: either there is no such (live) record, or it no longer holds the
        // expected values.
        0 => Err(Failure::Refused(match exists(session, config, id, true).await? {
            true => ConnectorError::TargetMoved { id: id.clone() },
            false => ConnectorError::NotFound { id: id.clone() },
        })),
        many => Err(Failure::Refused(not_unique(config, many))),
    }
}

/// Makes one record.
async fn create(
    session: &mut Session,
    config: &PostgresConfig,
    fields: &[FieldWrite],
) -> Result<WriteOutcome, Failure> {
    if fields.is_empty() {
        return Err(Failure::Refused(ConnectorError::Rejected {
            message: "a new record needs at least one value".into(),
        }));
    }
    require_writable(config, &session.write, fields)?;
    let rows = insert(session, config, &[fields]).await?;
    match rows.first().map(|row| row.try_get::<_, Option<String>>(0)) {
        Some(Ok(Some(id))) => Ok(WriteOutcome { id: RecordId::new(id) }),
        Some(Ok(None)) => Err(Failure::Refused(ConnectorError::Rejected {
            message: format!("a new record needs a value in key column `{}`", config.key),
        })),
        Some(Err(error)) => Err(Failure::Refused(malformed(config, error.to_string()))),
        None => Err(Failure::Refused(ConnectorError::Rejected {
            message: format!(
                "table {} kept the new record out (a trigger returned no row)",
                config.table_name()
            ),
        })),
    }
}

/// `INSERT INTO table (columns) VALUES (…), (…) RETURNING key::text` for records that all
/// write the same columns.
async fn insert(
    session: &mut Session,
    config: &PostgresConfig,
    records: &[&[FieldWrite]],
) -> Result<Vec<Row>, Error> {
    let table = &session.write;
    let first = records[0];
    let stamp = config
        .modified
        .as_deref()
        .filter(|modified| !first.iter().any(|field| field.path == *modified))
        .and_then(|modified| Some((modified, stamp_value(table.columns.get(modified)?.kind)?)));
    let mut columns: Vec<String> = first.iter().map(|field| quote_ident(&field.path)).collect();
    columns.extend(stamp.map(|(modified, _)| quote_ident(modified)));
    let mut params: Vec<Param> = Vec::with_capacity(records.len() * first.len());
    let mut rows = Vec::with_capacity(records.len());
    for fields in records {
        let mut values = Vec::with_capacity(columns.len());
        for field in fields.iter() {
            params.push(Box::new(TextParam(text_for(&field.value, table.kind(&field.path)))));
            values.push(format!("${}", params.len()));
        }
        values.extend(stamp.map(|(_, value)| value.to_string()));
        rows.push(format!("({})", values.join(", ")));
    }
    let sql = format!(
        "INSERT INTO {} ({}) VALUES {} RETURNING {}::text",
        qualified(config, &config.table),
        columns.join(", "),
        rows.join(", "),
        quote_ident(&config.key)
    );
    session.query(&sql, &params).await
}

/// Deletes one record, or marks it deleted in the soft-delete column.
async fn delete(
    session: &mut Session,
    config: &PostgresConfig,
    id: &RecordId,
) -> Result<WriteOutcome, Failure> {
    let table = &session.write;
    let Some((id_sql, id_param)) = id_condition(config, table, id, 1) else {
        return Err(Failure::Refused(ConnectorError::NotFound { id: id.clone() }));
    };
    let relation = qualified(config, &config.table);
    let sql = match config.deleted.as_deref() {
        Some(deleted) => {
            let Some(value) = table.columns.get(deleted).and_then(|column| deleted_value(column.kind)) else {
                return Err(Failure::Refused(missing_column(config, &config.table, deleted)));
            };
            let mut assignments = vec![format!("{} = {value}", quote_ident(deleted))];
            assignments.extend(stamp(config, table, &[]));
            format!(
                "UPDATE {relation} SET {} WHERE {id_sql}{} RETURNING 1",
                assignments.join(", "),
                live_condition(config, table)
            )
        }
        None => format!("DELETE FROM {relation} WHERE {id_sql} RETURNING 1"),
    };
    let rows = session.query(&sql, &[id_param]).await?;
    match rows.len() {
        0 => Err(Failure::Refused(ConnectorError::NotFound { id: id.clone() })),
        1 => Ok(WriteOutcome { id: id.clone() }),
        many => Err(Failure::Refused(not_unique(config, many))),
    }
}

/// Whether the record `id` exists in the table (and is live, with `live`).
async fn exists(
    session: &mut Session,
    config: &PostgresConfig,
    id: &RecordId,
    live: bool,
) -> Result<bool, Failure> {
    let table = &session.write;
    let Some((id_sql, id_param)) = id_condition(config, table, id, 1) else { return Ok(false) };
    let live = if live { live_condition(config, table) } else { String::new() };
    let sql = format!("SELECT 1 FROM {} WHERE {id_sql}{live} LIMIT 1", qualified(config, &config.table));
    Ok(!session.query(&sql, &[id_param]).await?.is_empty())
}

/// The id of the record that holds the values a create wrote to the columns of the unique
/// index `constraint` it violated; `None` when the index covers other columns or
/// expressions, or no record holds them (it went away meanwhile).
async fn existing_record(
    session: &mut Session,
    config: &PostgresConfig,
    fields: &[FieldWrite],
    constraint: &str,
) -> Result<Option<RecordId>, Error> {
    let sql = "SELECT a.attname::text, bool_or(k.attnum = 0) OVER () \
               FROM pg_catalog.pg_index i \
               JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
               CROSS JOIN LATERAL unnest(i.indkey::int2[]) AS k(attnum) \
               LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
               WHERE i.indrelid = $1::text::regclass AND c.relname = $2 AND i.indisunique";
    let params: Vec<Param> =
        vec![Box::new(qualified(config, &config.table)), Box::new(constraint.to_string())];
    let rows = session.query(sql, &params).await?;
    let mut columns = Vec::new();
    for row in &rows {
        let (column, expressions): (Option<String>, Option<bool>) = (row.try_get(0)?, row.try_get(1)?);
        match column {
            Some(column) if expressions != Some(true) => columns.push(column),
            _ => return Ok(None),
        }
    }
    if columns.is_empty() {
        return Ok(None);
    }
    let table = &session.write;
    let mut params: Vec<Param> = Vec::new();
    let mut conditions = Vec::new();
    for column in &columns {
        let Some(field) = fields.iter().find(|field| field.path == *column) else { return Ok(None) };
        let kind = table.kind(column);
        params.push(Box::new(TextParam(text_for(&field.value, kind))));
        conditions.push(same_as_expected(column, kind, params.len()));
    }
    let sql = format!(
        "SELECT {}::text FROM {} WHERE {} LIMIT 1",
        quote_ident(&config.key),
        qualified(config, &config.table),
        conditions.join(" AND ")
    );
    let rows = session.query(&sql, &params).await?;
    Ok(rows.first().map(|row| row.try_get::<_, String>(0)).transpose()?.map(RecordId::new))
}

impl Session {
    /// Connects, sets the session up (UTC, ISO dates) and reads the columns of the relations.
    async fn connect(config: &PostgresConfig) -> Result<Session, ConnectorError> {
        let client = fieldsync_postgres::connect(config.url.expose())
            .await
            .map_err(|error| connect_error(config, &error))?;
        let mut setup = String::from("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'");
        if config.url.parse().is_ok_and(|url| url.get_application_name().is_none()) {
            // So that an operator sees in pg_stat_activity whose connection this is.
            setup.push_str("; SET application_name = 'fieldsync'");
        }
        client.batch_execute(&setup).await.map_err(|error| classify(config, error))?;
        let read = load_relation(&client, config, config.read_from()).await?;
        let write = match &config.view {
            Some(_) => load_relation(&client, config, &config.table).await?,
            None => read.clone(),
        };
        let session = Session { client, read, write, statements: HashMap::new() };
        session.check_configured_columns(config)?;
        Ok(session)
    }

    /// The key, modified and deleted columns exist where they are needed, of types the
    /// connector can use.
    fn check_configured_columns(&self, config: &PostgresConfig) -> Result<(), ConnectorError> {
        let mut needed = vec![(Side::Read, config.key.as_str()), (Side::Write, config.key.as_str())];
        needed.extend(config.modified.iter().map(|column| (Side::Read, column.as_str())));
        needed.extend(
            config
                .deleted
                .iter()
                .flat_map(|column| [(Side::Read, column.as_str()), (Side::Write, column.as_str())]),
        );
        for (side, name) in needed {
            let relation = self.relation(side);
            if !relation.columns.contains_key(name) {
                return Err(missing_column(config, &relation.name, name));
            }
        }
        let wrong_type = |relation: &Relation, name: &str, wanted: &str| {
            let column = &relation.columns[name];
            ConnectorError::Misconfigured {
                message: format!(
                    "column `{name}` of {}.{} is {}, not {wanted} ({})",
                    config.schema(),
                    relation.name,
                    column.type_name,
                    config.url
                ),
            }
        };
        if let Some(modified) = &config.modified {
            for relation in [&self.read, &self.write] {
                if relation.columns.get(modified).is_some_and(|column| !column.kind.is_time()) {
                    return Err(wrong_type(relation, modified, "timestamptz or timestamp"));
                }
            }
        }
        if let Some(deleted) = &config.deleted {
            for relation in [&self.read, &self.write] {
                if deleted_value(relation.kind(deleted)).is_none() {
                    return Err(wrong_type(relation, deleted, "a time, date, boolean, number or text"));
                }
            }
        }
        Ok(())
    }

    /// The relation a statement on `side` works on.
    fn relation(&self, side: Side) -> &Relation {
        match side {
            Side::Read => &self.read,
            Side::Write => &self.write,
        }
    }

    /// Checks that every path is a column of the relation, reading its columns again once
    /// when one seems missing (the table may have changed).
    async fn require_columns(
        &mut self,
        config: &PostgresConfig,
        side: Side,
        paths: &[String],
    ) -> Result<(), ConnectorError> {
        for path in paths {
            PostgresConfig::validate_path(path).map_err(|problem| ConnectorError::Misconfigured {
                message: format!("postgres connector for {}: {problem}", config.url),
            })?;
        }
        if paths.iter().all(|path| self.relation(side).columns.contains_key(path)) {
            return Ok(());
        }
        let name = self.relation(side).name.clone();
        let reloaded = load_relation(&self.client, config, &name).await?;
        // The statements prepared before may no longer match the relation.
        self.statements.clear();
        match (side, config.view.is_some()) {
            (Side::Read, true) => self.read = reloaded,
            (Side::Write, true) => self.write = reloaded,
            (_, false) => {
                self.read = reloaded.clone();
                self.write = reloaded;
            }
        }
        match paths.iter().find(|path| !self.relation(side).columns.contains_key(*path)) {
            None => Ok(()),
            Some(path) => Err(missing_column(config, &name, path)),
        }
    }

    /// A prepared statement for `sql`, prepared once per session.
    async fn statement(&mut self, sql: &str) -> Result<Statement, Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Runs `sql` (prepared once) with `params`.
    async fn query(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Row>, Error> {
        let statement = self.statement(sql).await?;
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|param| param.as_ref() as &(dyn ToSql + Sync)).collect();
        self.client.query(&statement, &params).await
    }

    /// Runs statements without parameters (transaction control).
    async fn simple(&mut self, sql: &str) -> Result<(), Error> {
        self.client.batch_execute(sql).await
    }
}

impl Relation {
    /// The kind of the column `name`; `Other` (compared and written as text) for a column
    /// the catalogue did not list, which the statement then fails on.
    fn kind(&self, name: &str) -> ColumnKind {
        self.columns.get(name).map_or(ColumnKind::Other, |column| column.kind)
    }
}

/// The columns of the relation `name` of the configured schema, from the catalogue: each
/// one's kind by its base type (a domain's by the type it is over).
async fn load_relation(
    client: &Client,
    config: &PostgresConfig,
    name: &str,
) -> Result<Relation, ConnectorError> {
    let sql = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), base.typname::text, \
               base.typcategory::text, base.typcollation <> 0 \
               FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
               JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
               JOIN pg_catalog.pg_type base \
                 ON base.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
               WHERE n.nspname = $1 AND c.relname = $2";
    let rows =
        client.query(sql, &[&config.schema(), &name]).await.map_err(|error| classify(config, error))?;
    if rows.is_empty() {
        return Err(ConnectorError::Misconfigured {
            message: format!("table or view {}.{name} does not exist ({})", config.schema(), config.url),
        });
    }
    let mut columns = HashMap::new();
    for row in &rows {
        let read = |error: Error| malformed(config, format!("the catalogue answered unexpectedly: {error}"));
        let column: String = row.try_get(0).map_err(read)?;
        let type_name: String = row.try_get(1).map_err(read)?;
        let base: String = row.try_get(2).map_err(read)?;
        let category: String = row.try_get(3).map_err(read)?;
        let collatable: bool = row.try_get(4).map_err(read)?;
        columns.insert(column, Column { kind: ColumnKind::of(&base, &category, collatable), type_name });
    }
    Ok(Relation { name: name.to_string(), columns })
}

/// `"schema"."name"`.
fn qualified(config: &PostgresConfig, name: &str) -> String {
    format!("{}.{}", quote_ident(config.schema()), quote_ident(name))
}

/// How messages name the connector's target: the URL without its password, and the table.
fn target(config: &PostgresConfig) -> String {
    match &config.view {
        Some(view) => format!("{} (table {}, read through {view})", config.url, config.table_name()),
        None => format!("{} (table {})", config.url, config.table_name()),
    }
}

/// `SELECT key::text, deleted, modified, paths… FROM relation`, and how each path's value
/// comes back.
fn select_clause(config: &PostgresConfig, relation: &Relation, paths: &[String]) -> (String, Vec<Decode>) {
    let deleted = config
        .deleted
        .as_deref()
        .map_or_else(|| "false".to_string(), |column| deleted_expression(column, relation.kind(column)));
    let modified = config.modified.as_deref().map_or_else(
        || "NULL::timestamptz".to_string(),
        |column| {
            let quoted = quote_ident(column);
            match relation.kind(column) {
                ColumnKind::Timestamp => {
                    format!("CASE WHEN isfinite({quoted}) THEN {quoted} AT TIME ZONE 'UTC' END")
                }
                _ => format!("CASE WHEN isfinite({quoted}) THEN {quoted} END"),
            }
        },
    );
    let mut sql = format!("SELECT {}::text, {deleted}, {modified}", quote_ident(&config.key));
    let mut decodes = Vec::with_capacity(paths.len());
    for path in paths {
        let (expression, decode) = read_expression(path, relation.kind(path));
        let _ = write!(sql, ", {expression}");
        decodes.push(decode);
    }
    let _ = write!(sql, " FROM {} AS {LISTED}", qualified(config, &relation.name));
    (sql, decodes)
}

/// Reads one row of a `select_clause` into a record.
fn read_record(
    config: &PostgresConfig,
    row: &Row,
    decodes: &[Decode],
) -> Result<ConnectorRecord, ConnectorError> {
    let wrong = |error: Error| malformed(config, error.to_string());
    let id: String = row.try_get(0).map_err(wrong)?;
    let deleted: bool = row.try_get(1).map_err(wrong)?;
    let modified: Option<Timestamp> = row.try_get(2).map_err(wrong)?;
    let mut values = Vec::with_capacity(decodes.len());
    for (offset, decode) in decodes.iter().enumerate() {
        let index = 3 + offset;
        let value = match decode {
            Decode::Text => {
                row.try_get::<_, Option<String>>(index).map_err(wrong)?.map_or(Json::Null, Json::String)
            }
            Decode::Integer => {
                row.try_get::<_, Option<i64>>(index).map_err(wrong)?.map_or(Json::Null, Json::from)
            }
            Decode::Boolean => {
                row.try_get::<_, Option<bool>>(index).map_err(wrong)?.map_or(Json::Null, Json::Bool)
            }
            Decode::Json => row.try_get::<_, Option<Json>>(index).map_err(wrong)?.unwrap_or(Json::Null),
            Decode::Instant => {
                row.try_get::<_, Option<Json>>(index).map_err(wrong)?.map_or(Json::Null, instant_in_utc)
            }
        };
        values.push(value);
    }
    Ok(ConnectorRecord { id: RecordId::new(id), values, modified, deleted })
}

/// The key column as listings order and page it: in the column's own collation, so that its
/// index (the primary key's, a unique one) serves both the order and the `>` of the next
/// page. Byte order (`COLLATE "C"`) fits no such index on a server whose collation is another:
/// every page would sort the whole table, a million members taking 200 sorts of a million
/// rows. The engine takes a listing in any order. The column is named through the relation's
/// alias: a bare name in `ORDER BY` would be the selected `key::text`, which sorts integers as
/// text.
fn key_order(config: &PostgresConfig) -> String {
    format!("{LISTED}.{}", quote_ident(&config.key))
}

/// `key = $n` for one record id, and its parameter; `None` when no record can have that id
/// (text that is no integer, for an integer key).
fn id_condition(
    config: &PostgresConfig,
    relation: &Relation,
    id: &RecordId,
    parameter: usize,
) -> Option<(String, Param)> {
    let key = quote_ident(&config.key);
    match relation.kind(&config.key) {
        ColumnKind::Integer => {
            let integer = canonical_integer(id.as_str())?;
            Some((format!("{key} = ${parameter}::int8"), Box::new(integer)))
        }
        ColumnKind::Text => Some((format!("{key} = ${parameter}::text"), Box::new(id.as_str().to_string()))),
        _ => Some((format!("{key}::text = ${parameter}::text"), Box::new(id.as_str().to_string()))),
    }
}

/// `column = ANY($n)` for values compared as text (integers as the numbers they spell), and
/// its parameter; `None` when no value can match.
fn any_condition(
    column: &str,
    kind: ColumnKind,
    values: &[&str],
    parameter: usize,
) -> Option<(String, Param)> {
    let quoted = quote_ident(column);
    match kind {
        ColumnKind::Integer => {
            let integers: Vec<i64> = values.iter().filter_map(|text| canonical_integer(text)).collect();
            (!integers.is_empty())
                .then(|| (format!("{quoted} = ANY(${parameter}::int8[])"), Box::new(integers) as Param))
        }
        ColumnKind::Text => {
            let texts: Vec<String> = values.iter().map(|text| text.to_string()).collect();
            Some((format!("{quoted} = ANY(${parameter}::text[])"), Box::new(texts)))
        }
        _ => {
            let texts: Vec<String> = values.iter().map(|text| text.to_string()).collect();
            Some((format!("{quoted}::text = ANY(${parameter}::text[])"), Box::new(texts)))
        }
    }
}

/// The integer `text` spells in its one canonical way (`42`, not `042` or `+42`).
fn canonical_integer(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().filter(|integer| integer.to_string() == text)
}

/// `" AND NOT deleted"` for a table with a soft-delete column, else nothing.
fn live_condition(config: &PostgresConfig, relation: &Relation) -> String {
    config.deleted.as_deref().map_or_else(String::new, |column| {
        format!(" AND NOT {}", deleted_expression(column, relation.kind(column)))
    })
}

/// Whether the soft-delete column marks a record deleted: anything but NULL and, by its type,
/// false, 0, '' or '0' (the sqlite connector's rule, with booleans).
fn deleted_expression(column: &str, kind: ColumnKind) -> String {
    let quoted = quote_ident(column);
    match kind {
        ColumnKind::Boolean => format!("coalesce({quoted}, false)"),
        ColumnKind::Integer | ColumnKind::Numeric | ColumnKind::Float => {
            format!("coalesce({quoted} <> 0, false)")
        }
        ColumnKind::Text => format!("coalesce({quoted} NOT IN ('', '0'), false)"),
        _ => format!("({quoted} IS NOT NULL)"),
    }
}

/// What a delete stores in a soft-delete column of this kind: the time, true or 1; `None` for
/// a kind that cannot mark a record deleted.
fn deleted_value(kind: ColumnKind) -> Option<&'static str> {
    match kind {
        ColumnKind::Boolean => Some("true"),
        ColumnKind::Integer | ColumnKind::Numeric | ColumnKind::Float => Some("1"),
        ColumnKind::Text => {
            Some("to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        }
        ColumnKind::Date => Some("(clock_timestamp() AT TIME ZONE 'UTC')::date"),
        ColumnKind::Timestamp | ColumnKind::TimestampTz => stamp_value(kind),
        ColumnKind::Json | ColumnKind::Jsonb | ColumnKind::Array | ColumnKind::Other => None,
    }
}

/// The current time as a modified column of this kind stores it; `None` for other kinds.
fn stamp_value(kind: ColumnKind) -> Option<&'static str> {
    match kind {
        ColumnKind::TimestampTz => Some("clock_timestamp()"),
        ColumnKind::Timestamp => Some("(clock_timestamp() AT TIME ZONE 'UTC')"),
        _ => None,
    }
}

/// `"modified" = now` for a write that does not set the modified column itself, when the
/// table has one.
fn stamp(config: &PostgresConfig, relation: &Relation, fields: &[FieldWrite]) -> Option<String> {
    let modified = config.modified.as_deref()?;
    if fields.iter().any(|field| field.path == modified) {
        return None;
    }
    let value = stamp_value(relation.columns.get(modified)?.kind)?;
    Some(format!("{} = {value}", quote_ident(modified)))
}

/// `$n` as an instant compared with a column of this kind: a `timestamp` column holds UTC.
fn instant_param(kind: ColumnKind, parameter: usize) -> String {
    match kind {
        ColumnKind::Timestamp => format!("(${parameter}::timestamptz AT TIME ZONE 'UTC')"),
        _ => format!("${parameter}::timestamptz"),
    }
}

/// `instant` cut to whole microseconds (PostgreSQL's precision), never later than it, so that
/// `>=` keeps a record modified exactly then.
fn whole_microseconds(instant: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(instant.as_microsecond()).unwrap_or(instant)
}

/// A token as the page hands it out: JSON, `[key]` or `[microseconds, key]`.
fn token_text(token: &Token) -> PageToken {
    PageToken(match token {
        Token::Key(key) => serde_json::json!([key]).to_string(),
        Token::Modified(microseconds, key) => serde_json::json!([microseconds, key]).to_string(),
    })
}

/// Reads a token `token_text` made.
fn parse_token(config: &PostgresConfig, token: &PageToken) -> Result<Token, ConnectorError> {
    match serde_json::from_str::<Json>(&token.0) {
        Ok(Json::Array(items)) => match items.as_slice() {
            [Json::String(key)] => Ok(Token::Key(key.clone())),
            [Json::Number(microseconds), Json::String(key)] => microseconds
                .as_i64()
                .map(|microseconds| Token::Modified(microseconds, key.clone()))
                .ok_or_else(|| foreign_token(config)),
            _ => Err(foreign_token(config)),
        },
        _ => Err(foreign_token(config)),
    }
}

/// A page token this connector did not make (or made for another kind of listing).
fn foreign_token(config: &PostgresConfig) -> ConnectorError {
    ConnectorError::Misconfigured {
        message: format!("a page token that the postgres connector for {} did not make", config.url),
    }
}

/// The values a write sets; none for a delete.
fn fields_of(write: &Write) -> &[FieldWrite] {
    match write {
        Write::Update { fields, .. } | Write::Create { fields } => fields,
        Write::Delete { .. } => &[],
    }
}

/// Every field names a column of the table.
fn require_writable(config: &PostgresConfig, table: &Relation, fields: &[FieldWrite]) -> Result<(), Failure> {
    for field in fields {
        PostgresConfig::validate_path(&field.path).map_err(|problem| {
            Failure::Refused(ConnectorError::Misconfigured {
                message: format!("postgres connector for {}: {problem}", config.url),
            })
        })?;
        if !table.columns.contains_key(&field.path) {
            return Err(Failure::Refused(missing_column(config, &table.name, &field.path)));
        }
    }
    Ok(())
}

/// A configured column or field path the relation does not have.
fn missing_column(config: &PostgresConfig, relation: &str, column: &str) -> ConnectorError {
    ConnectorError::Misconfigured {
        message: format!(
            "column `{column}` does not exist in {}.{relation} ({})",
            config.schema(),
            config.url
        ),
    }
}

/// A write that would change several records sharing one key, which is refused.
fn not_unique(config: &PostgresConfig, count: usize) -> ConnectorError {
    ConnectorError::Rejected {
        message: format!(
            "{count} records of table {} share the key; column `{}` must be unique",
            config.table_name(),
            config.key
        ),
    }
}

/// An answer the connector cannot read.
fn malformed(config: &PostgresConfig, message: String) -> ConnectorError {
    ConnectorError::Malformed { what: target(config), message: scrub(config, message) }
}

/// Why a connection could not be made: retryable when the server may come back, else a
/// configuration to mend (a refused login, a missing database).
pub(crate) fn connect_error(config: &PostgresConfig, error: &ConnectError) -> ConnectorError {
    let message = scrub(config, error_chain(error));
    if error.is_retryable() {
        ConnectorError::Unavailable { what: target(config), message, retry_after: None }
    } else {
        ConnectorError::Misconfigured { message: format!("{message} ({})", config.url) }
    }
}

/// Classifies a PostgreSQL error by its SQLSTATE, never by its text: the values refused for
/// good (data exceptions, constraint violations, a trigger's exception) are `Rejected` with
/// PostgreSQL's message and the constraint's name; a wrong table, column, privilege or login
/// is `Misconfigured`; a dropped connection, a serialization failure, a deadlock and the
/// rest are `Unavailable` (retryable, as `fieldsync_postgres::is_retryable` says).
fn classify(config: &PostgresConfig, error: Error) -> ConnectorError {
    let unavailable = |message: String| ConnectorError::Unavailable {
        what: target(config),
        message: scrub(config, message),
        retry_after: None,
    };
    let Some(database) = error.as_db_error() else {
        return unavailable(error_chain(&error));
    };
    let mut message = database.message().to_string();
    if let Some(constraint) = database.constraint() {
        let _ = write!(message, " (constraint {constraint})");
    }
    if fieldsync_postgres::is_retryable(&error) {
        return unavailable(message);
    }
    let code = database.code();
    match &code.code()[..2] {
        // Data exceptions, integrity constraint violations, a trigger's RAISE EXCEPTION.
        "22" | "23" | "P0" => ConnectorError::Rejected { message: scrub(config, message) },
        // Syntax errors and access rules (no such table or column, no privilege), a refused
        // login, a missing database or schema.
        "42" | "28" | "3D" | "3F" => ConnectorError::Misconfigured {
            message: format!("{} ({})", scrub(config, message), target(config)),
        },
        _ if *code == SqlState::READ_ONLY_SQL_TRANSACTION => ConnectorError::Misconfigured {
            message: format!("{} ({})", scrub(config, message), target(config)),
        },
        // Everything else (a cached plan after the table changed, internal errors) may pass.
        _ => unavailable(message),
    }
}

/// An error's message with its causes, `: `-separated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            let _ = write!(message, ": {cause_text}");
        }
        source = cause.source();
    }
    message
}

/// `message` with the URL's password, should a message ever hold it, replaced by `***`.
fn scrub(config: &PostgresConfig, message: String) -> String {
    let password = config.url.parse().ok().and_then(|url| url.get_password().map(<[u8]>::to_vec));
    match password.map(|password| String::from_utf8_lossy(&password).into_owned()) {
        Some(password) if !password.is_empty() && message.contains(&password) => {
            message.replace(&password, "***")
        }
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PostgresConfig {
        PostgresConfig::new("postgres://sync:hunter2@platform.example/club", "members", "id")
    }

    #[test]
    fn page_tokens_round_trip_and_foreign_ones_are_refused() {
        let config = config();
        for token in [Token::Key("m:0001".into()), Token::Modified(1_714_564_800_123_456, "42".into())] {
            assert_eq!(parse_token(&config, &token_text(&token)).expect("a token of ours"), token);
        }
        for foreign in ["x", "[]", "[1]", "[\"a\", \"b\"]", "[1.5, \"a\"]"] {
            assert!(parse_token(&config, &PageToken(foreign.into())).is_err(), "{foreign}");
        }
    }

    #[test]
    fn integer_ids_are_matched_only_in_their_canonical_spelling() {
        assert_eq!(canonical_integer("42"), Some(42));
        assert_eq!(canonical_integer("-7"), Some(-7));
        for other in ["042", "+42", "4 2", "no-such-record", ""] {
            assert_eq!(canonical_integer(other), None, "{other}");
        }
    }

    #[test]
    fn instants_are_cut_to_microseconds_never_later() {
        let instant: Timestamp = "2024-05-01T12:00:00.123456789Z".parse().unwrap();
        assert_eq!(whole_microseconds(instant).to_string(), "2024-05-01T12:00:00.123456Z");
    }

    #[test]
    fn the_password_is_scrubbed_from_messages() {
        assert_eq!(scrub(&config(), "login hunter2 refused".into()), "login *** refused");
        assert_eq!(scrub(&config(), "nothing secret".into()), "nothing secret");
        assert!(!target(&config()).contains("hunter2"));
    }
}
