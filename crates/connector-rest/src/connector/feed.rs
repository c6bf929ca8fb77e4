//! The change feed of a rest connector with `feed`: reads after a sequence (or of the whole
//! feed, or of the listing after the feed's current sequence), and how far past a sequence the
//! feed holds nothing but this connector's own writes, so that a run need not read them back.

use std::collections::HashSet;

use fieldsync_connector::{ConnectorError, ConnectorRecord, Page, PageToken, ReadRequest, Sequence};
use fieldsync_model::RecordId;
use reqwest::Method;
use serde_json::Value;

use super::{RestConnector, at, field_paths, text_of};
use crate::config::{FeedSettings, FullRead};
use crate::http::Kind;
use crate::path::FieldPath;

/// Whether a change feed's row says it is a delete: `true`, `"true"` or `1`.
fn truthy(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(flag)) => *flag,
        Some(Value::String(text)) => text.eq_ignore_ascii_case("true"),
        Some(Value::Number(number)) => number.as_i64() == Some(1),
        _ => false,
    }
}

/// Where a listing of a connector with a feed goes on.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum FeedToken {
    /// The feed, after this sequence.
    Since(String),
    /// The listing (`full = "listing"`), at its own token, with the feed's sequence taken before
    /// its first page.
    Listing { sequence: String, next: String },
}

impl FeedToken {
    fn encode(&self) -> PageToken {
        PageToken(serde_json::to_string(self).unwrap_or_default())
    }

    fn decode(token: &PageToken, what: &str) -> Result<FeedToken, ConnectorError> {
        serde_json::from_str(&token.0).map_err(|error| ConnectorError::Malformed {
            what: what.to_string(),
            message: format!("a page token of this connector's feed cannot be read: {error}"),
        })
    }
}

impl RestConnector {
    /// One page of whatever a read asks for: the change feed after a sequence (an incremental
    /// read of a connector with a feed, or its full read of the whole feed), or the listing.
    pub(super) async fn page(
        &mut self,
        request: &ReadRequest,
        token: Option<&PageToken>,
        filter: &[(String, String)],
    ) -> Result<Page, ConnectorError> {
        let Some(feed) = self.settings.feed.clone() else {
            return self.list_page(request, token, filter).await;
        };
        self.written.clear();
        let paths = field_paths(request.paths.iter().map(String::as_str))?;
        let listing = |page: Page, sequence: String| Page {
            next: page
                .next
                .map(|next| FeedToken::Listing { sequence: sequence.clone(), next: next.0 }.encode()),
            records: page.records,
            sequence: Some(Sequence(sequence)),
        };
        match token.map(|token| FeedToken::decode(token, &self.what())).transpose()? {
            Some(FeedToken::Since(since)) => self.feed_page(&feed, &paths, Some(since), filter).await,
            Some(FeedToken::Listing { sequence, next }) => {
                let page = self.list_page(request, Some(&PageToken(next)), filter).await?;
                Ok(listing(page, sequence))
            }
            None => match (request.since_sequence(), feed.full) {
                (Some(since), _) => self.feed_page(&feed, &paths, Some(since.0.clone()), filter).await,
                (None, FullRead::Feed) => self.feed_page(&feed, &paths, feed.start.clone(), filter).await,
                (None, FullRead::Listing) => {
                    // Taken before the listing: whatever changes during it is read next time.
                    let sequence = self.current_sequence(&feed).await?;
                    let page = self.list_page(request, None, filter).await?;
                    Ok(listing(page, sequence))
                }
            },
        }
    }

    /// The feed's sequence now, from `feed.current`.
    pub(super) async fn current_sequence(&self, feed: &FeedSettings) -> Result<String, ConnectorError> {
        let Some((url, pointer)) = &feed.current else {
            return Err(ConnectorError::Misconfigured {
                message: format!("rest connector for {}: no `feed.current`", self.what()),
            });
        };
        let answer = self.http.send(Method::GET, url.clone(), None, None, Kind::Read).await?;
        if !answer.status.is_success() {
            return Err(answer.error("reading the feed's current sequence (`feed.current`)"));
        }
        let body = answer.json()?;
        at(&body, pointer).and_then(text_of).ok_or_else(|| ConnectorError::Malformed {
            what: answer.url.clone(),
            message: format!(
                "the answer holds no sequence at {pointer:?} (`feed.current.pointer`); it starts {:?}",
                crate::http::excerpt(&answer.body)
            ),
        })
    }

    /// One page of the change feed after `since` (from its start when `None`): each row a
    /// record, a deleted row a deleted record with its id and no values; the next page starts
    /// at the sequence this one reached, while pages come full and the sequence moves.
    pub(super) async fn feed_page(
        &self,
        feed: &FeedSettings,
        paths: &[FieldPath],
        since: Option<String>,
        filter: &[(String, String)],
    ) -> Result<Page, ConnectorError> {
        let answer = self.feed_rows(feed, since.as_deref(), filter).await?;
        let mut records = Vec::with_capacity(answer.rows.len());
        for row in &answer.rows {
            match feed_row(feed, row, &answer.url)? {
                Row::Skipped => {}
                // A delete names only its record; the engine finds it by that id.
                Row::Deleted(id) => records.push(ConnectorRecord {
                    id: RecordId::new(id),
                    values: vec![Value::Null; paths.len()],
                    modified: None,
                    deleted: true,
                }),
                Row::Document { id, document } => {
                    let record = self.record_with_id(document, paths, &answer.url, id.as_deref())?;
                    if let Some(id) = &id
                        && record.id.as_str() != id
                    {
                        return Err(ConnectorError::Malformed {
                            what: answer.url.clone(),
                            message: format!(
                                "a row names record {id} (`feed.id`) but its document holds id {} (`id`); a \
                                 record's id must be the one its item URL takes",
                                record.id
                            ),
                        });
                    }
                    records.push(record);
                }
            }
        }
        let next = (answer.rows.len() >= self.settings.page_size && since.as_ref() != Some(&answer.sequence))
            .then(|| FeedToken::Since(answer.sequence.clone()).encode());
        Ok(Page { records, next, sequence: Some(Sequence(answer.sequence)) })
    }

    /// One answer of the change feed after `since` (from its start when `None`), narrowed by
    /// `filter`'s query parameters.
    async fn feed_rows(
        &self,
        feed: &FeedSettings,
        since: Option<&str>,
        filter: &[(String, String)],
    ) -> Result<FeedAnswer, ConnectorError> {
        let settings = &self.settings;
        let mut url = feed.url.clone();
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in settings.query.iter().chain(filter) {
                query.append_pair(name, value);
            }
            if let Some(since) = since {
                query.append_pair(&feed.since_param, since);
            }
            query.append_pair(&feed.limit_param, &settings.page_size.to_string());
        }
        let answer = self.http.send(Method::GET, url, None, None, Kind::Read).await?;
        if !answer.status.is_success() {
            return Err(answer.error("reading the change feed"));
        }
        let mut body = answer.json()?;
        let malformed = |message: String| ConnectorError::Malformed { what: answer.url.clone(), message };
        if !matches!(at(&body, &feed.rows), Some(Value::Array(_))) {
            return Err(malformed(format!(
                "the feed's answer has no array of rows at {:?} (`feed.rows`); it starts {:?}",
                feed.rows,
                crate::http::excerpt(&answer.body)
            )));
        }
        let sequence = at(&body, &feed.sequence).and_then(text_of).ok_or_else(|| {
            malformed(format!(
                "the feed's answer has no sequence at {:?} (`feed.sequence`); it starts {:?}",
                feed.sequence,
                crate::http::excerpt(&answer.body)
            ))
        })?;
        let rows = if feed.rows.is_empty() {
            body.take()
        } else {
            body.pointer_mut(&feed.rows).map(Value::take).unwrap_or_default()
        };
        let Value::Array(rows) = rows else { unreachable!("the rows were found to be an array") };
        Ok(FeedAnswer { rows, sequence, url: answer.url.clone() })
    }

    /// The point of the feed past `since` up to which every row is this connector's own write
    /// of a record of `mine`, as read back right after it; see
    /// `Connector::feed_past_own_writes`. A row is that write when it deletes a record this
    /// connector deleted, or when its document holds the revision the read-back held (with
    /// `revision`; without it, the whole document the read-back held). Rows carry no sequence
    /// of their own here, so the cursor moves by whole answers of the feed: a page that holds
    /// anyone else's change is read again by the next run, with the own writes beside it.
    pub(super) async fn past_own_writes(
        &self,
        since: &Sequence,
        mine: &HashSet<RecordId>,
    ) -> Result<Option<Sequence>, ConnectorError> {
        let Some(feed) = &self.settings.feed else { return Ok(None) };
        if self.own.is_empty() {
            return Ok(None);
        }
        let mut past: Option<String> = None;
        loop {
            let from = past.clone().unwrap_or_else(|| since.0.clone());
            let answer = self.feed_rows(feed, Some(&from), &[]).await?;
            for row in &answer.rows {
                let own = match feed_row(feed, row, &answer.url)? {
                    Row::Skipped => true,
                    Row::Deleted(id) => {
                        let id = RecordId::new(id);
                        mine.contains(&id) && self.own.get(&id) == Some(&Own::Deleted)
                    }
                    Row::Document { id, document } => id.or_else(|| self.id_of(document)).is_some_and(|id| {
                        let id = RecordId::new(id);
                        mine.contains(&id)
                            && self
                                .own_marker(document)
                                .is_some_and(|held| self.own.get(&id) == Some(&Own::Read(held)))
                    }),
                };
                if !own {
                    return Ok(past.map(Sequence));
                }
            }
            let moved = answer.sequence != from;
            if moved {
                past = Some(answer.sequence);
            }
            if answer.rows.len() < self.settings.page_size || !moved {
                return Ok(past.map(Sequence));
            }
        }
    }

    /// What a record read back after this connector's write must hold again for a feed's row
    /// to be that write: its revision, or without `revision` the whole document; `None` when
    /// the document holds no revision, which tells nothing.
    pub(super) fn own_marker(&self, document: &Value) -> Option<Value> {
        match &self.settings.revision {
            Some(revision) => Some(revision.path.get(document)).filter(|held| !held.is_null()),
            None => Some(document.clone()),
        }
    }
}

/// One answer of the change feed: its rows, the sequence it reached, and its URL for messages.
struct FeedAnswer {
    rows: Vec<Value>,
    sequence: String,
    url: String,
}

/// What a row of the change feed says.
enum Row<'row> {
    /// A document whose id `skip_ids` passes over: no record.
    Skipped,
    /// A delete of the record with this id.
    Deleted(String),
    /// A record's document, with the id the row names, if it names one.
    Document { id: Option<String>, document: &'row Value },
}

/// Reads a row of the change feed answered at `url`.
fn feed_row<'row>(feed: &FeedSettings, row: &'row Value, url: &str) -> Result<Row<'row>, ConnectorError> {
    let malformed = |message: String| ConnectorError::Malformed { what: url.to_string(), message };
    let id = row.pointer(&feed.id).and_then(text_of);
    if id.as_deref().is_some_and(|id| feed.skip_ids.iter().any(|skip| id.starts_with(skip.as_str()))) {
        return Ok(Row::Skipped);
    }
    if truthy(row.pointer(&feed.deleted)) {
        let id = id.ok_or_else(|| {
            malformed(format!(
                "a deleted row has no id at {:?} (`feed.id`): {}",
                feed.id,
                crate::http::excerpt(&row.to_string())
            ))
        })?;
        return Ok(Row::Deleted(id));
    }
    let Some(document) = at(row, &feed.document).filter(|document| document.is_object()) else {
        return Err(malformed(format!(
            "a row has no document at {:?} (`feed.document`; does the feed need a parameter such as \
             include_docs=true in `query`?): {}",
            feed.document,
            crate::http::excerpt(&row.to_string())
        )));
    };
    Ok(Row::Document { id, document })
}

/// What the connector knows of a record it wrote since it was opened, for `past_own_writes`.
#[derive(Debug, PartialEq)]
pub(super) enum Own {
    /// Written, not read back yet.
    Unread,
    /// Read back after its write, holding this (`RestConnector::own_marker`).
    Read(Value),
    /// Deleted.
    Deleted,
}
