//! Batch writes (`batch`, WordPress's `/wp-json/batch/v1`): creates go `size` at a time in one
//! request with `validation = "normal"`, so that WordPress runs each on its own and answers each
//! with its own status. A refused create is that record's rejection only; the others land.

use fieldsync_connector::{ConnectorError, Write, WriteOutcome};
use fieldsync_model::RecordId;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::connector::{Fetched, RestConnector};
use crate::http::{Answer, Kind, excerpt};

/// One write's result, with the record its answer held.
pub(crate) type Written = Result<(WriteOutcome, Option<Fetched>), ConnectorError>;

impl RestConnector {
    /// Spawns one task per batch of `creates` (by their index among the writes); each task
    /// returns the results of its batch. The sender's `concurrency` holds for batches as for
    /// single requests.
    pub(crate) fn spawn_batches(
        &self,
        tasks: &mut JoinSet<Vec<(usize, Written)>>,
        creates: Vec<(usize, Write)>,
    ) {
        let Some((_, _, size)) = &self.settings.batch else { return };
        for chunk in creates.chunks(*size) {
            let connector = self.shallow();
            let chunk = chunk.to_vec();
            tasks.spawn(async move { connector.send_batch(chunk).await });
        }
    }

    /// Sends one batch of creates and maps each sub-response to its create's result.
    async fn send_batch(&self, creates: Vec<(usize, Write)>) -> Vec<(usize, Written)> {
        let Some((url, path, _)) = &self.settings.batch else {
            unreachable!("batches are spawned only with `batch` configured")
        };
        let mut results = Vec::new();
        let mut sent = Vec::new();
        let mut requests = Vec::new();
        for (index, write) in creates {
            let Write::Create { fields } = &write else { unreachable!("only creates are sent in batches") };
            match self.create_body(fields).await {
                Ok(body) => {
                    requests.push(json!({ "method": "POST", "path": path, "body": body }));
                    sent.push((index, fields.clone()));
                }
                Err(error) => results.push((index, Err(error))),
            }
        }
        if requests.is_empty() {
            return results;
        }
        let body = json!({ "validation": "normal", "requests": requests });
        let answer = match self.http.send(Method::POST, url.clone(), Some(&body), None, Kind::Create).await {
            Ok(answer) => answer,
            Err(error) => {
                for (index, fields) in sent {
                    results.push((index, Err(self.made_anyway(&fields, error.for_each_write()).await)));
                }
                return results;
            }
        };
        let responses = match answer.json() {
            Ok(body) if answer.status.is_success() => match body.get("responses") {
                Some(Value::Array(responses)) if responses.len() == sent.len() => Ok(responses.clone()),
                _ => Err(ConnectorError::Malformed {
                    what: answer.url.clone(),
                    message: format!(
                        "a batch of {} creates was not answered with as many responses: {}",
                        sent.len(),
                        excerpt(&answer.body)
                    ),
                }),
            },
            Ok(_) => Err(answer.error("sending a batch of creates")),
            Err(error) => Err(error),
        };
        // A create that failed may have made its record all the same (WordPress inserts the post
        // before storing its meta): found by its key, it is `AlreadyExists` and completed.
        for (position, (index, fields)) in sent.into_iter().enumerate() {
            let result = match &responses {
                Ok(responses) => self.batch_result(&answer, responses[position].clone()),
                Err(error) => Err(error.for_each_write()),
            };
            let result = match result {
                Err(error) => Err(self.made_anyway(&fields, error).await),
                ok => ok,
            };
            results.push((index, result));
        }
        results
    }

    /// One create's result from its sub-response (`{"status": 201, "body": {…}}`).
    fn batch_result(&self, answer: &Answer, response: Value) -> Written {
        let status =
            response.get("status").and_then(Value::as_u64).and_then(|status| u16::try_from(status).ok());
        let status = status.and_then(|status| StatusCode::from_u16(status).ok());
        let body = response.get("body").cloned().unwrap_or(Value::Null);
        let malformed = |message: String| ConnectorError::Malformed { what: answer.url.clone(), message };
        match status {
            Some(status) if status.is_success() => {
                let id = self.id_of(&body).ok_or_else(|| {
                    malformed(format!(
                        "a create in a batch was answered without the new record's id at {}: {}",
                        self.settings.id,
                        excerpt(&body.to_string())
                    ))
                })?;
                let fetched = body.is_object().then_some(Fetched { record: body, etag: None });
                Ok((WriteOutcome { id: RecordId::new(id) }, fetched))
            }
            Some(status) => {
                let refused = Answer {
                    status,
                    headers: HeaderMap::new(),
                    body: body.to_string(),
                    url: answer.url.clone(),
                };
                Err(refused.error("creating a record"))
            }
            None => Err(malformed(format!(
                "a response in a batch has no status: {}",
                excerpt(&response.to_string())
            ))),
        }
    }
}
