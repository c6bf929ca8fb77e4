//! `Either`: one connector type over two, so that a test can run a link between connectors of
//! different kinds (a memory system and a rest API) without the app's closed `AnyConnector`.

use crate::{
    Capabilities, Connector, ConnectorError, ConnectorRecord, Lookup, Page, PageToken, Probe, ReadRequest,
    Write, WriteOutcome,
};

/// One of two connectors, dispatched by `match`.
#[derive(Debug)]
pub enum Either<L, R> {
    /// The first kind.
    Left(L),
    /// The second kind.
    Right(R),
}

impl<L: Connector, R: Connector> Connector for Either<L, R> {
    fn capabilities(&self) -> Capabilities {
        match self {
            Either::Left(connector) => connector.capabilities(),
            Either::Right(connector) => connector.capabilities(),
        }
    }

    async fn check(&mut self, paths: &[String]) -> Result<Probe, ConnectorError> {
        match self {
            Either::Left(connector) => connector.check(paths).await,
            Either::Right(connector) => connector.check(paths).await,
        }
    }

    async fn read_page(
        &mut self,
        request: &ReadRequest,
        token: Option<&PageToken>,
    ) -> Result<Page, ConnectorError> {
        match self {
            Either::Left(connector) => connector.read_page(request, token).await,
            Either::Right(connector) => connector.read_page(request, token).await,
        }
    }

    async fn lookup(
        &mut self,
        paths: &[String],
        lookup: &Lookup,
    ) -> Result<Vec<ConnectorRecord>, ConnectorError> {
        match self {
            Either::Left(connector) => connector.lookup(paths, lookup).await,
            Either::Right(connector) => connector.lookup(paths, lookup).await,
        }
    }

    async fn apply(
        &mut self,
        writes: &[Write],
    ) -> Result<Vec<Result<WriteOutcome, ConnectorError>>, ConnectorError> {
        match self {
            Either::Left(connector) => connector.apply(writes).await,
            Either::Right(connector) => connector.apply(writes).await,
        }
    }
}
