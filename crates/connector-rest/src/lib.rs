//! The rest connector: records behind a JSON API — a list endpoint read a page at a time in
//! the paging style the API uses, records read and written at JSON paths, auth from the
//! environment, pacing and rate limits, and writes that are verified and never sent when
//! they would change nothing; change feeds read by sequence, whole documents written with their
//! revision. Presets (`wordpress`, `drf`) fill the settings in.

mod batch;
mod config;
mod connector;
mod http;
mod path;

pub use config::{
    Auth, Batch, Create, Current, Delete, Deleted, Empty, Feed, FullRead, KeyParam, Method, Modified, Order,
    Paging, Preset, Rate, RestConfig, Revision, RevisionIn, Settings, Since, TimeFormat, Verify,
};
pub use connector::RestConnector;
pub use fieldsync_connector::Secret;
pub use http::{
    Answer, Failure, RetryPolicy, answer_of, authorised, excerpt, http_client, plain as plain_error,
    retry_after, send_with_retries, shown as shown_url,
};
pub use path::FieldPath;
