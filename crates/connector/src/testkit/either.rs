//! `Either`: one connector type over two, so that a test can run a link between connectors of
//! different kinds (a memory system and a rest API) without the app's closed `AnyConnector`.

use crate::Connector;

/// One of two connectors, dispatched by `match`.
#[derive(Debug)]
pub enum Either<L, R> {
    /// The first kind.
    Left(L),
    /// The second kind.
    Right(R),
}

crate::dispatch_connector!(impl[L: Connector, R: Connector] Connector for Either<L, R> { Left, Right });
