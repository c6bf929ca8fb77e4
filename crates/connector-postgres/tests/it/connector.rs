//! The conformance suite against members tables of a real PostgreSQL: keyed by a serial id or
//! by text, deleting hard or soft, read from the table or through a view, with and without a
//! modified column.

use fieldsync_connector::testkit;

use crate::{ClubFixture, KeyStyle, server};

#[tokio::test]
async fn conformance_with_a_serial_key_and_hard_deletes() {
    if server().is_none() {
        return;
    }
    testkit::run_all(&mut ClubFixture::new(KeyStyle::Serial), &["sequence_read"]).await;
}

#[tokio::test]
async fn conformance_with_a_text_key_and_soft_deletes() {
    if server().is_none() {
        return;
    }
    let mut fixture = ClubFixture::new(KeyStyle::Text);
    fixture.soft_delete = true;
    testkit::run_all(&mut fixture, &["sequence_read"]).await;
}

#[tokio::test]
async fn conformance_reading_through_a_view_and_writing_the_table() {
    if server().is_none() {
        return;
    }
    let mut fixture = ClubFixture::new(KeyStyle::Serial);
    fixture.view = true;
    fixture.soft_delete = true;
    testkit::run_all(&mut fixture, &["sequence_read"]).await;
}

#[tokio::test]
async fn conformance_without_a_modified_column() {
    if server().is_none() {
        return;
    }
    let mut fixture = ClubFixture::new(KeyStyle::Text);
    fixture.modified = false;
    testkit::run_all(&mut fixture, &["sequence_read", "incremental_read"]).await;
}
