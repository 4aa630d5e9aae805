//! Marathon's launch backoff: after a task of an app ends unexpectedly the
//! next launch waits `backoffSeconds`, growing by `backoffFactor` per
//! failure up to `maxLaunchDelaySeconds`.

use model::{BackoffPolicy, LaunchBackoff, UnixMillis};

pub fn after_failure(policy: &BackoffPolicy, current: &LaunchBackoff, now: UnixMillis) -> LaunchBackoff {
    let delay = if current.delay_seconds <= 0.0 {
        policy.seconds
    } else {
        (current.delay_seconds * policy.factor).min(policy.max_launch_delay_seconds)
    };
    let delay = delay.max(0.0);
    LaunchBackoff { delay_seconds: delay, not_before: now.plus_secs_f64(delay) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_factor_and_caps() {
        let p = BackoffPolicy { seconds: 1.0, factor: 2.0, max_launch_delay_seconds: 5.0 };
        let mut b = LaunchBackoff::default();
        let mut delays = Vec::new();
        for _ in 0..5 {
            b = after_failure(&p, &b, UnixMillis(1000));
            delays.push(b.delay_seconds);
        }
        assert_eq!(delays, vec![1.0, 2.0, 4.0, 5.0, 5.0]);
        assert_eq!(b.not_before, UnixMillis(6000));
    }
}
