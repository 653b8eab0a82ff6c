//! The job queue on a three-node NATS cluster, streams at three replicas
//! (`NATS_URL` listing the nodes, `NATS_STREAM_REPLICAS=3`): one node
//! killed (SIGKILL) mid-run, and every job published before and after is
//! still delivered through the surviving nodes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use adapters::nats::{NatsQueue, NatsSettings};
use application::ports::JobQueue;
use domain::charge::ReceiptJob;
use domain::{RideId, StagedJob, UserId};
use integration_tests::nats::start_nats_cluster;

fn job(id: i64) -> StagedJob {
    StagedJob {
        id,
        job: ReceiptJob::for_ride(RideId(id), UserId(1)),
    }
}

/// Publishes `ids`, each retried until the cluster accepts it (a stream
/// whose leader died elects another within seconds).
async fn publish_all(queue: &NatsQueue, ids: impl Iterator<Item = i64>) {
    for id in ids {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(error) = queue.publish(&job(id)).await {
            assert!(Instant::now() < deadline, "job {id} not accepted: {error}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Receives and acknowledges jobs until `expected` distinct ids arrived
/// (or 60 s pass); every id received, in order, repeats included.
async fn work(queue: &NatsQueue, expected: usize) -> Vec<i64> {
    let mut seen = Vec::new();
    let mut distinct = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while distinct.len() < expected && Instant::now() < deadline {
        match queue.receive(Duration::from_millis(500)).await {
            Ok(Some(delivery)) => {
                if queue.ack(&delivery).await.is_ok() {
                    seen.push(delivery.job.id);
                    distinct.insert(delivery.job.id);
                }
            }
            Ok(None) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_loses_no_job_when_a_node_dies() {
    let cluster = start_nats_cluster().await;
    let settings = NatsSettings {
        replicas: 3,
        ack_wait: Duration::from_secs(5),
        ..NatsSettings::new(cluster.urls.clone(), "cluster")
    };
    // The cluster elects its JetStream leader after the nodes meet.
    let deadline = Instant::now() + Duration::from_secs(60);
    let queue = loop {
        match NatsQueue::connect(settings.clone()).await {
            Ok(queue) => break queue,
            Err(error) => {
                assert!(Instant::now() < deadline, "no JetStream cluster: {error:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    // The streams keep three copies: any one node can go.
    let servers: Vec<async_nats::ServerAddr> = NatsSettings::new(cluster.urls.clone(), "x")
        .url
        .split(',')
        .map(|url| url.parse().expect("an address"))
        .collect();
    let client = async_nats::ConnectOptions::new()
        .user_and_password(
            integration_tests::nats::USER.into(),
            integration_tests::nats::PASSWORD.into(),
        )
        .connect(servers)
        .await
        .expect("a client");
    let jetstream = async_nats::jetstream::new(client);
    let mut leader = None;
    for stream in [&settings.stream, &settings.dead_letter_stream] {
        let mut stream = jetstream.get_stream(stream).await.expect("the stream");
        let info = stream.info().await.expect("its info");
        assert_eq!(info.config.num_replicas, 3, "{}", info.config.name);
        let cluster = info.cluster.clone().expect("clustered");
        assert_eq!(cluster.replicas.len(), 2, "a leader and two replicas");
        leader = leader.or(cluster.leader);
    }
    // The jobs stream's leader is the node to kill: its death forces an
    // election while jobs are in flight.
    let leader = leader.expect("a leader");
    let leader = leader
        .strip_prefix("node")
        .and_then(|n| n.parse::<usize>().ok())
        .expect("nodes are named node<n>");
    publish_all(&queue, 1..=40).await;
    let before = work(&queue, 20).await;
    assert_eq!(before.len(), 20);

    let killed = cluster.nodes[leader].container.id().to_owned();
    let status = std::process::Command::new("docker")
        .args(["kill", "--signal", "KILL", &killed])
        .status()
        .expect("docker kill");
    assert!(status.success());

    publish_all(&queue, 41..=80).await;
    let after = work(&queue, 60).await;
    let all: Vec<i64> = before.iter().chain(&after).copied().collect();
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(
        distinct,
        (1..=80).collect(),
        "every job delivered after the node died"
    );
    // Delivery is at least once (an ack the dying node took with it comes
    // back after ack_wait); the worker's receipt claims make it once.
    eprintln!(
        "{} deliveries of {} jobs across the node's death",
        all.len(),
        distinct.len()
    );
}
