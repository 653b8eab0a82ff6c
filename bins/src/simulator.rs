//! The simulator: steady traffic against the API, half of it asking for a
//! simulated failure, so the completer and the enqueuer have work to do.
//! With `--retries` it is also a careful client: it retries a ride with the
//! same key until the answer is final; with `--rides` it stops after that
//! many and logs what the rides finally got.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use reqwest::header::RETRY_AFTER;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::settings::SimulatorArgs;

/// The longest a retry waits, whatever the server asks.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

fn coordinate(limit: f64) -> String {
    format!("{:.6}", (fastrand::f64() * 2.0 - 1.0) * limit)
}

/// An answer a client should retry with the same key: the request may still
/// finish (409 in flight, 500 internal, 503 unknown charge, or no answer).
fn worth_retrying(status: Option<u16>) -> bool {
    status.is_none_or(|s| s == 409 || s >= 500) && status != Some(502)
}

/// Retry-After in seconds if the server gave one, else an exponential backoff.
fn retry_wait(retry_after: Option<u64>, attempt: u32) -> Duration {
    retry_after
        .map(Duration::from_secs)
        .unwrap_or_else(|| Duration::from_millis(100 * 2_u64.saturating_pow(attempt)))
        .min(MAX_RETRY_WAIT)
}

pub async fn run(
    args: &SimulatorArgs,
    api_port: u16,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let base = args
        .api_url
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", api_port));
    let url = format!("{}/rides", base.trim_end_matches('/'));
    let authorization = match &args.authorization_file {
        None => args.authorization.clone(),
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading SIMULATOR_AUTHORIZATION_FILE {}", path.display()))?
            .lines()
            .next()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .with_context(|| format!("SIMULATOR_AUTHORIZATION_FILE {} is empty", path.display()))?
            .to_owned(),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the simulator's HTTP client")?;
    info!(process = "simulator", %url, rides = ?args.rides, retries = args.retries, "started");
    // Final status of each ride ("none" when no answer ever came).
    let mut finals: BTreeMap<String, u64> = BTreeMap::new();
    let mut sent_rides = 0_u64;
    'rides: while args.rides.is_none_or(|limit| sent_rides < limit) {
        let pause = args.max_pause.0.mul_f64(fastrand::f64());
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
        sent_rides += 1;
        let key = uuid::Uuid::new_v4().to_string();
        let form = [
            ("origin_lat", coordinate(90.0)),
            ("origin_lon", coordinate(180.0)),
            ("target_lat", coordinate(90.0)),
            ("target_lon", coordinate(180.0)),
        ];
        let mut raise_error = fastrand::f64() < args.error_rate;
        let mut attempt = 0;
        let status = loop {
            let mut request = client
                .post(&url)
                .header("Authorization", &authorization)
                .header("Idempotency-Key", &key);
            request = if raise_error {
                let mut failing = form.to_vec();
                failing.push(("raise_error", "true".to_owned()));
                request.form(&failing)
            } else {
                request.form(&form)
            };
            let (status, retry_after) = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                    let body = response.text().await.unwrap_or_default();
                    info!(process = "simulator", status, %key, raise_error, attempt, %body, "simulated request");
                    (Some(status), retry_after)
                }
                Err(error) => {
                    warn!(process = "simulator", %key, attempt, %error, "request failed");
                    (None, None)
                }
            };
            if attempt >= args.retries || !worth_retrying(status) {
                break status;
            }
            attempt += 1;
            raise_error = false;
            tokio::select! {
                _ = shutdown.cancelled() => break 'rides,
                _ = tokio::time::sleep(retry_wait(retry_after, attempt)) => {}
            }
        };
        let label = status.map_or_else(|| "none".to_owned(), |s| s.to_string());
        *finals.entry(label).or_insert(0) += 1;
    }
    let summary = finals
        .iter()
        .map(|(status, count)| format!("{status}={count}"))
        .collect::<Vec<_>>()
        .join(" ");
    info!(process = "simulator", rides = sent_rides, final_statuses = %summary, "stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_that_may_still_finish_are_retried() {
        for status in [None, Some(409), Some(500), Some(503)] {
            assert!(worth_retrying(status), "{status:?}");
        }
        for status in [
            Some(201),
            Some(400),
            Some(401),
            Some(402),
            Some(422),
            Some(502),
        ] {
            assert!(!worth_retrying(status), "{status:?}");
        }
    }

    #[test]
    fn a_retry_waits_as_asked_within_bounds() {
        assert_eq!(retry_wait(Some(1), 1), Duration::from_secs(1));
        assert_eq!(retry_wait(Some(3600), 1), MAX_RETRY_WAIT);
        assert_eq!(retry_wait(None, 1), Duration::from_millis(200));
        assert_eq!(retry_wait(None, 3), Duration::from_millis(800));
        assert_eq!(retry_wait(None, 40), MAX_RETRY_WAIT);
    }
}
