//! `CsvConnector`: reads a whole CSV file as one page of records, and applies writes by
//! rewriting the file into a temporary file beside it that is renamed over the original.
//!
//! Every call reads the file afresh; values are text. File I/O is synchronous inside the
//! async methods (the file is local and read whole).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write as _};
use std::path::Path;

use fieldsync_connector::{
    Capabilities, Connector, ConnectorError, ConnectorRecord, ConnectorSettings, Lookup, Page, PageToken,
    Probe, ReadRequest, Write, WriteOutcome, WriteResults,
};
use fieldsync_model::RecordId;

use crate::config::CsvConfig;

/// How often `apply` starts again when the file changes while it writes.
const APPLY_ATTEMPTS: usize = 3;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The connector over one CSV file with a header row.
#[derive(Clone, Debug)]
pub struct CsvConnector {
    config: CsvConfig,
    delimiter: u8,
}

/// The file as read: its header, its records' cells, and how it was written. (No `Debug`:
/// it holds values, which are never printed.)
struct Table {
    /// The bytes read, to see whether the file changed before it is replaced.
    original: Vec<u8>,
    header: Vec<String>,
    records: Vec<Vec<String>>,
    key_index: usize,
    crlf: bool,
    bom: bool,
}

impl CsvConnector {
    /// A connector for `config`, which is validated here; the file is read at each call.
    ///
    /// # Errors
    ///
    /// `ConnectorError::Misconfigured` when `config` fails `CsvConfig::check`.
    pub fn open(config: CsvConfig) -> Result<Self, ConnectorError> {
        let delimiter = config.check().and_then(|()| config.delimiter_byte()).map_err(|problem| {
            ConnectorError::Misconfigured {
                message: format!("csv connector for {}: {problem}", config.path.display()),
            }
        })?;
        Ok(Self { config, delimiter })
    }

    /// The configuration the connector runs with.
    pub fn config(&self) -> &CsvConfig {
        &self.config
    }

    /// The configured date formats of the file's date columns.
    pub fn date_formats(&self) -> &[String] {
        self.config.date_formats()
    }

    fn file(&self) -> String {
        self.config.path.display().to_string()
    }

    fn io_error(&self, error: &io::Error, doing: &str) -> ConnectorError {
        match error.kind() {
            io::ErrorKind::NotFound => ConnectorError::Misconfigured {
                message: format!(
                    "the CSV file {} does not exist (the csv connector never creates one)",
                    self.file()
                ),
            },
            io::ErrorKind::PermissionDenied => {
                ConnectorError::Misconfigured { message: format!("{doing} {}: {error}", self.file()) }
            }
            _ => ConnectorError::Unavailable {
                what: self.file(),
                message: format!("{doing}: {error}"),
                retry_after: None,
            },
        }
    }

    fn malformed(&self, line: Option<u64>, message: String) -> ConnectorError {
        let what = match line {
            Some(line) => format!("{}, line {line}", self.file()),
            None => self.file(),
        };
        ConnectorError::Malformed { what, message }
    }

    fn missing_column(&self, column: &str) -> String {
        format!("column `{column}` is not in the header of {}", self.file())
    }

    fn read_table(&self) -> Result<Table, ConnectorError> {
        let original = fs::read(&self.config.path).map_err(|error| self.io_error(&error, "reading"))?;
        let bom = original.starts_with(UTF8_BOM);
        let first_line_end = original.iter().position(|byte| *byte == b'\n');
        let crlf = first_line_end.is_some_and(|end| end > 0 && original[end - 1] == b'\r');

        let mut reader = csv::ReaderBuilder::new()
            .delimiter(self.delimiter)
            .has_headers(true)
            .flexible(false)
            .from_reader(original.as_slice());
        let header: Vec<String> =
            reader.headers().map_err(|error| self.csv_error(error))?.iter().map(str::to_string).collect();
        let mut seen = HashSet::new();
        if let Some(repeated) = header.iter().find(|name| !seen.insert(name.as_str())) {
            return Err(ConnectorError::Misconfigured {
                message: format!("column `{repeated}` appears twice in the header of {}", self.file()),
            });
        }
        let key_index = header.iter().position(|name| *name == self.config.key).ok_or_else(|| {
            ConnectorError::Misconfigured { message: self.missing_column(&self.config.key) }
        })?;

        let mut records = Vec::new();
        let mut first_line_of_key: HashMap<String, u64> = HashMap::new();
        for record in reader.records() {
            let record = record.map_err(|error| self.csv_error(error))?;
            let line = record.position().map_or(0, csv::Position::line);
            let cells: Vec<String> = record.iter().map(str::to_string).collect();
            let key = &cells[key_index];
            if key.is_empty() {
                // A line of empty cells (a spreadsheet's trailing separators) is no record,
                // but it is kept so a rewrite leaves it where it was.
                if cells.iter().all(String::is_empty) {
                    records.push(cells);
                    continue;
                }
                return Err(self.malformed(
                    Some(line),
                    format!("a record with no value in key column `{}`", self.config.key),
                ));
            }
            if let Some(first) = first_line_of_key.insert(key.clone(), line) {
                return Err(self.malformed(
                    Some(line),
                    format!("the record repeats the key of the record on line {first}"),
                ));
            }
            records.push(cells);
        }
        Ok(Table { original, header, records, key_index, crlf, bom })
    }

    fn csv_error(&self, error: csv::Error) -> ConnectorError {
        let line = error.position().map(csv::Position::line);
        match error.kind() {
            csv::ErrorKind::Io(error) => self.io_error(error, "reading"),
            // The csv crate's messages name field counts and byte positions, never values.
            _ => self.malformed(line, error.to_string()),
        }
    }

    /// The header index of each path.
    fn indexes(&self, table: &Table, paths: &[String]) -> Result<Vec<usize>, ConnectorError> {
        paths
            .iter()
            .map(|path| {
                table
                    .column(path)
                    .ok_or_else(|| ConnectorError::Misconfigured { message: self.missing_column(path) })
            })
            .collect()
    }

    /// The file's bytes for `table`, in the form the file was read in (delimiter, line
    /// ends, byte order mark); quoting is the csv crate's, where needed.
    fn serialise(&self, table: &Table) -> Result<Vec<u8>, ConnectorError> {
        let mut bytes = Vec::with_capacity(table.original.len() + 64);
        if table.bom {
            bytes.extend_from_slice(UTF8_BOM);
        }
        let terminator = if table.crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') };
        let mut writer = csv::WriterBuilder::new()
            .delimiter(self.delimiter)
            .terminator(terminator)
            .from_writer(&mut bytes);
        let write_error = |error: csv::Error| ConnectorError::Unavailable {
            what: self.file(),
            message: format!("writing CSV: {error}"),
            retry_after: None,
        };
        writer.write_record(&table.header).map_err(write_error)?;
        for record in &table.records {
            writer.write_record(record).map_err(write_error)?;
        }
        writer.flush().map_err(|error| self.io_error(&error, "writing"))?;
        drop(writer);
        Ok(bytes)
    }

    /// Writes `table` to a temporary file beside the original and renames it over the
    /// original, unless the original changed since `table` was read (then `Ok(false)`). A
    /// table that serialises to the bytes read is not written at all.
    fn replace_file(&self, table: &Table) -> Result<bool, ConnectorError> {
        let bytes = self.serialise(table)?;
        if bytes == table.original {
            return Ok(true);
        }
        let path = &self.config.path;
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let file_name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let unavailable = |error: io::Error| self.io_error(&error, "writing a temporary file for");
        // Dropping `temporary` before the rename deletes it, so every early return below
        // leaves no temporary file behind.
        let mut temporary = tempfile::Builder::new()
            .prefix(&format!(".{file_name}."))
            .suffix(".tmp")
            .tempfile_in(directory)
            .map_err(unavailable)?;
        let permissions = fs::metadata(path).map_err(|error| self.io_error(&error, "reading"))?.permissions();
        fs::set_permissions(temporary.path(), permissions).map_err(unavailable)?;
        temporary.write_all(&bytes).map_err(unavailable)?;
        temporary.as_file().sync_all().map_err(unavailable)?;

        // Another program may have written the file since it was read; its change must not
        // be overwritten. (A change within the instant between this look and the rename
        // below can still be lost: plain files offer no compare-and-swap.)
        let current = fs::read(path).map_err(|error| self.io_error(&error, "reading"))?;
        if current != table.original {
            return Ok(false);
        }
        temporary
            .persist(path)
            .map_err(|error| self.io_error(&error.error, "renaming the temporary file over"))?;
        Ok(true)
    }

    /// Applies one write to the table in memory; a failed write leaves it as it was.
    fn apply_one(&self, table: &mut Table, write: &Write) -> Result<WriteOutcome, ConnectorError> {
        match write {
            Write::Update { id, fields } => {
                let position =
                    table.position(id).ok_or_else(|| ConnectorError::NotFound { id: id.clone() })?;
                let indexes =
                    self.indexes(table, &fields.iter().map(|field| field.path.clone()).collect::<Vec<_>>())?;
                let record = &table.records[position];
                let moved = fields.iter().zip(&indexes).any(|(field, &index)| {
                    field.expected.as_ref().is_some_and(|expected| text(expected) != record[index])
                });
                if moved {
                    return Err(ConnectorError::TargetMoved { id: id.clone() });
                }
                if let Some(field) = fields.iter().find(|field| field.path == self.config.key) {
                    let new_key = text(&field.value);
                    if new_key.is_empty() {
                        return Err(ConnectorError::Rejected {
                            message: format!("key column `{}` cannot be empty", self.config.key),
                        });
                    }
                    if new_key != id.as_str() && table.position(&RecordId::new(new_key.as_str())).is_some() {
                        return Err(ConnectorError::Rejected {
                            message: format!(
                                "another record already has the new value of key column `{}`",
                                self.config.key
                            ),
                        });
                    }
                }
                let record = &mut table.records[position];
                for (field, index) in fields.iter().zip(indexes) {
                    record[index] = text(&field.value);
                }
                Ok(WriteOutcome { id: id.clone() })
            }
            Write::Create { fields } => {
                let mut record = vec![String::new(); table.header.len()];
                for field in fields {
                    let index = table.column(&field.path).ok_or_else(|| ConnectorError::Rejected {
                        message: format!(
                            "{}; the csv connector does not add columns",
                            self.missing_column(&field.path)
                        ),
                    })?;
                    record[index] = text(&field.value);
                }
                let key = record[table.key_index].clone();
                if key.is_empty() {
                    return Err(ConnectorError::Rejected {
                        message: format!("a new record needs a value in key column `{}`", self.config.key),
                    });
                }
                let id = RecordId::new(key);
                if table.position(&id).is_some() {
                    return Err(ConnectorError::AlreadyExists { id });
                }
                table.records.push(record);
                Ok(WriteOutcome { id })
            }
            Write::Delete { id } => {
                let position =
                    table.position(id).ok_or_else(|| ConnectorError::NotFound { id: id.clone() })?;
                table.records.remove(position);
                Ok(WriteOutcome { id: id.clone() })
            }
        }
    }
}

impl Table {
    fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|header| header == name)
    }

    fn position(&self, id: &RecordId) -> Option<usize> {
        if id.as_str().is_empty() {
            return None;
        }
        self.records.iter().position(|record| record[self.key_index] == id.as_str())
    }

    /// The records that are records (not lines of empty cells).
    fn live(&self) -> impl Iterator<Item = &Vec<String>> {
        self.records.iter().filter(|record| !record[self.key_index].is_empty())
    }

    fn connector_record(&self, record: &[String], indexes: &[usize]) -> ConnectorRecord {
        ConnectorRecord {
            id: RecordId::new(record[self.key_index].as_str()),
            values: indexes.iter().map(|&index| serde_json::Value::String(record[index].clone())).collect(),
            modified: None,
            deleted: false,
        }
    }
}

/// A JSON value as the text of a cell: strings as they are, numbers and booleans as their
/// JSON text, null as empty, arrays and objects as JSON.
fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Connector for CsvConnector {
    fn capabilities(&self) -> Capabilities {
        Capabilities::table(false)
    }

    async fn check(&mut self, paths: &[String]) -> Result<Probe, ConnectorError> {
        let table = self.read_table()?;
        self.indexes(&table, paths)?;
        Ok(Probe {
            kind: "csv",
            target: self.file(),
            records: u64::try_from(table.live().count()).ok(),
            capabilities: self.capabilities(),
        })
    }

    async fn read_page(
        &mut self,
        request: &ReadRequest,
        _token: Option<&PageToken>,
    ) -> Result<Page, ConnectorError> {
        // The whole file is one page, and without modification times `since` cannot
        // narrow it; a token (there never is a second page) is ignored.
        let table = self.read_table()?;
        let indexes = self.indexes(&table, &request.paths)?;
        let records = table.live().map(|record| table.connector_record(record, &indexes)).collect();
        Ok(Page::new(records, None))
    }

    async fn lookup(
        &mut self,
        paths: &[String],
        lookup: &Lookup,
    ) -> Result<Vec<ConnectorRecord>, ConnectorError> {
        let table = self.read_table()?;
        let indexes = self.indexes(&table, paths)?;
        let (column, wanted): (usize, HashSet<&str>) = match lookup {
            Lookup::Ids(ids) => (table.key_index, ids.iter().map(RecordId::as_str).collect()),
            Lookup::Key { path, values } => (
                self.indexes(&table, std::slice::from_ref(path))?[0],
                values.iter().map(String::as_str).collect(),
            ),
        };
        Ok(table
            .live()
            .filter(|record| wanted.contains(record[column].as_str()))
            .map(|record| table.connector_record(record, &indexes))
            .collect())
    }

    async fn apply(&mut self, writes: &[Write]) -> Result<WriteResults, ConnectorError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        for _ in 0..APPLY_ATTEMPTS {
            let mut table = self.read_table()?;
            let results: Vec<_> = writes.iter().map(|write| self.apply_one(&mut table, write)).collect();
            if !results.iter().any(Result::is_ok) || self.replace_file(&table)? {
                return Ok(results);
            }
        }
        Err(ConnectorError::Unavailable {
            what: self.file(),
            message: format!("the file changed while it was being written, {APPLY_ATTEMPTS} times"),
            retry_after: None,
        })
    }
}
