//! Connecting, classifying failures and listening, against a real PostgreSQL started from the
//! system's packages.

use std::time::Duration;

use fieldsync_connector::testkit::postgres::PostgresServer;
use fieldsync_postgres::{block_on, connect, is_retryable, listen};

/// How long a test waits for the server to answer or a notification to arrive.
const PATIENCE: Duration = Duration::from_secs(30);

/// The server, or `None` after a `SKIPPED:` line when the system has no PostgreSQL.
fn server() -> Option<PostgresServer> {
    PostgresServer::start()
}

#[test]
fn a_violated_check_is_final_and_a_dropped_connection_is_retryable() {
    let Some(server) = server() else { return };
    server.create_database("club");
    server.sql("club", "CREATE TABLE members (id text PRIMARY KEY, age integer CHECK (age >= 0))");
    let url = server.url("club");
    let client = block_on(connect(&url)).expect("connect");
    let error = block_on(client.execute("INSERT INTO members VALUES ('M001', -4)", &[])).unwrap_err();
    assert!(!is_retryable(&error), "{error:?}");

    let other = block_on(connect(&url)).expect("a second connection");
    let pid: i32 = block_on(client.query_one("SELECT pg_backend_pid()", &[])).expect("pid").get(0);
    block_on(other.execute("SELECT pg_terminate_backend($1)", &[&pid])).expect("terminate");
    // The termination reaches the client's socket in its own time: ask until it fails.
    let error = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            block_on(client.query_one("SELECT 1", &[])).err()
        })
        .expect("the terminated connection fails");
    assert!(is_retryable(&error), "{error:?}");
}

#[tokio::test]
async fn a_listener_gets_each_notification_and_learns_when_its_connection_ends() {
    let Some(server) = server() else { return };
    server.create_database("club");
    let url = server.url("club");
    let mut listener = listen(&url, "members_changed").await.expect("listen");
    let client = connect(&url).await.expect("connect");
    client.execute("SELECT pg_notify('members_changed', 'M001')", &[]).await.expect("notify");
    client.execute("SELECT pg_notify('other_channel', 'X')", &[]).await.expect("notify elsewhere");
    client.execute("SELECT pg_notify('members_changed', 'M002')", &[]).await.expect("notify");
    let first = tokio::time::timeout(PATIENCE, listener.next()).await.expect("in time");
    let second = tokio::time::timeout(PATIENCE, listener.next()).await.expect("in time");
    assert_eq!((first.as_deref(), second.as_deref()), (Some("M001"), Some("M002")));

    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("end the listener's session");
    let ended = tokio::time::timeout(PATIENCE, listener.next()).await.expect("in time");
    assert_eq!(ended, None, "the listener learns that its connection ended");
}
