//! Waiting for a condition with a deadline, never sleeping blindly.

use std::time::{Duration, Instant};

/// Polls `f` every 20 ms until it returns `Some`, failing after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
