//! The one-shot commands an operator runs: `migrate`, `up`, `review`,
//! `resolve`, `dead-jobs`, `healthcheck`, and `fake-stripe` (a stand-in
//! server for local runs). Each prints its report on stdout.

use std::time::Duration;

use anyhow::{Context, bail};
use application::{KeyFinding, ReviewResolution, Settlement};
use domain::{KeyId, Reconciliation};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::processes::{new_api_key, require_shared_store};
use crate::settings::{
    DeadJobsCommand, FakeStripeArgs, FaultArg, FaultTimingArg, HealthcheckCommand, MigrateCommand,
    ResolveCommand, ReviewCommand, UpCommand,
};
use crate::wiring::{Needs, Payments, System};

/// Exits 0 when this process's health endpoint answers `/readyz` with 200.
pub async fn healthcheck(args: &HealthcheckCommand) -> anyhow::Result<()> {
    let url = match &args.url {
        Some(url) => url.clone(),
        None => {
            let address = args
                .ops
                .address()
                .context("no METRICS_ADDR (or HEALTH_PORT) to ask; pass --url")?;
            let port = address
                .rsplit(':')
                .next()
                .and_then(|port| port.parse::<u16>().ok())
                .with_context(|| format!("METRICS_ADDR {address} has no port"))?;
            format!("http://127.0.0.1:{port}/readyz")
        }
    };
    let answer = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .with_context(|| format!("asking {url}"))?;
    let status = answer.status();
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    println!("{url}: {status}");
    Ok(())
}

pub async fn up(args: &UpCommand, shutdown: CancellationToken) -> anyhow::Result<()> {
    let system = System::build(&args.store, None, Needs::STORE, &shutdown).await?;
    require_shared_store(&system, "up")?;
    let gateway = crate::wiring::gateway(&args.stripe, system.embedded)?;
    let mut generate = new_api_key;
    let seeded = system
        .seeder(gateway)
        .run(Some(&mut generate as &mut (dyn FnMut() -> String + Send)))
        .await?;
    for seeded in seeded {
        let key = seeded.api_key.unwrap_or_default();
        if let Some(dir) = &args.api_keys_dir {
            write_api_key(dir, &seeded.user.email, &key)?;
        }
        println!(
            "{}\tcustomer {}\tapi key {key} (shown once; stored hashed)",
            seeded.user.email, seeded.user.stripe_customer_id,
        );
    }
    Ok(())
}

/// `Bearer <key>` in `dir/<email>`, readable by its owner only.
fn write_api_key(dir: &std::path::Path, email: &str, key: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating UP_API_KEYS_DIR {}", dir.display()))?;
    let path = dir.join(email);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "Bearer {key}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub async fn migrate(args: &MigrateCommand, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Some(url) = &args.store.database_url else {
        bail!("`migrate` needs DATABASE_URL: the in-memory store has no schema to apply");
    };
    let pool = adapters::postgres::connect(url.expose(), &args.store.pool())?;
    crate::wiring::wait_for("Postgres", &shutdown, || adapters::postgres::probe(&pool)).await?;
    adapters::postgres::migrate(&pool).await?;
    info!("schema.sql applied");
    println!("schema.sql applied");
    Ok(())
}

pub async fn fake_stripe(args: &FakeStripeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    use adapters::fake_stripe::{
        FakeStripe, FakeStripeSettings, FaultKind, FaultTiming, Faults, WebhookDelivery,
    };
    let kinds = args
        .faults
        .iter()
        .map(|fault| match fault {
            FaultArg::Latency => FaultKind::Latency,
            FaultArg::Hang => FaultKind::Hang,
            FaultArg::ServerError => FaultKind::ServerError,
            FaultArg::RateLimit => FaultKind::RateLimit,
            FaultArg::Drop => FaultKind::Drop,
        })
        .collect();
    let timing = match args.fault_timing {
        FaultTimingArg::Before => FaultTiming::Before,
        FaultTimingArg::After => FaultTiming::After,
        FaultTimingArg::Either => FaultTiming::Either,
    };
    let webhook = match (&args.webhook_url, &args.webhook_secret) {
        (Some(url), Some(secret)) => Some(WebhookDelivery {
            drop_rate: args.webhook_drop_rate,
            duplicate_rate: args.webhook_duplicate_rate,
            delay: args.webhook_delay.0,
            reorder: args.webhook_reorder,
            ..WebhookDelivery::to(url.clone(), secret.expose())
        }),
        _ => None,
    };
    let stripe = FakeStripe::new(FakeStripeSettings {
        idempotency_window: args.idempotency_window.0,
        search_delay: args.search_delay.0,
        processing_delay: args.processing_delay.0,
        webhook,
        faults: Faults {
            rate: args.fault_rate,
            kinds,
            timing,
            latency: args.latency.0,
            hang: args.hang.0,
            paths: args.fault_paths.clone(),
        },
    });
    let address = format!("{}:{}", args.host, args.port);
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("binding fake-stripe to {address}"))?;
    info!(%address, fault_rate = args.fault_rate, faults = ?args.faults, timing = ?args.fault_timing, "fake-stripe listening");
    axum::serve(listener, stripe.router())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving fake-stripe")?;
    info!("fake-stripe stopped");
    Ok(())
}

pub async fn dead_jobs(args: &DeadJobsCommand, shutdown: CancellationToken) -> anyhow::Result<()> {
    let system = System::build(
        &args.store,
        Some(&args.queue),
        Needs::STORE_AND_QUEUE,
        &shutdown,
    )
    .await?;
    let Some(dead_letters) = &system.dead_letters else {
        bail!("`dead-jobs` needs NATS_URL: the in-memory queue keeps no dead letters");
    };
    if let Some(sequence) = args.delete {
        if !dead_letters.delete_dead_job(sequence).await? {
            bail!("no dead letter {sequence}");
        }
        println!("deleted sequence={sequence}");
        return Ok(());
    }
    let dead = match args.requeue {
        true => dead_letters.requeue_dead_jobs(args.limit).await?,
        false => dead_letters.dead_jobs(args.limit).await?,
    };
    if dead.is_empty() {
        println!("no dead jobs");
    }
    let verb = if args.requeue { "requeued " } else { "" };
    for dead in dead {
        match &dead.job {
            Some(job) => println!(
                "{verb}sequence={} job_id={} ride_id={} user_id={} reason={}",
                dead.sequence, job.id, job.job.ride_id, job.job.user_id, dead.reason
            ),
            None => println!(
                "sequence={} unreadable payload={:?} reason={} (not a job: `dead-jobs --delete {}` removes it)",
                dead.sequence, dead.payload, dead.reason, dead.sequence
            ),
        }
    }
    Ok(())
}

pub async fn resolve(args: &ResolveCommand, shutdown: CancellationToken) -> anyhow::Result<()> {
    let resolution = resolution(args)?;
    let payments = Payments::new(&args.stripe, &args.keys, args.store.embedded())?;
    let system = System::build(&args.store, None, Needs::STORE, &shutdown).await?;
    require_shared_store(&system, "resolve")?;
    let not_awaiting = |key_id: KeyId| {
        anyhow::anyhow!(
            "key {key_id} does not await review: it is finished, gone, never charged, inside the gateway's idempotency window, or held by a request right now (see `rocket-rides review`)"
        )
    };
    let Some(resolution) = resolution else {
        return resolve_from_stripe(&system, &payments, args, not_awaiting).await;
    };
    let key_id = KeyId(args.key_id.context("a key id is required")?);
    let Some(answer) = system
        .create_ride(&payments)
        .resolve_review(key_id, resolution)
        .await?
    else {
        return Err(not_awaiting(key_id));
    };
    println!(
        "key_id={key_id} resolved: status={} body={}",
        answer.response.status, answer.response.body
    );
    Ok(())
}

/// What a person decided for a key, from `resolve`'s flags; `None`: ask
/// Stripe (`--from-stripe`). Stripe's ids are checked for their prefix.
fn resolution(args: &ResolveCommand) -> anyhow::Result<Option<ReviewResolution>> {
    let stripe_id = |flag: &str, id: &str, prefix: &str| -> anyhow::Result<String> {
        let id = id.trim();
        if !id.starts_with(prefix) || id.len() == prefix.len() || id.contains(char::is_whitespace) {
            bail!("{flag} must be a Stripe id such as {prefix}123");
        }
        Ok(id.to_owned())
    };
    if let Some(charge_id) = &args.charge_id {
        let charge_id = charge_id.trim();
        if charge_id.is_empty() || charge_id.contains(char::is_whitespace) {
            bail!("--charge-id must be a Stripe charge id such as ch_123");
        }
        let payment_intent_id = args
            .payment_intent_id
            .as_deref()
            .map(|id| stripe_id("--payment-intent-id", id, "pi_"))
            .transpose()?;
        return Ok(Some(ReviewResolution::Charged {
            charge_id: charge_id.to_owned(),
            payment_intent_id,
        }));
    }
    if let Some(refund_id) = &args.refund_id {
        let refund_id = stripe_id("--refund-id", refund_id, "re_")?;
        let Some(status) = domain::RefundStatus::parse(args.refund_status.trim()) else {
            bail!(
                "--refund-status must be one of Stripe's: {}",
                domain::RefundStatus::ALL.map(|s| s.as_str()).join(", ")
            );
        };
        return Ok(Some(ReviewResolution::Refunded {
            refund: Some(domain::RefundRecord { refund_id, status }),
        }));
    }
    Ok(if args.not_charged {
        Some(ReviewResolution::NotCharged)
    } else if args.intent_cancelled {
        Some(ReviewResolution::Refunded { refund: None })
    } else if args.not_refunded {
        Some(ReviewResolution::NotRefunded)
    } else {
        None
    })
}

/// `resolve --from-stripe`: one line per key; fails when a named key was
/// not settled or any listed key was left for a person.
async fn resolve_from_stripe(
    system: &System,
    payments: &Payments,
    args: &ResolveCommand,
    not_awaiting: impl Fn(KeyId) -> anyhow::Error,
) -> anyhow::Result<()> {
    let reconcile = system.reconcile(payments);
    let settled = match args.key_id {
        Some(id) => match reconcile.settle(KeyId(id)).await? {
            Settlement::Skipped => return Err(not_awaiting(KeyId(id))),
            settlement => vec![(KeyId(id), settlement)],
        },
        None => reconcile
            .settle_all(args.limit)
            .await?
            .into_iter()
            .map(|(finding, settlement)| (finding.record.id, settlement))
            .collect(),
    };
    if settled.is_empty() {
        println!("no keys need review");
    }
    let mut left = 0;
    for (key_id, settlement) in &settled {
        match settlement {
            Settlement::Settled { status } => {
                println!("key_id={key_id} settled from Stripe: status={status}");
            }
            Settlement::Left { reason } => {
                left += 1;
                println!("key_id={key_id} left for review: {reason}");
            }
            Settlement::Skipped => {
                println!(
                    "key_id={key_id} skipped: a request holds it, or it was finished meanwhile"
                );
            }
        }
    }
    if left > 0 {
        bail!("{left} key(s) left for review: Stripe gave no definitive answer for them");
    }
    Ok(())
}

pub async fn review(args: &ReviewCommand, shutdown: CancellationToken) -> anyhow::Result<()> {
    let payments = Payments::new(&args.stripe, &args.keys, args.store.embedded())?;
    let system = System::build(&args.store, None, Needs::STORE, &shutdown).await?;
    require_shared_store(&system, "review")?;
    let findings = system.reconcile(&payments).examine(args.limit).await?;
    if findings.is_empty() {
        println!("no keys need review");
    }
    for KeyFinding {
        record: key,
        search,
        verdict,
    } in findings
    {
        println!(
            "key_id={} user_id={} idempotency_key={} ride_id={} downstream_key={} first_charge_attempt={} stripe={} verdict={}",
            key.id,
            key.user_id,
            key.key,
            key.progress
                .ride_id()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            key.downstream_key,
            key.unrecorded_charge_attempt()
                .map(|at| humantime::format_rfc3339_seconds(at).to_string())
                .unwrap_or_default(),
            search,
            describe_verdict(&verdict),
        );
    }
    Ok(())
}

fn describe_verdict(verdict: &Reconciliation) -> String {
    match verdict {
        Reconciliation::Charged { charge_id, .. } => format!("charged({charge_id})"),
        Reconciliation::NotCharged => "not-charged".to_owned(),
        Reconciliation::Refunded {
            refund: Some(refund),
        } => {
            format!("refunded({})", refund.refund_id)
        }
        Reconciliation::Refunded { refund: None } => "refunded(nothing-due)".to_owned(),
        Reconciliation::NotRefunded => "not-refunded".to_owned(),
        Reconciliation::Undecided { reason } => format!("undecided({reason})"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::settings::{Cli, Command};

    fn resolved(flags: &[&str]) -> anyhow::Result<Option<ReviewResolution>> {
        let cli = Cli::try_parse_from(["rocket-rides", "resolve", "42"].iter().chain(flags))
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let Command::Resolve(args) = cli.command else {
            panic!("parsed another command");
        };
        resolution(&args)
    }

    #[test]
    fn a_person_settles_a_cancel_key_with_the_refund_found_the_intent_cancelled_or_none() {
        assert_eq!(
            resolved(&["--refund-id", "re_123"]).expect("parsed"),
            Some(ReviewResolution::Refunded {
                refund: Some(domain::RefundRecord {
                    refund_id: "re_123".to_owned(),
                    status: domain::RefundStatus::Succeeded,
                })
            })
        );
        assert_eq!(
            resolved(&["--refund-id", "re_123", "--refund-status", "pending"]).expect("parsed"),
            Some(ReviewResolution::Refunded {
                refund: Some(domain::RefundRecord {
                    refund_id: "re_123".to_owned(),
                    status: domain::RefundStatus::Pending,
                })
            })
        );
        assert_eq!(
            resolved(&["--intent-cancelled"]).expect("parsed"),
            Some(ReviewResolution::Refunded { refund: None })
        );
        assert_eq!(
            resolved(&["--not-refunded"]).expect("parsed"),
            Some(ReviewResolution::NotRefunded)
        );
        assert_eq!(resolved(&["--from-stripe"]).expect("parsed"), None);
    }

    #[test]
    fn settlements_are_one_at_a_time_with_stripe_shaped_ids() {
        for wrong in [
            &["--refund-id", "re_1", "--not-charged"][..],
            &["--not-refunded", "--intent-cancelled"],
            &["--refund-id", "ch_1"],
            &["--refund-id", "re_"],
            &["--refund-id", "re_1", "--refund-status", "refunded"],
            &["--charge-id", "ch_1", "--payment-intent-id", "ch_2"],
            &[],
        ] {
            assert!(resolved(wrong).is_err(), "{wrong:?} was taken");
        }
        assert_eq!(
            resolved(&["--charge-id", "ch_1", "--payment-intent-id", "pi_1"]).expect("parsed"),
            Some(ReviewResolution::Charged {
                charge_id: "ch_1".to_owned(),
                payment_intent_id: Some("pi_1".to_owned()),
            })
        );
    }
}
