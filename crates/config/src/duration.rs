//! Durations written like `8ms`, `5s`, `1m`. Zero, negative or missing values mean "use the default",
//! which is applied in one place: `Settings::apply_defaults`.

use serde::{de, Deserialize, Deserializer};
use std::time::Duration;

/// Deserialize a duration string. `0`, `-1`, `-5s` and `""` become `Duration::ZERO` (= default).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Float(f64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Int(n) if n <= 0 => Ok(Duration::ZERO),
        Raw::Float(n) if n <= 0.0 => Ok(Duration::ZERO),
        Raw::Int(n) => Err(de::Error::custom(format!(
            "duration `{n}` has no unit: write it like `{n}ms` or `{n}s`"
        ))),
        Raw::Float(n) => Err(de::Error::custom(format!(
            "duration `{n}` has no unit: write it like `500ms` or `2s`"
        ))),
        Raw::Text(text) => parse(&text).map_err(de::Error::custom),
    }
}

/// Parse `8ms`, `5s`, `1m 30s`; non-positive values give `Duration::ZERO`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() || text.starts_with('-') || text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("cannot parse duration `{text}` ({e}); write it like `8ms`, `5s` or `2m`")
    })
}

/// `value` unless it is zero, then `default`.
pub(crate) fn or_default(value: &mut Duration, default: Duration) {
    if value.is_zero() {
        *value = default;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_treats_non_positive_as_default() {
        assert_eq!(parse("8ms"), Ok(Duration::from_millis(8)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("-3s"), Ok(Duration::ZERO));
        assert_eq!(parse(""), Ok(Duration::ZERO));
        assert!(parse("five seconds").is_err());
    }
}
