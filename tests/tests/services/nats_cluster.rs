//! The job queue on a three-node NATS cluster, streams at three replicas
//! (`NATS_URL` listing the nodes, `NATS_STREAM_REPLICAS=3`): the node
//! leading the workers' consumer is killed (SIGKILL) while a pull waits on
//! it. The pull gives up instead of waiting forever, and every job
//! published before and after is still delivered, through the survivors.

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

/// The node number of a server named `node<n>`.
fn node(name: &str) -> usize {
    name.strip_prefix("node")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("nodes are named node<n>, not {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_loses_no_job_when_the_consumers_leader_dies() {
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
    let servers: Vec<async_nats::ServerAddr> = settings
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

    publish_all(&queue, 1..=40).await;
    let before = work(&queue, 40).await;

    // A pull waiting on the workers' consumer when the node leading that
    // consumer dies is never answered (the client's own connection may be
    // fine): it must give up (the worker then pulls again), not hang.
    let jobs = jetstream
        .get_stream(&settings.stream)
        .await
        .expect("the stream");
    let consumer_leader = jobs
        .consumer_info(&settings.consumer)
        .await
        .expect("the consumer")
        .cluster
        .clone()
        .and_then(|c| c.leader)
        .expect("a consumer leader");
    let victim = node(&consumer_leader);
    eprintln!(
        "client on {}; the jobs stream led by {}, its consumer by {consumer_leader}",
        queue.server_name(),
        leader.unwrap_or_default()
    );
    let started = Instant::now();
    // The worker's pull: whatever waits now, else the first job within 3 s.
    let receiving = queue.receive_batch(10, Duration::from_secs(3));
    tokio::pin!(receiving);
    let early = tokio::time::timeout(Duration::from_millis(500), &mut receiving).await;
    assert!(early.is_err(), "nothing to receive yet: {early:?}");
    let dead = cluster.nodes[victim].container.id().to_owned();
    let killed = std::process::Command::new("docker")
        .args(["kill", "--signal", "KILL", &dead])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("docker kill");
    assert!(killed.success());
    let ended = tokio::time::timeout(Duration::from_secs(30), receiving).await;
    assert!(
        ended.is_ok(),
        "the pull on the dead consumer leader still waited after 30 s"
    );
    eprintln!("the pull ended {:?} after it began", started.elapsed());
    // And while the consumer elects its next leader, the worker keeps
    // pulling (a pull that does not wait, then a short one): none of those
    // pulls, sent to a consumer with no leader to answer, may hang.
    let electing = Instant::now();
    let mut pulls = 0;
    while electing.elapsed() < Duration::from_secs(15) {
        let pulled = tokio::time::timeout(
            Duration::from_secs(30),
            queue.receive_batch(10, Duration::from_millis(200)),
        )
        .await;
        assert!(
            pulled.is_ok(),
            "pull {pulls} during the election hung for 30 s"
        );
        pulls += 1;
    }
    eprintln!("{pulls} pulls during the election, none hung");

    publish_all(&queue, 41..=80).await;
    let after = work(&queue, 40).await;
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
