//! One scenario across several agents: shard `I` of `N` places the calls whose number `i`
//! has `i % N == I`, each at the time the whole scenario gives call `i`. So N agents that
//! start together (`--start-at`) are the scenario: its rate, its calls, its ramp, with every
//! call number used once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config_file::ConfigError as ScenarioError;

/// Which share of a scenario this agent runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This agent's index, from 0.
    pub index: u32,
    /// How many agents share the scenario.
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Shard {
        Shard { index: 0, count: 1 }
    }
}

/// The environment variable a Kubernetes Indexed Job sets in each pod.
pub const INDEX_VAR: &str = "JOB_COMPLETION_INDEX";

impl Shard {
    /// Reads `I/N` (`0/4`: the first of four).
    pub fn parse(text: &str) -> Result<Shard, ScenarioError> {
        let bad = |why: &str| ScenarioError::Invalid {
            key: "--shard",
            why: format!("{text:?}: {why}"),
        };
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| bad("is I/N, e.g. 0/4"))?;
        let index: u32 = i.trim().parse().map_err(|_| bad("I is not a number"))?;
        let count: u32 = n.trim().parse().map_err(|_| bad("N is not a number"))?;
        Shard::new(index, count).map_err(|why| bad(&why))
    }

    /// Shard `index` of `count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 {
            return Err("N must be at least 1".into());
        }
        if index >= count {
            return Err(format!("I must be below N ({index} of {count})"));
        }
        Ok(Shard { index, count })
    }

    /// Shard `value` (the Indexed Job's completion index, as text) of `count`.
    pub fn from_index(value: Option<&str>, count: u32) -> Result<Shard, ScenarioError> {
        let bad = |why: String| ScenarioError::Invalid {
            key: INDEX_VAR,
            why,
        };
        let value = value.ok_or_else(|| {
            bad(format!(
                "the scenario has {count} shards: give --shard I/{count}, or run where \
                 {INDEX_VAR} is set (a Kubernetes Indexed Job)"
            ))
        })?;
        let index: u32 = value
            .trim()
            .parse()
            .map_err(|_| bad(format!("{value:?} is not a number")))?;
        Shard::new(index, count).map_err(bad)
    }

    /// Whether call number `i` of the scenario is this shard's.
    pub fn owns(self, i: u64) -> bool {
        i % u64::from(self.count) == u64::from(self.index)
    }

    /// How many of the scenario's first `calls` calls are this shard's.
    pub fn share(self, calls: u64) -> u64 {
        let (n, i) = (u64::from(self.count), u64::from(self.index));
        calls / n + u64::from(calls % n > i)
    }

    /// Whether the scenario is split at all.
    pub fn is_split(self) -> bool {
        self.count > 1
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Reads a common start time: Unix seconds (`1765000000`, `1765000000.5`) or RFC 3339
/// (`2026-12-06T10:00:00Z`).
pub fn parse_start_at(text: &str) -> Result<SystemTime, ScenarioError> {
    let bad = |why: &str| ScenarioError::Invalid {
        key: "--start-at",
        why: format!("{text:?}: {why}"),
    };
    if let Ok(secs) = text.trim().parse::<f64>() {
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(bad("not a time"));
        }
        return Ok(UNIX_EPOCH + Duration::from_secs_f64(secs));
    }
    let t =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .map_err(|_| bad("is Unix seconds or RFC 3339 (2026-12-06T10:00:00Z)"))?;
    let nanos = t.unix_timestamp_nanos();
    let nanos = u64::try_from(nanos).map_err(|_| bad("is before 1970"))?;
    Ok(UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// How long to wait from `now` until `at` (zero when it has passed).
pub fn wait_until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_every_call_once_and_the_counts_add_up() {
        for n in 1..=7u32 {
            let shards: Vec<Shard> = (0..n).map(|i| Shard::new(i, n).unwrap()).collect();
            for calls in [0u64, 1, 5, 100, 1001] {
                let total: u64 = shards.iter().map(|s| s.share(calls)).sum();
                assert_eq!(total, calls, "{n} shards of {calls}");
                for i in 0..calls {
                    assert_eq!(shards.iter().filter(|s| s.owns(i)).count(), 1);
                }
                for s in &shards {
                    assert_eq!(
                        s.share(calls),
                        (0..calls).filter(|&i| s.owns(i)).count() as u64
                    );
                }
            }
        }
    }

    #[test]
    fn shard_text_and_index_are_checked() {
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
        assert_eq!(Shard::parse("1/4").unwrap().to_string(), "1/4");
        for bad in ["4/4", "1", "a/2", "0/0", "-1/2"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Shard::from_index(Some("2"), 3).unwrap(),
            Shard { index: 2, count: 3 }
        );
        let e = Shard::from_index(None, 3).unwrap_err().to_string();
        assert!(
            e.contains("JOB_COMPLETION_INDEX") && e.contains("--shard I/3"),
            "{e}"
        );
        assert!(Shard::from_index(Some("3"), 3).is_err());
    }

    #[test]
    fn start_times_read_as_unix_seconds_or_rfc3339() {
        let a = parse_start_at("1765015200").unwrap();
        let b = parse_start_at("2025-12-06T10:00:00Z").unwrap();
        let c = parse_start_at("2025-12-06T11:00:00+01:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(
            parse_start_at("1765015200.5").unwrap(),
            a + Duration::from_millis(500)
        );
        assert!(parse_start_at("tomorrow").is_err());
        assert_eq!(wait_until(a, a + Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(
            wait_until(b, a - Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }
}
