//! The decision log's second sink on a fleet host: every record also published to a JetStream
//! stream (`<subject>.<surface>`), so that a fleet's log is one stream a data pipeline consumes.
//! Bounded like the file sink: the writer thread hands records over without waiting, and what
//! does not fit, or cannot be published while NATS is down, is dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use prometheus::IntCounterVec;
use tokio::sync::mpsc;

/// The most publishes awaiting their acknowledgement at once.
const IN_FLIGHT: usize = 256;

/// A handle the writer thread sends records through.
#[derive(Clone)]
pub struct StreamSink {
    sender: mpsc::Sender<(String, Bytes)>,
    dropped: IntCounterVec,
    /// Bytes of records waiting, bounded by `max_queued`.
    queued: Arc<AtomicUsize>,
    max_queued: usize,
}

/// Where the stream is.
pub struct StreamTarget {
    /// The fleet's JetStream.
    pub jetstream: jetstream::Context,
    /// The client, for its connection state.
    pub client: async_nats::Client,
    /// The stream's name (created if missing).
    pub stream: String,
    /// The subject prefix: records go to `<subject>.<surface>`.
    pub subject: String,
    /// How long the stream keeps records.
    pub max_age: Duration,
}

impl StreamSink {
    /// Starts the publishing task on the current tokio runtime.
    /// The task ends once every sink handle is dropped and what was in flight is acknowledged.
    pub fn start(
        target: StreamTarget,
        queue: usize,
        max_queued: usize,
        published: IntCounterVec,
        dropped: IntCounterVec,
    ) -> (StreamSink, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(queue);
        let queued = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(publish(target, receiver, queued.clone(), published, dropped.clone()));
        (StreamSink { sender, dropped, queued, max_queued }, task)
    }

    /// Hands a serialised record over without waiting.
    pub fn offer(&self, surface: &str, record: Bytes) {
        let bytes = record.len();
        let over = self.queued.fetch_add(bytes, Ordering::Relaxed) + bytes > self.max_queued;
        if over || self.sender.try_send((surface.to_owned(), record)).is_err() {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            self.dropped.with_label_values(&["stream-queue-full"]).inc();
        }
    }
}

async fn publish(
    target: StreamTarget,
    mut receiver: mpsc::Receiver<(String, Bytes)>,
    queued: Arc<AtomicUsize>,
    published: IntCounterVec,
    dropped: IntCounterVec,
) {
    let config = jetstream::stream::Config {
        name: target.stream.clone(),
        description: Some("Relish: the fleet's decision log".to_owned()),
        subjects: vec![format!("{}.>", target.subject)],
        max_age: target.max_age,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let mut ready = false;
    let mut acks = FuturesUnordered::new();
    loop {
        tokio::select! {
            next = receiver.recv() => {
                let Some((surface, record)) = next else { break };
                queued.fetch_sub(record.len(), Ordering::Relaxed);
                let connected = target.client.connection_state() == async_nats::connection::State::Connected;
                if connected && !ready {
                    match target.jetstream.get_or_create_stream(config.clone()).await {
                        Ok(_) => ready = true,
                        Err(error) => tracing::warn!(stream = %target.stream, "the decision stream cannot be opened: {error}"),
                    }
                }
                if !connected || !ready || acks.len() >= IN_FLIGHT {
                    dropped.with_label_values(&["stream-unavailable"]).inc();
                    continue;
                }
                match target.jetstream.publish(format!("{}.{surface}", target.subject), record).await {
                    Ok(ack) => acks.push(async move { (surface, ack.await) }),
                    Err(_) => dropped.with_label_values(&["stream-unavailable"]).inc(),
                }
            }
            Some((surface, ack)) = acks.next(), if !acks.is_empty() => match ack {
                Ok(_) => published.with_label_values(&[&surface]).inc(),
                Err(_) => dropped.with_label_values(&["stream-unavailable"]).inc(),
            },
        }
    }
    // The writer has finished: wait (briefly) for what is in flight.
    let drain = async {
        while let Some((surface, ack)) = acks.next().await {
            match ack {
                Ok(_) => published.with_label_values(&[&surface]).inc(),
                Err(_) => dropped.with_label_values(&["stream-unavailable"]).inc(),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
}
