//! `fieldsync-plain-creates`: the floor for the rest connector's creates. Sends `--count`
//! `POST`s of a JSON body to a collection with `--concurrency` requests at once, as a plain HTTP
//! client does (the same client library and TLS setup as the rest connector, nothing else), and
//! prints the wall time, the rate and the statuses answered.
//!
//! The body is `--body` with every `{n}` replaced by the request's number (1, 2, …). A header
//! may be added whose value comes from an environment variable (`--header-env
//! Authorization=DRF_AUTH`), so that no secret is on the command line or in the output.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "fieldsync-plain-creates", about = "POSTs N JSON bodies with a fixed concurrency.")]
struct Cli {
    /// The collection's URL.
    #[arg(long)]
    url: String,
    /// How many creates.
    #[arg(long)]
    count: usize,
    /// How many requests at once (the rest connector's `concurrency`, 4 by default).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// The JSON body, `{n}` replaced by the request's number.
    #[arg(long)]
    body: String,
    /// `NAME=VARIABLE`: a header whose value is the environment variable's.
    #[arg(long)]
    header_env: Vec<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let mut headers = reqwest::header::HeaderMap::new();
    for pair in &cli.header_env {
        let (name, variable) = pair.split_once('=').context("--header-env takes NAME=VARIABLE")?;
        let value = std::env::var(variable).with_context(|| format!("the environment has no {variable}"))?;
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).context("a header name")?,
            reqwest::header::HeaderValue::from_str(&value).context("a header value")?,
        );
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().default_headers(headers).build().context("an HTTP client")?;
    // The same runtime as `fieldsync run`: one thread.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (elapsed, statuses) = runtime.block_on(send_all(&cli, client))?;
    let seconds = elapsed.as_secs_f64();
    println!(
        "{} creates, {} at once: {seconds:.2} s, {:.0} a second; statuses {statuses:?}",
        cli.count,
        cli.concurrency,
        cli.count as f64 / seconds
    );
    Ok(())
}

async fn send_all(cli: &Cli, client: reqwest::Client) -> Result<(std::time::Duration, BTreeMap<u16, usize>)> {
    let slots = Arc::new(tokio::sync::Semaphore::new(cli.concurrency));
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for number in 1..=cli.count {
        let body: serde_json::Value = serde_json::from_str(&cli.body.replace("{n}", &number.to_string()))
            .context("--body is not JSON once {n} is filled in")?;
        let permit = Arc::clone(&slots).acquire_owned().await?;
        let request = client.post(&cli.url).json(&body);
        tasks.spawn(async move {
            let answer = request.send().await;
            let status = match answer {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let _ = response.bytes().await;
                    status
                }
                Err(_) => 0,
            };
            drop(permit);
            status
        });
    }
    let mut statuses = BTreeMap::new();
    while let Some(status) = tasks.join_next().await {
        *statuses.entry(status?).or_insert(0) += 1;
    }
    Ok((began.elapsed(), statuses))
}
