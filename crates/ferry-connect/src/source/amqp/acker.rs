//! Acknowledging settled records on the channel that delivered them, and giving records back.
//!
//! Settled records are acknowledged with as few frames as the broker allows: `basic.ack` with
//! `multiple` covers every delivery up to a tag, so the settled tags below the oldest delivery
//! still on its way through the run go in one frame, and only those above it one by one. The
//! acker knows which deliveries are still unacknowledged (`Current::unacked`), so a `multiple`
//! acknowledgement never covers a record that is not settled and committed. One frame instead
//! of a hundred matters for a consuming run: the acknowledgements are on the path between a
//! commit and the broker's next deliveries (the prefetch window), and every frame costs the
//! broker as much as the run.

use std::collections::BTreeSet;
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
    /// Delivery tags of messages delivered on this channel and not yet acknowledged or given
    /// back. While they are as many as the prefetch the broker sends nothing, so the queue
    /// cannot be judged idle.
    pub(super) unacked: BTreeSet<u64>,
}

/// The acknowledgement frames for `settled` tags, given the oldest delivery still
/// unacknowledged after them (`Current::unacked`): the highest settled tag below it,
/// acknowledged with `multiple` (it covers exactly the settled tags up to it: every lower
/// delivery is settled, or was acknowledged or given back before), and the settled tags above
/// an unacknowledged one, acknowledged one by one.
fn ack_frames(settled: &[u64], oldest_unacked: Option<u64>) -> (Option<u64>, Vec<u64>) {
    let oldest = oldest_unacked.unwrap_or(u64::MAX);
    let multiple = settled.iter().copied().filter(|t| *t < oldest).max();
    let single = settled.iter().copied().filter(|t| *t > oldest).collect();
    (multiple, single)
}

/// Acknowledges (after commit) and releases (run stopped) records of an [`super::AmqpConsumer`].
pub struct AmqpAcker {
    pub(super) current: Arc<Mutex<Current>>,
    pub(super) broker: String,
    pub(super) prefetch: usize,
    /// One acknowledgement or release at a time: the frames of one are planned from
    /// `Current::unacked` and must reach the broker before another plans a `multiple` that could
    /// cover them.
    pub(super) sending: tokio::sync::Mutex<()>,
}

impl AmqpAcker {
    /// The channel and the tags of `receipts` delivered on it, taken out of the unacknowledged
    /// ones; receipts of an earlier channel are left out (the broker requeued those messages
    /// when that channel was lost). With the oldest delivery still unacknowledged after them.
    fn on_current(&self, receipts: &[Receipt]) -> (Option<lapin::Channel>, Vec<u64>, Option<u64>) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let tags: Vec<u64> = receipts
            .iter()
            .map(|r| split(*r))
            .filter(|(g, _)| *g == current.generation)
            .map(|(_, t)| t)
            .collect();
        for t in &tags {
            current.unacked.remove(t);
        }
        if tags.len() < receipts.len() {
            tracing::debug!(
                stale = receipts.len() - tags.len(),
                "Receipts of a channel lost since are not acknowledged; the broker delivers those messages again"
            );
        }
        (
            current.channel.clone(),
            tags,
            current.unacked.first().copied(),
        )
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
        let _one = self.sending.lock().await;
        let (channel, tags, oldest) = self.on_current(receipts);
        let Some(channel) = channel else {
            return Ok(());
        };
        let (multiple, single) = ack_frames(&tags, oldest);
        if let Some(tag) = multiple {
            channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .map_err(|e| self.failed("basic.ack", &e))?;
        }
        // Sent together: each waits only for its frame to be written.
        let acks = single
            .iter()
            .map(|tag| channel.basic_ack(*tag, BasicAckOptions::default()));
        for r in futures::future::join_all(acks).await {
            r.map_err(|e| self.failed("basic.ack", &e))?;
        }
        Ok(())
    }

    async fn release(&self, receipts: &[Receipt]) -> Result<(), ConnectError> {
        let _one = self.sending.lock().await;
        let (channel, tags, _) = self.on_current(receipts);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_tags_below_every_unacknowledged_one_go_in_one_frame() {
        // 1..=5 settled, 6 still on its way, 7 and 9 settled: 5 with `multiple`, 7 and 9 alone.
        let (multiple, single) = ack_frames(&[3, 1, 7, 2, 5, 4, 9], Some(6));
        assert_eq!(multiple, Some(5));
        assert_eq!(single, vec![7, 9]);
        // Nothing unacknowledged left: one frame for all.
        assert_eq!(ack_frames(&[4, 2, 3], None), (Some(4), vec![]));
        // The oldest delivery is still on its way: every settled tag alone.
        assert_eq!(ack_frames(&[4, 2], Some(1)), (None, vec![4, 2]));
        assert_eq!(ack_frames(&[], Some(1)), (None, vec![]));
    }
}
