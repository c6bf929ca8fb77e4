//! What fieldsync's PostgreSQL connector and state store share: [`connect`] from a URL (TLS
//! through rustls when the URL's `sslmode` asks for it or the server offers it), the one
//! thread that drives every connection's socket, [`block_on`] for the synchronous state store,
//! [`quote_ident`] for identifiers taken from configuration, and [`is_retryable`], which tells a
//! failure worth retrying from one that will fail again.
//!
//! Every connection's socket is driven by a background thread of its own (a current-thread
//! Tokio runtime started on first use), not by the caller's runtime. A `Client`'s requests only
//! send and await messages on channels, so the same client serves async code (the connector),
//! synchronous code (the state store through [`block_on`]) and a synchronous call made from
//! inside async code, on any runtime flavour, without "a runtime within a runtime".

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio::runtime::Handle;

pub use tokio_postgres;
pub use tokio_postgres::error::SqlState;
pub use tokio_postgres::{Client, Error};

/// A PostgreSQL connection URL (`postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=…`, or
/// the `key=value` form). Its `Debug` and `Display` show the user, hosts, ports and database
/// only, never the password, so that a configuration, an error or a log line can name it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL itself, password included: only for making the connection.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL as tokio-postgres reads it (an `sslmode` of `verify-ca` or `verify-full` as
    /// `require`, the certificate checks aside).
    ///
    /// # Errors
    ///
    /// What is wrong with it: tokio-postgres's own message, which names an option but never
    /// its value; or an `@` in the user or password that is not written `%40`, which would
    /// read part of the password as the host.
    pub fn parse(&self) -> Result<tokio_postgres::Config, UrlError> {
        let authority =
            self.0.split_once("://").map_or("", |(_, rest)| rest.split(['/', '?']).next().unwrap_or(""));
        if authority.matches('@').count() > 1 {
            return Err(UrlError(
                "its user or password holds an @: write it as %40 (percent-encoded)".into(),
            ));
        }
        verification(&self.0).0.parse().map_err(|error: Error| UrlError(error.to_string()))
    }

    /// `postgres://USER@HOST:PORT/DATABASE`, from what the URL says: no password, no options.
    pub fn redacted(&self) -> String {
        let Ok(config) = self.parse() else {
            return "an unreadable PostgreSQL URL".to_string();
        };
        let user = config.get_user().map(|user| format!("{user}@")).unwrap_or_default();
        let ports = config.get_ports();
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(index, host)| {
                let host = match host {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                };
                // One port serves every host; otherwise each host has its own.
                match ports.get(index).or_else(|| (ports.len() == 1).then(|| &ports[0])) {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                }
            })
            .collect();
        let database = config.get_dbname().unwrap_or_default();
        format!("postgres://{user}{}/{database}", hosts.join(","))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.redacted())
    }
}

impl fmt::Debug for DatabaseUrl {
    /// As `Display`: a configuration printed for debugging shows no password either.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "DatabaseUrl({:?})", self.redacted())
    }
}

/// What is wrong with a PostgreSQL URL; never holds the URL or any part of it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(String);

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not a PostgreSQL connection string.
    #[error("not a PostgreSQL URL")]
    Url(#[source] UrlError),
    /// The server could not be reached, refused the login or the TLS handshake failed.
    #[error("cannot connect to PostgreSQL")]
    Connect(#[source] Error),
    /// The system's certificate verifier could not be set up.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

impl ConnectError {
    /// Whether trying again later may succeed (the server is down or starting), as opposed to
    /// a URL, a password or a TLS setup that will fail again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect(error) => is_retryable(error),
            Self::Url(_) | Self::Tls(_) => false,
        }
    }
}

/// Connects to the server `url` names (`postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=…`
/// or the `key=value` form). The connection's socket is driven by the background thread, so
/// the client can be used from any thread and any runtime.
///
/// With `sslmode=require` the connection is encrypted or fails; with `prefer` (the default) it
/// is encrypted when the server offers TLS; with `disable` it is not. Certificates are checked
/// against the system's roots.
///
/// # Errors
///
/// A malformed URL, an unreachable server, a refused login or a failed TLS handshake. The
/// error never holds the URL, so it cannot leak the password.
pub async fn connect(url: &str) -> Result<Client, ConnectError> {
    open(url, None).await
}

/// A connection that listens on one channel (`LISTEN`): what a `notify` setting asks for.
pub struct Listener {
    /// Keeps the connection open; the notifications arrive through the driver.
    _client: Client,
    notifications: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Listener {
    /// The next notification's payload; `None` once the connection has ended (the server went
    /// away, or an administrator ended the session), after which notifications may have been
    /// missed.
    pub async fn next(&mut self) -> Option<String> {
        self.notifications.recv().await
    }
}

/// Connects as [`connect`] does and listens on `channel` (a plain identifier, checked by the
/// caller's configuration; quoted here).
///
/// # Errors
///
/// As [`connect`]; or the `LISTEN` itself failed (a permission, a name too long).
pub async fn listen(url: &str, channel: &str) -> Result<Listener, ConnectError> {
    let (sender, notifications) = tokio::sync::mpsc::unbounded_channel();
    let client = open(url, Some(sender)).await?;
    client.batch_execute(&format!("LISTEN {}", quote_ident(channel))).await.map_err(ConnectError::Connect)?;
    Ok(Listener { _client: client, notifications })
}

/// Connects to `url` and drives the connection on the driver's thread until it ends, passing
/// the payload of each notification to `notifications` when given.
async fn open(
    url: &str,
    notifications: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Result<Client, ConnectError> {
    let config = DatabaseUrl::new(url).parse().map_err(ConnectError::Url)?;
    let tls = tls(verification(url).1)?;
    let connecting = driver().spawn(async move {
        let (client, mut connection) = config.connect(tls).await?;
        tokio::spawn(async move {
            // Polling for messages is what drives the connection. A connection that ends with
            // an error fails the client's next request, which reports it.
            while let Some(Ok(message)) =
                std::future::poll_fn(|context| connection.poll_message(context)).await
            {
                if let (tokio_postgres::AsyncMessage::Notification(notification), Some(sender)) =
                    (message, &notifications)
                    && sender.send(notification.payload().to_string()).is_err()
                {
                    break;
                }
            }
        });
        Ok(client)
    });
    let client = match connecting.await {
        Ok(connected) => connected.map_err(ConnectError::Connect)?,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    };
    // fieldsync's transactions never wait on anything but the database between two
    // statements: one idle this long belongs to a process that was stopped (SIGSTOP, a frozen
    // machine), and the server ends it, so that its row locks (a lease's, a member's) do not
    // keep the other workers waiting until it wakes.
    client
        .batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = {}",
            IDLE_IN_TRANSACTION.as_millis()
        ))
        .await
        .map_err(ConnectError::Connect)?;
    Ok(client)
}

/// How long a session of fieldsync's may sit idle inside a transaction before the server ends
/// it (see `open`).
pub const IDLE_IN_TRANSACTION: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for `future` on the calling thread: for synchronous code (the state store) that
/// talks to PostgreSQL through a [`Client`]. Safe inside async code too, where it blocks the
/// thread as a synchronous database call would (fieldsync's engine makes such calls through
/// `block_in_place` on a multi-threaded runtime).
pub fn block_on<F: Future>(future: F) -> F::Output {
    futures_executor::block_on(future)
}

/// `name` quoted as an SQL identifier: in double quotes, each double quote doubled. Names
/// taken from configuration are checked before (`is_plain_identifier`); quoting keeps their case
/// and keeps any word PostgreSQL reserves from being read as one.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether `name` is a name fieldsync accepts for a schema, table or column from configuration:
/// 1 to 63 bytes (PostgreSQL's limit) of letters, digits, `_` and `$`, not starting with a
/// digit or `$`.
pub fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|first| first.is_alphabetic() || first == '_');
    first_ok && name.len() <= 63 && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

/// Whether trying again may succeed: the connection dropped or could not be made, the server
/// is shutting down, starting or out of connections, or the transaction lost a serialization
/// conflict, a deadlock or a lock wait. Constraint violations, type errors and permissions fail
/// the same way again.
pub fn is_retryable(error: &Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => {
            let class = &code.code()[..2];
            // 08: connection exception; 40: transaction rollback (serialization failure,
            // deadlock); 53: insufficient resources; 57: operator intervention (shutdown,
            // cannot connect now); 55P03: lock not available.
            matches!(class, "08" | "40" | "53" | "57") || *code == SqlState::LOCK_NOT_AVAILABLE
        }
        // No SQLSTATE: the socket failed or timed out, not the statement.
        None => error.as_db_error().is_none(),
    }
}

/// The runtime whose one thread drives every connection's socket, started on first use.
fn driver() -> &'static Handle {
    static DRIVER: OnceLock<Handle> = OnceLock::new();
    DRIVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a Tokio runtime for PostgreSQL's connections");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("fieldsync-postgres".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("a thread for PostgreSQL's connections");
        handle
    })
}

/// How a connection checks the server's certificate, from the URL's `sslmode` as libpq reads
/// it: `verify-full` (and `verify-ca`, checked as strictly) against the system's roots and the
/// host's name; `prefer` and `require` encrypt without checking who answers, as libpq does
/// (a server with a self-signed certificate, as Debian's packages set one up, is reached).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verify {
    /// The certificate is checked against the system's roots and the host name.
    Certificate,
    /// Encryption only.
    Nothing,
}

/// Reads the `sslmode` tokio-postgres does not know (`verify-ca`, `verify-full`) out of `url`:
/// the URL tokio-postgres is given (with `require` in their place) and how to check the
/// certificate.
fn verification(url: &str) -> (std::borrow::Cow<'_, str>, Verify) {
    for strict in ["sslmode=verify-full", "sslmode=verify-ca"] {
        if url.contains(strict) {
            return (url.replace(strict, "sslmode=require").into(), Verify::Certificate);
        }
    }
    (url.into(), Verify::Nothing)
}

/// The TLS set-up of a connection that checks as `verify` says: rustls with `ring`,
/// certificates checked by the platform's verifier against the system's roots. Each is made
/// once.
fn tls(verify: Verify) -> Result<tokio_postgres_rustls::MakeRustlsConnect, ConnectError> {
    type Made = OnceLock<Result<Arc<rustls::ClientConfig>, String>>;
    static CHECKING: Made = OnceLock::new();
    static ENCRYPTING: Made = OnceLock::new();
    let made = match verify {
        Verify::Certificate => &CHECKING,
        Verify::Nothing => &ENCRYPTING,
    };
    let config = made.get_or_init(|| {
        use rustls_platform_verifier::BuilderVerifierExt;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?;
        let config = match verify {
            Verify::Certificate => builder.with_platform_verifier().map_err(|error| error.to_string())?,
            Verify::Nothing => {
                builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            }
        };
        Ok(Arc::new(config.with_no_client_auth()))
    });
    match config {
        Ok(config) => Ok(tokio_postgres_rustls::MakeRustlsConnect::new(rustls::ClientConfig::clone(config))),
        Err(message) => Err(ConnectError::Tls(message.clone())),
    }
}

/// Accepts any certificate (`sslmode=prefer` or `require`), while still checking that the
/// handshake is signed by the key of the certificate the server sent.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &rustls::pki_types::CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &rustls::pki_types::CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_with_their_quotes_doubled() {
        assert_eq!(quote_ident("members"), "\"members\"");
        assert_eq!(quote_ident("Order"), "\"Order\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn plain_identifiers_are_letters_digits_and_underscores_not_starting_with_a_digit() {
        for good in ["members", "_private", "Mitglieder", "year2024", "price$"] {
            assert!(is_plain_identifier(good), "{good}");
        }
        for bad in ["", "2024", "$x", "a b", "a;drop", "a\"b", "a.b", &"x".repeat(64)] {
            assert!(!is_plain_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn only_verify_modes_check_the_certificate_as_libpq_does() {
        let (url, verify) = verification("postgres://sync@db.example/club?sslmode=verify-full");
        assert_eq!(
            (url.as_ref(), verify),
            ("postgres://sync@db.example/club?sslmode=require", Verify::Certificate)
        );
        let (url, verify) = verification("host=db.example sslmode=verify-ca user=sync");
        assert_eq!(
            (url.as_ref(), verify),
            ("host=db.example sslmode=require user=sync", Verify::Certificate)
        );
        for plain in
            ["postgres://sync@db/club?sslmode=require", "postgres://sync@db/club", "host=db sslmode=prefer"]
        {
            assert_eq!(verification(plain), (plain.into(), Verify::Nothing), "{plain}");
        }
        assert!(DatabaseUrl::new("postgres://sync@db/club?sslmode=verify-full").parse().is_ok());
    }

    #[test]
    fn an_unencoded_at_sign_in_a_password_is_refused_without_showing_any_of_it() {
        let url = DatabaseUrl::new("postgres://sync:land@2024:x@db.example:5432/club");
        let problem = url.parse().unwrap_err().to_string();
        assert!(problem.contains("%40"), "{problem}");
        for shown in [problem, url.to_string(), format!("{url:?}")] {
            assert!(!shown.contains("land") && !shown.contains("2024"), "{shown}");
        }
        let encoded = DatabaseUrl::new("postgres://sync:land%402024%3Ax@db.example:5432/club");
        assert_eq!(encoded.to_string(), "postgres://sync@db.example:5432/club");
    }

    #[test]
    fn a_malformed_url_is_refused_before_connecting() {
        let error = block_on(connect("postgres://u:secret@host:notaport/db")).unwrap_err();
        assert!(matches!(error, ConnectError::Url(_)), "{error:?}");
        assert!(!error.to_string().contains("secret"), "{error}");
        assert!(!error.is_retryable());
    }

    #[test]
    fn a_server_that_is_not_there_is_retryable() {
        // A port nothing listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("postgres://u:secret@127.0.0.1:{port}/db?sslmode=disable&connect_timeout=5");
        let error = block_on(connect(&url)).unwrap_err();
        assert!(matches!(error, ConnectError::Connect(_)), "{error:?}");
        assert!(error.is_retryable(), "{error:?}");
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
