//! Delivering events to the webhook endpoint as Stripe does: each event
//! POSTed as JSON with a `Stripe-Signature` over the exact body, tried
//! again with backoff until the endpoint answers 2xx, and the delivery
//! faults a receiver must survive (attempts lost, events delivered twice,
//! late, or out of order).

use std::sync::Weak;

use domain::webhook::signature_header;

use super::*;

/// Starts delivering from `ledger`'s queue on the current tokio runtime;
/// stops once the fake is dropped. Without a runtime nothing is delivered
/// (and said so).
pub(super) fn spawn_deliveries(ledger: Weak<Mutex<Ledger>>, delivery: WebhookDelivery) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("fake-stripe: no tokio runtime; webhook events will not be delivered");
        return;
    };
    runtime.spawn(deliver(ledger, delivery));
}

async fn deliver(ledger: Weak<Mutex<Ledger>>, delivery: WebhookDelivery) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Some(shared) = ledger.upgrade() else {
            return;
        };
        let mut due = take_due(&shared);
        drop(shared);
        if delivery.reorder {
            fastrand::shuffle(&mut due);
        }
        for mut pending in due {
            if !delivery.delay.is_zero() {
                tokio::time::sleep(delivery.delay).await;
            }
            pending.attempts += 1;
            let delivered = if fastrand::f64() < delivery.drop_rate {
                info!(event = %pending.event["id"], "fake-stripe: webhook delivery dropped");
                false
            } else {
                let sent = send(&client, &delivery, &pending.event).await;
                if fastrand::f64() < delivery.duplicate_rate {
                    info!(event = %pending.event["id"], "fake-stripe: webhook delivered twice");
                    send(&client, &delivery, &pending.event).await;
                }
                sent
            };
            if !delivered && pending.attempts < WebhookDelivery::MAX_ATTEMPTS {
                let backoff = WebhookDelivery::FIRST_RETRY
                    .saturating_mul(2u32.saturating_pow(pending.attempts - 1));
                pending.due = Instant::now() + backoff;
                let Some(shared) = ledger.upgrade() else {
                    return;
                };
                let mut ledger = shared.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(queue) = &mut ledger.deliveries {
                    queue.push(pending);
                }
            }
        }
    }
}

/// The events due now, oldest first, taken off the queue.
fn take_due(ledger: &Mutex<Ledger>) -> Vec<Pending> {
    let mut ledger = ledger.lock().unwrap_or_else(|p| p.into_inner());
    ledger.settle_processing();
    ledger.fail_due_refunds();
    let Some(queue) = &mut ledger.deliveries else {
        return Vec::new();
    };
    let now = Instant::now();
    let (due, later): (Vec<Pending>, Vec<Pending>) =
        queue.drain(..).partition(|pending| pending.due <= now);
    *queue = later;
    due
}

/// One POST of `event`, signed now; whether the endpoint took it (2xx).
async fn send(client: &reqwest::Client, delivery: &WebhookDelivery, event: &Value) -> bool {
    let body = event.to_string();
    let signature = signature_header(&delivery.secret, now_unix(), body.as_bytes());
    match client
        .post(&delivery.url)
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body)
        .send()
        .await
    {
        Ok(answer) if answer.status().is_success() => true,
        Ok(answer) => {
            info!(event = %event["id"], status = %answer.status(), "fake-stripe: webhook refused; retrying later");
            false
        }
        Err(error) => {
            info!(event = %event["id"], %error, "fake-stripe: webhook not delivered; retrying later");
            false
        }
    }
}
