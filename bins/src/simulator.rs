//! The simulator: steady traffic against the API, half of it asking for a
//! simulated failure, so the completer and the enqueuer have work to do.

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::settings::{Settings, SimulatorArgs};

fn coordinate(limit: f64) -> String {
    format!("{:.6}", (fastrand::f64() * 2.0 - 1.0) * limit)
}

pub async fn run(
    settings: &Settings,
    args: &SimulatorArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let base = args
        .api_url
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", settings.api_port));
    let url = format!("{}/rides", base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the simulator's HTTP client")?;
    info!(process = "simulator", %url, "started");
    loop {
        let pause = args.max_pause.mul_f64(fastrand::f64());
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
        let key = uuid::Uuid::new_v4().to_string();
        let raise_error = fastrand::f64() < args.error_rate;
        let mut form = vec![
            ("origin_lat", coordinate(90.0)),
            ("origin_lon", coordinate(180.0)),
            ("target_lat", coordinate(90.0)),
            ("target_lon", coordinate(180.0)),
        ];
        if raise_error {
            form.push(("raise_error", "true".to_owned()));
        }
        let sent = client
            .post(&url)
            .header("Authorization", &args.authorization)
            .header("Idempotency-Key", &key)
            .form(&form)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                info!(process = "simulator", status, %key, raise_error, %body, "simulated request");
            }
            Err(error) => warn!(process = "simulator", %key, %error, "request failed"),
        }
    }
    info!(process = "simulator", "stopped");
    Ok(())
}
