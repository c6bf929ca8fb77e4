//! The conformance suite against club databases of a real pouchdb-server: members picked by a
//! type field with hard deletes, and by a Mango selector with a soft-delete field.

use fieldsync_connector::testkit;

use crate::{ClubFixture, Style, server};

/// Runs the conformance suite against a club database of `style`, which skips exactly the
/// incremental read by modification time (the connector reads changes by sequence); does
/// nothing when there is no pouchdb-server (`server` has said so).
async fn conformance(style: Style) {
    if server().is_none() {
        return;
    }
    testkit::run_all(&mut ClubFixture::new(style), &["incremental_read"]).await;
}

#[tokio::test]
async fn conformance_by_type_with_hard_deletes() {
    conformance(Style::Typed).await;
}

#[tokio::test]
async fn conformance_by_selector_with_soft_deletes() {
    conformance(Style::SelectorSoftDelete).await;
}
