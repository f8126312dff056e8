//! A flow's retry settings (`policy.retry`, `source.http.retry`, `source.amqp.retry`) as the
//! resilience layer's policy: one translation for every user of the one retry layer.

use ferry_resilience::{Jitter, PolicyError, RetryPolicy};

/// The retry policy of these settings, or why they are out of range.
pub fn retry_policy(spec: &ferry_spec::RetrySpec) -> Result<RetryPolicy, PolicyError> {
    let jitter = match spec.jitter {
        ferry_spec::Jitter::Full => Jitter::Full,
        ferry_spec::Jitter::Equal => Jitter::Equal,
        ferry_spec::Jitter::None => Jitter::None,
    };
    RetryPolicy::try_new(
        spec.attempts,
        spec.initial.get(),
        spec.max.get(),
        jitter,
        spec.max_elapsed.get(),
    )
}
