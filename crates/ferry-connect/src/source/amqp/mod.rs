//! A RabbitMQ queue (AMQP 0-9-1) as a source: consumed with manual acknowledgements and a
//! prefetch, each message acknowledged only once its record is settled *and* the outcome is
//! committed in the state store.
//!
//! # Layout
//! - `consumer.rs`: [`AmqpConsumer`], the [`Source`](crate::Source): opening the channel
//!   (through the retry layer), batches of what the broker delivered, the end of a run once the
//!   queue stayed idle;
//! - `acker.rs`: [`AmqpAcker`], the [`Acker`](crate::Acker) the engine acknowledges and
//!   releases settled records through.
//!
//! # Guarantees, and what they cost
//! A message is acknowledged after its outcome (delivered, skipped, filtered, dead-lettered) is
//! committed, so a crash at any point leaves it in the queue, and the broker delivers it again;
//! the ledger recognises the record (same body, same key) and skips it. A receipt is the
//! delivery tag with the channel's generation in its top 16 bits: a tag is only valid on the
//! channel that delivered it, so once a connection is lost and reopened, receipts of the old
//! channel are not acknowledged (the broker has put those messages back already). The cost is
//! that a filtered or dead-lettered message whose acknowledgement was lost that way is
//! filtered, or dead-lettered, again.
//!
//! A message that is not JSON or is larger than `max_message_bytes` is handed to the engine as
//! [`Unreadable`](crate::Unreadable) with its raw bytes, dead-lettered and acknowledged.

mod acker;
mod consumer;

pub use acker::AmqpAcker;
pub use consumer::AmqpConsumer;

/// Bits of a receipt that hold the delivery tag; the rest hold the channel's generation.
const TAG_BITS: u32 = 48;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;

/// The receipt of a delivery tag on the channel of `generation`.
fn receipt(generation: u64, tag: u64) -> u64 {
    (generation << TAG_BITS) | (tag & TAG_MASK)
}

/// The channel generation and the delivery tag of a receipt.
fn split(receipt: u64) -> (u64, u64) {
    (receipt >> TAG_BITS, receipt & TAG_MASK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_carry_their_channel_generation() {
        let r = receipt(3, 42);
        assert_eq!(split(r), (3, 42));
        assert_ne!(receipt(2, 42), r);
        assert_eq!(split(receipt(0xffff, TAG_MASK)), (0xffff, TAG_MASK));
    }
}
