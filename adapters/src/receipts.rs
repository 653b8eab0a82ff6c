//! The default receipt sender: one log line per receipt. A real mailer would
//! be another adapter behind the same port.

use application::ports::ReceiptSender;
use async_trait::async_trait;
use domain::charge::ReceiptJob;
use tracing::info;

#[derive(Debug, Default)]
pub struct LogReceiptSender;

#[async_trait]
impl ReceiptSender for LogReceiptSender {
    async fn send(&self, job_id: i64, receipt: &ReceiptJob) -> anyhow::Result<()> {
        info!(
            "receipt sent ride_id={} {} user_id={} amount={} {} job_id={job_id}",
            receipt.ride_id,
            receipt.kind.as_str(),
            receipt.user_id,
            receipt.amount_cents,
            receipt.currency
        );
        Ok(())
    }
}
