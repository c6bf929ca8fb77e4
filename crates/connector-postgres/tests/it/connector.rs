//! The conformance suite against members tables of a real PostgreSQL: keyed by a serial id or
//! by text, deleting hard or soft, read from the table or through a view, with and without a
//! modified column.

use fieldsync_connector::testkit;

use crate::{ClubFixture, KeyStyle, server};

/// Runs the conformance suite against `fixture`, which skips exactly `expected_skips`; does
/// nothing when there is no PostgreSQL server (`server` has said so).
async fn conformance(mut fixture: ClubFixture, expected_skips: &[&str]) {
    if server().is_none() {
        return;
    }
    testkit::run_all(&mut fixture, expected_skips).await;
}

#[tokio::test]
async fn conformance_with_a_serial_key_and_hard_deletes() {
    conformance(ClubFixture::new(KeyStyle::Serial), &["sequence_read"]).await;
}

#[tokio::test]
async fn conformance_with_a_text_key_and_soft_deletes() {
    let fixture = ClubFixture { soft_delete: true, ..ClubFixture::new(KeyStyle::Text) };
    conformance(fixture, &["sequence_read"]).await;
}

#[tokio::test]
async fn conformance_reading_through_a_view_and_writing_the_table() {
    let fixture = ClubFixture { view: true, soft_delete: true, ..ClubFixture::new(KeyStyle::Serial) };
    conformance(fixture, &["sequence_read"]).await;
}

#[tokio::test]
async fn conformance_without_a_modified_column() {
    let fixture = ClubFixture { modified: false, ..ClubFixture::new(KeyStyle::Text) };
    conformance(fixture, &["sequence_read", "incremental_read"]).await;
}
