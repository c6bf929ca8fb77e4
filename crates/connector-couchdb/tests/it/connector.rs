//! The conformance suite against club databases of a real pouchdb-server: members picked by a
//! type field with hard deletes, and by a Mango selector with a soft-delete field.

use fieldsync_connector::testkit;

use crate::{ClubFixture, Style, server};

#[tokio::test]
async fn conformance_by_type_with_hard_deletes() {
    if server().is_none() {
        return;
    }
    testkit::run_all(&mut ClubFixture::new(Style::Typed), &["incremental_read"]).await;
}

#[tokio::test]
async fn conformance_by_selector_with_soft_deletes() {
    if server().is_none() {
        return;
    }
    testkit::run_all(&mut ClubFixture::new(Style::SelectorSoftDelete), &["incremental_read"]).await;
}
