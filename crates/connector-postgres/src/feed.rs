//! The postgres connector's change feed (`notify = "CHANNEL"`): a connection that listens on
//! the channel, each notification's payload the id of the record that changed (or empty), as
//! the trigger in the README sends them.

use fieldsync_connector::{BoxFuture, ChangeFeed, FeedOpener};
use fieldsync_postgres::Listener;

use crate::PostgresConfig;

/// Opens a listener on `config`'s channel, again each time it is called.
pub(crate) fn opener(config: &PostgresConfig, channel: &str) -> FeedOpener {
    let (config, channel) = (config.clone(), channel.to_string());
    Box::new(move || {
        let (config, channel) = (config.clone(), channel.clone());
        Box::pin(async move {
            let listener = fieldsync_postgres::listen(config.url.expose(), &channel)
                .await
                .map_err(|error| crate::connector::connect_error(&config, &error))?;
            Ok(Box::new(Notifications(listener)) as Box<dyn ChangeFeed>)
        })
    })
}

/// The notifications of one channel.
struct Notifications(Listener);

impl ChangeFeed for Notifications {
    fn next(&mut self) -> BoxFuture<'_, Option<Vec<String>>> {
        Box::pin(async move {
            let payload = self.0.next().await?;
            let id = payload.trim();
            Some(if id.is_empty() { Vec::new() } else { vec![id.to_string()] })
        })
    }
}
