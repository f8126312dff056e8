//! Acknowledging settled records on the channel that delivered them, and giving records back.

use std::sync::{Arc, Mutex};

use lapin::options::{BasicAckOptions, BasicNackOptions};

use super::split;
use crate::error::ConnectError;
use crate::source::{Acker, Receipt};

/// The channel messages are delivered on now, shared by the consumer (which replaces it after
/// a reconnect) and the acker.
#[derive(Default)]
pub(super) struct Current {
    pub(super) generation: u64,
    pub(super) channel: Option<lapin::Channel>,
    /// Kept open for as long as the channel is used (acknowledgements come after the last
    /// batch was read).
    pub(super) connection: Option<lapin::Connection>,
    /// Messages delivered on this channel and not yet acknowledged or given back. While it is
    /// at the prefetch the broker sends nothing, so the queue cannot be judged idle.
    pub(super) outstanding: usize,
}

/// Acknowledges (after commit) and releases (run stopped) records of an [`super::AmqpConsumer`].
pub struct AmqpAcker {
    pub(super) current: Arc<Mutex<Current>>,
    pub(super) broker: String,
    pub(super) prefetch: usize,
}

impl AmqpAcker {
    /// The channel and the tags of `receipts` delivered on it; receipts of an earlier channel
    /// are left out (the broker requeued those messages when that channel was lost).
    fn on_current(&self, receipts: &[Receipt]) -> (Option<lapin::Channel>, Vec<u64>) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let tags: Vec<u64> = receipts
            .iter()
            .map(|r| split(*r))
            .filter(|(g, _)| *g == current.generation)
            .map(|(_, t)| t)
            .collect();
        current.outstanding = current.outstanding.saturating_sub(tags.len());
        if tags.len() < receipts.len() {
            tracing::debug!(
                stale = receipts.len() - tags.len(),
                "Receipts of a channel lost since are not acknowledged; the broker delivers those messages again"
            );
        }
        (current.channel.clone(), tags)
    }

    fn failed(&self, what: &str, e: &lapin::Error) -> ConnectError {
        ConnectError::Broker {
            broker: self.broker.clone(),
            reason: crate::amqp::BrokerError::from_lapin(what, e).reason,
        }
    }
}

#[async_trait::async_trait]
impl Acker for AmqpAcker {
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), ConnectError> {
        let (channel, tags) = self.on_current(receipts);
        let Some(channel) = channel else {
            return Ok(());
        };
        // Sent together: each waits only for its frame to be written.
        let acks = tags
            .iter()
            .map(|tag| channel.basic_ack(*tag, BasicAckOptions::default()));
        for r in futures::future::join_all(acks).await {
            r.map_err(|e| self.failed("basic.ack", &e))?;
        }
        Ok(())
    }

    async fn release(&self, receipts: &[Receipt]) -> Result<(), ConnectError> {
        let (channel, tags) = self.on_current(receipts);
        let Some(channel) = channel else {
            return Ok(());
        };
        for tag in tags {
            channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    },
                )
                .await
                .map_err(|e| self.failed("basic.nack", &e))?;
        }
        Ok(())
    }

    fn ack_batch(&self) -> Option<usize> {
        // Half the prefetch: the broker keeps delivering while the first half is committed.
        Some((self.prefetch / 2).max(1))
    }
}
