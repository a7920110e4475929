//! weir's two clocks, each computed here only. `now_ms`: the clock deadlines use, Unix
//! milliseconds that advance with tokio's clock, so a paused test clock drives every deadline
//! (rollout steps, probe freshness) while stored times stay wall-clock and survive restarts.
//! `wall_ms`/`wall_secs`: the system clock as it is, for timestamps that are only shown or
//! stored (audit records, last probe results, node reports, file names).

use std::sync::OnceLock;
use std::time::SystemTime;

/// Wall-clock Unix milliseconds, advancing with tokio's clock.
pub fn now_ms() -> u64 {
    static BASE: OnceLock<(u64, tokio::time::Instant)> = OnceLock::new();
    let (wall, at) = BASE.get_or_init(|| (wall_ms(), tokio::time::Instant::now()));
    let since = tokio::time::Instant::now().saturating_duration_since(*at);
    wall.saturating_add(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// The system clock in Unix milliseconds (0 before 1970).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The system clock in Unix seconds (0 before 1970).
pub fn wall_secs() -> u64 {
    wall_ms() / 1000
}
