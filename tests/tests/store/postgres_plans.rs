//! The background processes' queries stay index scans however many keys
//! there are: EXPLAIN of the exact SQL the adapter runs, over a table filled
//! the way production fills it (almost every key finished, spread over days).
//! The benchmark prints the same plans at 10 million rows.

use std::time::Duration;

use adapters::postgres::PoolSettings;
use integration_tests::plans::{fill, plans};

const KEYS: i64 = 200_000;

#[tokio::test]
async fn background_queries_use_indexes_not_sequential_scans() {
    let store = integration_tests::postgres::fresh_store_with(PoolSettings {
        statement_timeout: Duration::from_secs(600),
        ..PoolSettings::default()
    })
    .await;
    fill(store.pool(), KEYS).await;
    for (process, plan) in plans(store.pool()).await {
        eprintln!("-- {process}\n{plan}");
        assert!(
            !plan.contains("Seq Scan on idempotency_keys")
                && !plan.contains("Seq Scan on staged_jobs"),
            "the {process} query scans a whole table:\n{plan}"
        );
        assert!(
            plan.contains("Index"),
            "the {process} query uses no index:\n{plan}"
        );
    }
}
