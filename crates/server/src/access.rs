//! Who a request comes from: the `[[server.tokens]]` entry a presented token matches, compared
//! in constant time, and what its role lets it do. The API's bearer tokens and the
//! dashboard's login both ask here, so that there is one token check.

use axum::http::Method;
use fieldsync_app::Config;
use fieldsync_app::config::Role;
use subtle::ConstantTimeEq;

/// The token a request was made with, by its name (never the token itself), and its role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The token's `name`, for the audit and the log.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The one organisation it sees and acts on, if it is limited to one.
    pub organisation: Option<String>,
}

impl Caller {
    /// The organisation a request of this caller is limited to: its own when its token is
    /// limited to one, else the one `asked` for (`?org=`), if any.
    ///
    /// # Errors
    ///
    /// The organisation asked for, when the token is limited to another.
    pub fn organisation(&self, asked: Option<&str>) -> Result<Option<String>, String> {
        match (&self.organisation, asked) {
            (Some(own), Some(asked)) if own != asked => {
                Err(format!("the token {:?} is limited to organisation {own}, not {asked}", self.name))
            }
            (Some(own), _) => Ok(Some(own.clone())),
            (None, asked) => Ok(asked.map(str::to_string)),
        }
    }

    /// Whether the caller may act (start runs and plans, decide reviews, settle outbox
    /// entries), not only read.
    pub fn may_act(&self) -> bool {
        self.role >= Role::Operate
    }
}

/// The caller whose token `presented` is, if it is one of `config`'s. Every token is compared,
/// each in constant time, so that the time taken tells nothing of how much of one matched.
pub(crate) fn caller(config: &Config, presented: &str) -> Option<Caller> {
    let mut matched = None;
    for token in &config.server.tokens {
        if bool::from(token.token.expose().as_bytes().ct_eq(presented.as_bytes())) {
            matched = Some(token);
        }
    }
    matched.filter(|_| !presented.is_empty()).map(|token| Caller {
        name: token.name.clone(),
        role: token.role,
        organisation: token.organisation.clone(),
    })
}

/// The caller a token named `name` is now, if `config` still has it (a dashboard session
/// lasts only while its token does, with the role it has now).
pub(crate) fn caller_named(config: &Config, name: &str) -> Option<Caller> {
    config.server.tokens.iter().find(|token| token.name == name).map(|token| Caller {
        name: token.name.clone(),
        role: token.role,
        organisation: token.organisation.clone(),
    })
}

/// `a` and `b` are the same bytes, compared in constant time (for CSRF tokens and session
/// ids; lengths may differ, and then they are not).
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Whether a request with `method` acts (anything but `GET` and `HEAD`).
pub(crate) fn acts(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}
