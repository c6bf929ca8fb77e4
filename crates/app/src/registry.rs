//! The connector registry: `AnyConnector`, the closed set of connectors this build can run,
//! dispatched by `match` without boxing, and `open_connector`, which makes one from its
//! `ConnectorConfig`.

use std::path::Path;

use fieldsync_connector::{
    Capabilities, Connector, ConnectorError, ConnectorRecord, Lookup, MemoryConnector, Page, PageToken,
    Probe, ReadRequest, Write, WriteOutcome,
};
use fieldsync_connector_browser::BrowserConnector;
use fieldsync_connector_csv::CsvConnector;
use fieldsync_connector_rest::RestConnector;
use fieldsync_connector_sqlite::SqliteConnector;

use crate::config::{ConnectorConfig, ConnectorKind};

/// Any connector this build can run.
// A run holds two connectors, so their size does not matter; the architecture asks for
// dispatch without boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AnyConnector {
    /// A table of an SQLite file.
    Sqlite(SqliteConnector),
    /// A CSV file.
    Csv(CsvConnector),
    /// A JSON API.
    Rest(RestConnector),
    /// A web admin, through headless Chromium.
    Browser(BrowserConnector),
    /// Records in memory, for tests and the demo.
    Memory(MemoryConnector),
}

impl From<SqliteConnector> for AnyConnector {
    fn from(connector: SqliteConnector) -> Self {
        AnyConnector::Sqlite(connector)
    }
}

impl From<CsvConnector> for AnyConnector {
    fn from(connector: CsvConnector) -> Self {
        AnyConnector::Csv(connector)
    }
}

impl From<RestConnector> for AnyConnector {
    fn from(connector: RestConnector) -> Self {
        AnyConnector::Rest(connector)
    }
}

impl From<MemoryConnector> for AnyConnector {
    fn from(connector: MemoryConnector) -> Self {
        AnyConnector::Memory(connector)
    }
}

impl Connector for AnyConnector {
    fn capabilities(&self) -> Capabilities {
        match self {
            AnyConnector::Sqlite(connector) => connector.capabilities(),
            AnyConnector::Csv(connector) => connector.capabilities(),
            AnyConnector::Rest(connector) => connector.capabilities(),
            AnyConnector::Browser(connector) => connector.capabilities(),
            AnyConnector::Memory(connector) => connector.capabilities(),
        }
    }

    async fn check(&mut self, paths: &[String]) -> Result<Probe, ConnectorError> {
        match self {
            AnyConnector::Sqlite(connector) => connector.check(paths).await,
            AnyConnector::Csv(connector) => connector.check(paths).await,
            AnyConnector::Rest(connector) => connector.check(paths).await,
            AnyConnector::Browser(connector) => connector.check(paths).await,
            AnyConnector::Memory(connector) => connector.check(paths).await,
        }
    }

    async fn read_page(
        &mut self,
        request: &ReadRequest,
        token: Option<&PageToken>,
    ) -> Result<Page, ConnectorError> {
        match self {
            AnyConnector::Sqlite(connector) => connector.read_page(request, token).await,
            AnyConnector::Csv(connector) => connector.read_page(request, token).await,
            AnyConnector::Rest(connector) => connector.read_page(request, token).await,
            AnyConnector::Browser(connector) => connector.read_page(request, token).await,
            AnyConnector::Memory(connector) => connector.read_page(request, token).await,
        }
    }

    async fn lookup(
        &mut self,
        paths: &[String],
        lookup: &Lookup,
    ) -> Result<Vec<ConnectorRecord>, ConnectorError> {
        match self {
            AnyConnector::Sqlite(connector) => connector.lookup(paths, lookup).await,
            AnyConnector::Csv(connector) => connector.lookup(paths, lookup).await,
            AnyConnector::Rest(connector) => connector.lookup(paths, lookup).await,
            AnyConnector::Browser(connector) => connector.lookup(paths, lookup).await,
            AnyConnector::Memory(connector) => connector.lookup(paths, lookup).await,
        }
    }

    async fn apply(
        &mut self,
        writes: &[Write],
    ) -> Result<Vec<Result<WriteOutcome, ConnectorError>>, ConnectorError> {
        match self {
            AnyConnector::Sqlite(connector) => connector.apply(writes).await,
            AnyConnector::Csv(connector) => connector.apply(writes).await,
            AnyConnector::Rest(connector) => connector.apply(writes).await,
            AnyConnector::Browser(connector) => connector.apply(writes).await,
            AnyConnector::Memory(connector) => connector.apply(writes).await,
        }
    }
}

/// Opens the connector `config` describes, with relative file paths resolved against
/// `base_dir` (the configuration file's directory, `Config::base_dir`).
///
/// # Errors
///
/// Fails as the connector's own `open` does: a missing file, a file that cannot be read.
pub fn open_connector(config: &ConnectorConfig, base_dir: &Path) -> Result<AnyConnector, ConnectorError> {
    match &config.kind {
        ConnectorKind::Sqlite(sqlite) => {
            let mut sqlite = sqlite.clone();
            sqlite.path = base_dir.join(&sqlite.path);
            SqliteConnector::open(sqlite).map(AnyConnector::Sqlite)
        }
        ConnectorKind::Csv(csv) => {
            let mut csv = csv.clone();
            csv.path = base_dir.join(&csv.path);
            CsvConnector::open(csv).map(AnyConnector::Csv)
        }
        ConnectorKind::Rest(rest) => RestConnector::open(rest).map(AnyConnector::Rest),
        ConnectorKind::Browser(browser) => {
            let screenshots =
                base_dir.join(browser.screenshots.clone().unwrap_or_else(|| "screenshots".into()));
            // Absolute, so that the path in a dead entry's message leads there from anywhere.
            let screenshots = std::path::absolute(&screenshots).unwrap_or(screenshots);
            BrowserConnector::open((**browser).clone(), screenshots).map(AnyConnector::Browser)
        }
    }
}
