//! The HTML: the page layout, the sign-in form and the console itself,
//! every value escaped.

use super::*;

pub(super) fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn layout(title: &str, refresh: Option<Duration>, body: &str) -> String {
    let refresh = refresh
        .map(|every| {
            format!(
                "<meta http-equiv=\"refresh\" content=\"{}\">",
                every.as_secs().max(1)
            )
        })
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}<title>{}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2330}}\
         table{{border-collapse:collapse;margin:.4rem 0 1.2rem}}td,th{{border:1px solid #ccd;padding:.25rem .6rem;text-align:left}}td{{overflow-wrap:anywhere}}\
         th{{background:#eef}}h2{{margin-top:1.4rem}}.flash{{background:#efe;border:1px solid #9c9;padding:.4rem}}\
         .error{{background:#fee;border:1px solid #c99;padding:.4rem}}.muted{{color:#667}}.inline{{display:inline}}</style></head>\
         <body>{body}</body></html>",
        escape(title)
    )
}

pub(super) fn login_page(status: StatusCode, message: &str) -> Response {
    let message = match message {
        "" => String::new(),
        text => format!("<p class=\"error\" id=\"refused\">{}</p>", escape(text)),
    };
    html(
        status,
        layout(
            "Console: sign in",
            None,
            &format!(
                "<h1>Rocket Rides console</h1>{message}\
                 <form method=\"post\" action=\"/console/login\">\
                 <label>Console token <input type=\"password\" name=\"token\" id=\"token\" autofocus></label> \
                 <button type=\"submit\" id=\"sign-in\">Sign in</button></form>"
            ),
        ),
    )
}

pub(super) fn back_with(message: &str) -> Response {
    let query = serde_urlencoded::to_string([("flash", message)]).unwrap_or_default();
    Redirect::to(&format!("/console?{query}")).into_response()
}

pub(super) fn ago(now: SystemTime, at: SystemTime) -> String {
    let seconds = now.duration_since(at).unwrap_or_default().as_secs();
    match seconds {
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s => format!("{} h ago", s / 3600),
    }
}

pub(super) async fn render(
    console: &Console,
    csrf: &str,
    flash: Option<&str>,
) -> anyhow::Result<String> {
    let now = console.clock.now();
    let mut out = String::new();
    let w = &mut out;
    writeln!(
        w,
        "<h1>Rocket Rides console</h1><p class=\"muted\">As of {} (refreshes every {} s). \
         <form method=\"post\" action=\"/console/logout\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button>Sign out</button></form></p>",
        humantime::format_rfc3339_seconds(now),
        console.refresh.as_secs().max(1)
    )?;
    if let Some(flash) = flash {
        writeln!(w, "<p class=\"flash\" id=\"flash\">{}</p>", escape(flash))?;
    }

    let counts = console
        .keys
        .unfinished_counts(console.review.attempted_before(now))
        .await?;
    writeln!(
        w,
        "<h2>Unfinished keys by recovery point</h2><table id=\"recovery-points\"><tr><th>recovery point</th><th>keys</th></tr>"
    )?;
    for point in ["started", "ride_created", "charge_created"] {
        let n = counts
            .by_recovery_point
            .iter()
            .find(|(p, _)| p.as_str() == point)
            .map_or(0, |(_, n)| *n);
        writeln!(
            w,
            "<tr><td>{point}</td><td id=\"keys-{point}\">{n}</td></tr>"
        )?;
    }
    writeln!(
        w,
        "<tr><td>awaiting review</td><td id=\"keys-awaiting-review\">{}</td></tr></table>",
        counts.awaiting_review
    )?;

    let findings = console.review_findings(now).await?;
    writeln!(w, "<h2>Keys awaiting review</h2>")?;
    if findings.is_empty() {
        writeln!(w, "<p id=\"review-empty\">No key awaits review.</p>")?;
    } else {
        writeln!(
            w,
            "<table id=\"review\"><tr><th>key</th><th>user</th><th>Idempotency-Key</th><th>first charge attempt</th><th>Stripe holds</th><th>decision</th><th></th></tr>"
        )?;
        for finding in &findings {
            let key = &finding.record;
            let (decision, can_settle) = match &finding.verdict {
                Reconciliation::Charged { charge_id, .. } => {
                    (format!("book with {charge_id}"), true)
                }
                Reconciliation::NotCharged => ("end without a charge".to_owned(), true),
                Reconciliation::Refunded {
                    refund: Some(refund),
                } => (format!("finish the cancel with {}", refund.refund_id), true),
                Reconciliation::Refunded { refund: None } => {
                    ("finish the cancel (nothing refunded)".to_owned(), true)
                }
                Reconciliation::NotRefunded => (
                    "end the cancel unrefunded (refund by hand)".to_owned(),
                    true,
                ),
                Reconciliation::Undecided { reason } => (format!("undecided: {reason}"), false),
            };
            let button = if can_settle {
                format!(
                    "<form method=\"post\" action=\"/console/review/{id}/settle\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                     <button type=\"submit\" id=\"settle-{id}\">Settle from Stripe</button></form>",
                    id = key.id
                )
            } else {
                String::new()
            };
            writeln!(
                w,
                "<tr id=\"review-{id}\"><td>{id}</td><td>{user}</td><td>{key_text}</td><td>{attempt}</td><td>{stripe}</td><td>{decision}</td><td>{button}</td></tr>",
                id = key.id,
                user = key.user_id,
                key_text = escape(key.key.as_str()),
                attempt = key
                    .unrecorded_charge_attempt()
                    .map(|at| ago(now, at))
                    .unwrap_or_default(),
                stripe = escape(&finding.search.to_string()),
                decision = escape(&decision),
            )?;
        }
        writeln!(w, "</table>")?;
    }

    let backlog = console.outbox.backlog(now).await?;
    writeln!(
        w,
        "<h2>Staged jobs</h2><p><span id=\"backlog-jobs\">{}</span> staged, the oldest waiting <span id=\"backlog-age\">{}</span> s.</p>",
        backlog.jobs,
        backlog.oldest_age.as_secs()
    )?;
    let staged = console.outbox.staged_jobs(ROWS).await?;
    if !staged.is_empty() {
        writeln!(
            w,
            "<table id=\"staged\"><tr><th>job</th><th>ride</th><th>user</th></tr>"
        )?;
        for job in &staged {
            writeln!(
                w,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                job.id, job.job.ride_id, job.job.user_id
            )?;
        }
        writeln!(w, "</table>")?;
    }

    writeln!(w, "<h2>Dead letters</h2>")?;
    match (console.dead_letters.get(), console.keeps_dead_letters) {
        (Some(dead_letters), _) => {
            let dead = dead_letters.dead_jobs(ROWS).await?;
            writeln!(
                w,
                "<p><span id=\"dead-letters\">{}</span> dead job(s).</p>",
                dead.len()
            )?;
            if !dead.is_empty() {
                writeln!(
                    w,
                    "<table id=\"dead\"><tr><th>sequence</th><th>job</th><th>ride</th><th>reason</th></tr>"
                )?;
                for dead in &dead {
                    match &dead.job {
                        Some(job) => writeln!(
                            w,
                            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                            dead.sequence,
                            job.id,
                            job.job.ride_id,
                            escape(&dead.reason)
                        )?,
                        // Not a job: shown as it is, with a way to delete it.
                        None => writeln!(
                            w,
                            "<tr class=\"unreadable\"><td>{sequence}</td><td colspan=\"2\">not a job: <code>{payload}</code></td><td>{reason}\
                             <form method=\"post\" action=\"/console/dead-letters/{sequence}/delete\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                             <button type=\"submit\" id=\"delete-{sequence}\">Delete</button></form></td></tr>",
                            sequence = dead.sequence,
                            payload = escape(&dead.payload),
                            reason = escape(&dead.reason),
                        )?,
                    }
                }
                writeln!(
                    w,
                    "</table><form method=\"post\" action=\"/console/dead-letters/requeue\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                     <button type=\"submit\" id=\"requeue\">Requeue them</button></form>"
                )?;
            }
        }
        (None, true) => writeln!(w, "<p>Not connected to NATS yet.</p>")?,
        (None, false) => writeln!(w, "<p>The in-memory queue keeps no dead letters.</p>")?,
    }

    let waiting = console.payments.rides_awaiting_payment(now, ROWS).await?;
    writeln!(
        w,
        "<h2>Rides waiting on a payment</h2><p>Awaiting the rider's 3-D Secure authentication, or pending at Stripe; a webhook settles them, or the completer's sync pass after PAYMENT_SYNC_AFTER.</p><table id=\"waiting\"><tr><th>ride</th><th>status</th><th>PaymentIntent</th></tr>"
    )?;
    for ride in &waiting {
        writeln!(
            w,
            "<tr id=\"waiting-{id}\"><td>{id}</td><td>{status}</td><td>{intent}</td></tr>",
            id = ride.ride_id,
            status = ride.status,
            intent = escape(&ride.payment_intent_id),
        )?;
    }
    writeln!(w, "</table>")?;

    let failed = console.dashboard.failed_refunds(ROWS).await?;
    writeln!(
        w,
        "<h2>Refunds that failed</h2><p>Cancelled rides whose refund Stripe refused or reported failed (ride status refund_failed): refund them by hand at Stripe.</p><table id=\"refund-failed\"><tr><th>ride</th><th>user</th><th>owed (cents)</th><th>refund</th></tr>"
    )?;
    for refund in &failed {
        writeln!(
            w,
            "<tr id=\"refund-failed-{id}\"><td>{id}</td><td>{user}</td><td>{amount}</td><td>{refund}</td></tr>",
            id = refund.ride_id,
            user = refund.user_id,
            amount = refund.amount_cents,
            refund = escape(refund.refund_id.as_deref().unwrap_or("none made")),
        )?;
    }
    writeln!(w, "</table>")?;

    let rides = console.dashboard.recent_rides(ROWS).await?;
    writeln!(
        w,
        "<h2>Recent rides</h2><table id=\"rides\"><tr><th>ride</th><th>user</th><th>answer</th><th>ride status</th><th>charge</th><th>request id</th><th>requested</th></tr>"
    )?;
    for recent in &rides {
        writeln!(
            w,
            "<tr id=\"ride-{id}\"><td>{id}</td><td>{user}</td><td>{status}</td><td>{ride_status}</td><td>{charge}</td><td class=\"request-id\">{request}</td><td>{at}</td></tr>",
            id = recent.ride.id,
            user = recent.ride.user_id,
            ride_status = recent.ride.status,
            status = recent
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unfinished".into()),
            charge = escape(recent.ride.stripe_charge_id.as_deref().unwrap_or("")),
            request = escape(recent.request_id.as_deref().unwrap_or("")),
            at = recent
                .requested_at
                .map(|at| ago(now, at))
                .unwrap_or_default(),
        )?;
    }
    writeln!(w, "</table>")?;

    let since = now
        .checked_sub(Duration::from_secs(3600))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let answers = console.dashboard.answers_since(since).await?;
    writeln!(
        w,
        "<h2>The last hour's keys by stored answer</h2><table id=\"answers\"><tr><th>answer</th><th>keys</th></tr>"
    )?;
    for (status, n) in &answers {
        let label = status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unfinished".into());
        writeln!(
            w,
            "<tr><td>{label}</td><td id=\"answers-{label}\">{n}</td></tr>"
        )?;
    }
    writeln!(w, "</table>")?;
    Ok(out)
}
