//! Human-friendly durations (`"500ms"`, `"30s"`, `"5m"`, `"1h30m"`) and sizes
//! (`"256MiB"`, `"1GB"`, `4096`), one grammar for every config file: `cairn.toml`,
//! the mock LLM's rules file and the command line.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// Parses a duration such as `"250ms"`, `"30s"`, `"5m"`, `"2h"` or `"1h30m"`:
/// one or more numbers (decimals allowed), each followed by a unit among
/// `us` (or `µs`), `ms`, `s` (or `sec`), `m` (or `min`), `h` and `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. \"30s\", \"5m\" or \"500ms\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {text:?}: expected a number before the unit"));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: {:?} is not a number", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let seconds_per_unit = match unit {
            "us" | "µs" => 1e-6,
            "ms" => 0.001,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "" => {
                return Err(format!(
                    "invalid duration {text:?}: missing unit (use ms, s, m, h or d, e.g. \"{number}s\")"
                ));
            }
            other => {
                return Err(format!("invalid duration {text:?}: unknown unit {other:?} (use us, ms, s, m, h or d)"));
            }
        };
        total = Duration::try_from_secs_f64(number * seconds_per_unit)
            .ok()
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| format!("invalid duration {text:?}: too long"))?;
    }
    Ok(total)
}

/// A size as people read it: the largest binary unit that divides it
/// (`256 MiB`, `3 GiB`, `1500 B`).
pub fn show_size(bytes: u64) -> String {
    for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{} {unit}", bytes / scale);
        }
    }
    format!("{bytes} B")
}

/// Parses a size such as `"64MiB"`, `"1GiB"`, `"512KB"` or a plain number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    if digits == 0 {
        return Err(format!("invalid size {text:?}: write e.g. \"256MiB\", \"1GiB\" or a number of bytes"));
    }
    let number: f64 =
        text[..digits].parse().map_err(|_| format!("invalid size {text:?}: {:?} is not a number", &text[..digits]))?;
    let multiplier: u64 = match text[digits..].trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => {
            return Err(format!("invalid size {text:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)"));
        }
    };
    Ok((number * multiplier as f64) as u64)
}

/// Serde adapter for durations written as strings.
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;
    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as \"30s\", \"5m\" or \"500ms\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(DurationVisitor)
}

/// Serde adapter for optional durations written as strings.
pub fn opt_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

/// Serde adapter for durations written as strings or as a whole number of
/// milliseconds (`latency = 250` is `latency = "250ms"`).
pub fn duration_or_millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct MillisOrDurationVisitor;
    impl Visitor<'_> for MillisOrDurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("milliseconds as an integer, or a duration such as \"250ms\" or \"2s\"")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v).map(Duration::from_millis).map_err(|_| E::custom("a duration must not be negative"))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
    }
    deserializer.deserialize_any(MillisOrDurationVisitor)
}

/// Serde adapter for optional durations written as strings or milliseconds.
pub fn opt_duration_or_millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    duration_or_millis(deserializer).map(Some)
}

/// Serde adapter for sizes written as strings or plain byte counts.
pub fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct SizeVisitor;
    impl Visitor<'_> for SizeVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a size such as \"256MiB\" or a number of bytes")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse_size(v).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom("a size cannot be negative"))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
    }
    deserializer.deserialize_any(SizeVisitor)
}

/// Serde adapter for optional sizes.
pub fn opt_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    size(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5").unwrap_err().contains("missing unit"));
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999999d").unwrap_err().contains("too long"));
    }

    /// What the mock's rules file accepted before it shared this grammar.
    #[test]
    fn durations_of_the_mock_rules_file() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1min"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("250µs"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(show_size(256 << 20), "256 MiB");
        assert_eq!(show_size(3 << 30), "3 GiB");
        assert_eq!(show_size(1500), "1500 B");
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("2KB").unwrap(), 2000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 bananas").unwrap_err().contains("unknown unit"));
        assert!(parse_size("MiB").is_err());
    }
}
