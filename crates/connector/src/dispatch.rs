//! `dispatch_connector!`: implements `Connector` for an enum whose every variant holds a
//! connector, by `match`, without boxing — for the app's `AnyConnector` and the testkit's
//! `Either`, so a change to the trait is made once.

/// Implements `Connector` for an enum of connectors: `dispatch_connector!(impl[GENERICS]
/// Connector for TYPE { Variant, … })`, each variant a tuple variant holding one connector.
#[macro_export]
macro_rules! dispatch_connector {
    (impl[$($generics:tt)*] Connector for $enum:ty { $($variant:ident),+ $(,)? }) => {
        impl<$($generics)*> $crate::Connector for $enum {
            fn capabilities(&self) -> $crate::Capabilities {
                match self {
                    $(Self::$variant(connector) => connector.capabilities(),)+
                }
            }

            async fn check(&mut self, paths: &[String]) -> Result<$crate::Probe, $crate::ConnectorError> {
                match self {
                    $(Self::$variant(connector) => connector.check(paths).await,)+
                }
            }

            async fn read_page(
                &mut self,
                request: &$crate::ReadRequest,
                token: Option<&$crate::PageToken>,
            ) -> Result<$crate::Page, $crate::ConnectorError> {
                match self {
                    $(Self::$variant(connector) => connector.read_page(request, token).await,)+
                }
            }

            async fn lookup(
                &mut self,
                paths: &[String],
                lookup: &$crate::Lookup,
            ) -> Result<Vec<$crate::ConnectorRecord>, $crate::ConnectorError> {
                match self {
                    $(Self::$variant(connector) => connector.lookup(paths, lookup).await,)+
                }
            }

            async fn apply(
                &mut self,
                writes: &[$crate::Write],
            ) -> Result<$crate::WriteResults, $crate::ConnectorError> {
                match self {
                    $(Self::$variant(connector) => connector.apply(writes).await,)+
                }
            }

            async fn feed_past_own_writes(
                &mut self,
                since: &$crate::Sequence,
                mine: &std::collections::HashSet<$crate::DispatchRecordId>,
            ) -> Result<Option<$crate::Sequence>, $crate::ConnectorError> {
                match self {
                    $(Self::$variant(connector) => connector.feed_past_own_writes(since, mine).await,)+
                }
            }
        }
    };
}
