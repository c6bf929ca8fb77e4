//! Reviews: listed a page at a time, shown with their record's audit trail, and decided by a
//! person (the next run applies the decision). Reads and writes the state store only.

use fieldsync_model::Reading;
use fieldsync_store::StateStore as _;
use fieldsync_store::{AuditEntry, Decision, ListQuery, Review, ReviewStatus};
use jiff::Timestamp;
use serde::Serialize;

use super::{Page, Workspace, WorkspaceError};

/// A review with its record's audit trail.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReviewDetail {
    /// The review.
    pub review: Review,
    /// Everything the audit holds about its record, in order.
    pub audit: Vec<AuditEntry>,
}

/// A person's decision on a review, as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Keep one side's value: `left`, `right`, or one of the link's connector names.
    Keep(String),
    /// Use this value on both sides; the field's rules must read it.
    Value(String),
}

/// A review decided.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Resolved {
    /// The review's number.
    pub review: i64,
    /// The decision stored.
    pub decision: Decision,
}

impl Workspace {
    /// A page of reviews, newest first: of one link or of all, open ones or with `all` every
    /// one; `limit` 0 for all.
    ///
    /// # Errors
    ///
    /// When the state store cannot be opened or read.
    pub fn reviews(
        &mut self,
        link: Option<&str>,
        all: bool,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Page<Review>, WorkspaceError> {
        let status = if all { None } else { Some(ReviewStatus::Open) };
        let scope = self.scope();
        let links = scope.as_deref();
        let page = self.store()?.reviews_page(ListQuery { link, links, status, before, limit })?;
        Ok(Page::new(page.rows, page.more, |review| review.id))
    }

    /// One review with its record's audit trail; the review keeps its values (a person decides
    /// from them), the trail is as the link's history keeps them now (`audit.values`).
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such review; `Store` when the state store fails.
    pub fn review(&mut self, id: i64) -> Result<ReviewDetail, WorkspaceError> {
        let review = self.store()?.review(id)?;
        self.in_scope(&review.link, "review", id)?;
        let audit = self.store()?.audit_for_record(&review.link, &review.review.key)?;
        let audit = super::as_kept(&self.config, &review.link, audit);
        Ok(ReviewDetail { review, audit })
    }

    /// Decides a review; the next run applies the decision. The decision is audited, with
    /// the name of the API token that decided when `token` names one.
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such review; `ReviewLinkGone`, `UnknownSide`, `WholeRecord`,
    /// `FieldGone` or `UnreadableValue` when the decision cannot apply; `ReviewClosed` when
    /// the review was closed already.
    pub fn resolve(
        &mut self,
        id: i64,
        resolution: Resolution,
        token: Option<&str>,
    ) -> Result<Resolved, WorkspaceError> {
        let review = self.store()?.review(id)?;
        self.in_scope(&review.link, "review", id)?;
        let Workspace { config, store, .. } = self;
        let store = super::open_store(config, store)?;
        let link = config
            .links
            .get(&review.link)
            .ok_or_else(|| WorkspaceError::ReviewLinkGone { id, link: review.link.clone() })?;
        let decision = match resolution {
            Resolution::Keep(keep) => match crate::config::side_named(&link.connectors, &keep) {
                Some(side) => Decision::Keep(side),
                None => {
                    return Err(WorkspaceError::UnknownSide {
                        given: keep,
                        left: link.connectors.left.clone(),
                        right: link.connectors.right.clone(),
                    });
                }
            },
            Resolution::Value(text) => {
                let Some(field_name) = &review.review.field else {
                    return Err(WorkspaceError::WholeRecord { id });
                };
                let field = link
                    .spec
                    .fields
                    .iter()
                    .find(|field| field.name == *field_name)
                    .ok_or_else(|| WorkspaceError::FieldGone { field: field_name.clone() })?;
                // A person's value must be one the field's rules read, not copied verbatim.
                match field.normalisers.left.read(&serde_json::Value::String(text)) {
                    Reading::Valid(value) => Decision::Value(value),
                    Reading::Copied(_, error) | Reading::Invalid(error) => {
                        return Err(WorkspaceError::UnreadableValue { message: error.to_string() });
                    }
                }
            }
        };
        if review.status == ReviewStatus::Closed {
            return Err(WorkspaceError::ReviewClosed { id });
        }
        let now = Timestamp::now();
        let mut audit = match token {
            Some(name) => AuditEntry::decided_by(&review, &decision, &format!("token {name:?}"), now),
            None => AuditEntry::decided(&review, &decision, now),
        };
        // Stored as the link's history keeps values: the decision and what it was about.
        link.spec.audit.keep(&review.link, &mut audit);
        store.decide_review(&review.link, id, &decision, &audit, now)?;
        Ok(Resolved { review: id, decision })
    }
}
