//! Exact quantities: byte sizes (`64Mi`), CPU amounts (`0.5`, `500m`) and
//! durations (`30s`). All are parsed with integer arithmetic so that a value
//! never silently rounds: `0.0005` CPUs or `1.5` bytes are errors, not zero.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes, written as an integer or with a Kubernetes-style suffix
/// (`Ki`, `Mi`, `Gi`, `Ti` binary; `k`, `M`, `G`, `T` decimal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

/// An amount of CPU in millicores: `1` is one CPU, `0.5` and `500m` are half.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpus(u64);

/// A wall-clock duration with millisecond precision: `500ms`, `30s`, `5m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timeout(u64);

const BYTE_UNITS: &[(&str, u64)] = &[
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
];

const DURATION_UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];

impl ByteSize {
    pub const fn from_bytes(bytes: u64) -> Self {
        Self(bytes)
    }
    pub const fn mebibytes(mib: u64) -> Self {
        Self(mib << 20)
    }
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl Cpus {
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }
    pub const fn millis(self) -> u64 {
        self.0
    }
}

impl Timeout {
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs * 1_000)
    }
    pub const fn millis(self) -> u64 {
        self.0
    }
    pub fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

/// Parses `<digits>[.<digits>]` scaled by `scale`, refusing any remainder.
fn scaled_decimal(number: &str, scale: u64) -> Option<u64> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (number.contains('.') && frac.is_empty()) {
        return None;
    }
    let mut value = whole.parse::<u64>().ok()?.checked_mul(scale)?;
    let mut denominator: u64 = 1;
    let mut numerator: u64 = 0;
    for digit in frac.bytes() {
        denominator = denominator.checked_mul(10)?;
        numerator = numerator.checked_mul(10)? + u64::from(digit - b'0');
    }
    let scaled = numerator.checked_mul(scale)?;
    if scaled % denominator != 0 {
        return None;
    }
    value = value.checked_add(scaled / denominator)?;
    Some(value)
}

fn split_unit<'a>(text: &'a str, units: &[(&str, u64)]) -> (&'a str, Option<u64>) {
    // Longest suffix first so that "ms" wins over "s" and "Mi" over "M".
    let mut sorted: Vec<_> = units.to_vec();
    sorted.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
    for (suffix, scale) in sorted {
        if let Some(number) = text.strip_suffix(suffix) {
            return (number, Some(scale));
        }
    }
    (text, None)
}

impl FromStr for ByteSize {
    type Err = String;
    /// Zero is refused: a zero memory limit kills the sandbox at boot and a
    /// zero-sized tmpfs means "no limit" to Linux.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (number, scale) = split_unit(text, BYTE_UNITS);
        match scaled_decimal(number, scale.unwrap_or(1)) {
            Some(0) => Err(format!("invalid size {text:?}: must be greater than zero")),
            Some(bytes) => Ok(ByteSize(bytes)),
            None => Err(format!(
                "invalid size {text:?}: expected bytes as an integer or a whole number of bytes with a suffix Ki, Mi, Gi, Ti, k, M, G or T (e.g. 64Mi)"
            )),
        }
    }
}

impl FromStr for Cpus {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parsed = match text.strip_suffix('m') {
            Some(millis) => scaled_decimal(millis, 1),
            None => scaled_decimal(text, 1_000),
        };
        match parsed {
            Some(0) => Err(format!("invalid CPU amount {text:?}: must be greater than zero")),
            Some(millis) => Ok(Cpus(millis)),
            None => Err(format!("invalid CPU amount {text:?}: expected a number of CPUs with at most 3 decimals (e.g. 0.5) or millicores (e.g. 500m)")),
        }
    }
}

impl FromStr for Timeout {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match split_unit(text, DURATION_UNITS) {
            (number, Some(scale)) => match scaled_decimal(number, scale) {
                Some(0) => Err(format!("invalid duration {text:?}: must be greater than zero")),
                Some(millis) => Ok(Timeout(millis)),
                None => Err(format!("invalid duration {text:?}: expected a whole number of milliseconds, e.g. 500ms, 30s, 5m, 1h")),
            },
            (_, None) => Err(format!("invalid duration {text:?}: expected a number with a unit ms, s, m or h (e.g. 30s)")),
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, scale) in BYTE_UNITS[..4].iter().rev() {
            if self.0 >= *scale && self.0 % scale == 0 {
                return write!(f, "{}{suffix}", self.0 / scale);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 1_000 == 0 {
            write!(f, "{}", self.0 / 1_000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, scale) in DURATION_UNITS.iter().rev() {
            if self.0 % scale == 0 {
                return write!(f, "{}{suffix}", self.0 / scale);
            }
        }
        unreachable!("every duration is a whole number of milliseconds")
    }
}

/// Serde glue shared by the three quantities: accept YAML/TOML integers,
/// floats and strings, and always serialize the canonical string form.
macro_rules! quantity_serde {
    ($ty:ident, $expecting:literal, $schema_description:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct QuantityVisitor;
                impl Visitor<'_> for QuantityVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                    fn visit_f64<E: de::Error>(self, v: f64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                }
                deserializer.deserialize_any(QuantityVisitor)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": ["string", "number"],
                    "description": $schema_description,
                })
            }
        }
    };
}

quantity_serde!(
    ByteSize,
    "a size such as 64Mi",
    "Bytes as an integer, or with a suffix Ki, Mi, Gi, Ti (binary) or k, M, G, T (decimal), e.g. 64Mi."
);
quantity_serde!(
    Cpus,
    "a CPU amount such as 0.5 or 500m",
    "CPUs as a number with at most 3 decimals (0.5) or millicores (500m)."
);
quantity_serde!(
    Timeout,
    "a duration such as 30s",
    "A duration with a unit: ms, s, m or h, e.g. 30s."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_exactly() {
        assert_eq!("64Mi".parse::<ByteSize>().unwrap().bytes(), 64 << 20);
        assert_eq!("1.5Gi".parse::<ByteSize>().unwrap().bytes(), 3 << 29);
        assert_eq!("2k".parse::<ByteSize>().unwrap().bytes(), 2_000);
        assert_eq!("4096".parse::<ByteSize>().unwrap().bytes(), 4096);
        assert!("1.5".parse::<ByteSize>().is_err());
        assert!("64MB".parse::<ByteSize>().is_err());
        assert!("-1Mi".parse::<ByteSize>().is_err());
        assert!("Mi".parse::<ByteSize>().is_err());
        assert!("1.Mi".parse::<ByteSize>().is_err());
        assert!("0".parse::<ByteSize>().is_err());
        assert!("0Mi".parse::<ByteSize>().is_err());
    }

    #[test]
    fn cpus_parse_exactly() {
        assert_eq!("0.5".parse::<Cpus>().unwrap().millis(), 500);
        assert_eq!("250m".parse::<Cpus>().unwrap().millis(), 250);
        assert_eq!("2".parse::<Cpus>().unwrap().millis(), 2_000);
        assert!("0.0005".parse::<Cpus>().is_err());
        assert!("0".parse::<Cpus>().is_err());
    }

    #[test]
    fn durations_parse_exactly() {
        assert_eq!("30s".parse::<Timeout>().unwrap().millis(), 30_000);
        assert_eq!("500ms".parse::<Timeout>().unwrap().millis(), 500);
        assert_eq!("1.5m".parse::<Timeout>().unwrap().millis(), 90_000);
        assert!("30".parse::<Timeout>().is_err());
        assert!("0s".parse::<Timeout>().is_err());
    }

    #[test]
    fn display_is_canonical() {
        assert_eq!(ByteSize::from_bytes(64 << 20).to_string(), "64Mi");
        assert_eq!(ByteSize::from_bytes(1000).to_string(), "1000");
        assert_eq!(Cpus::from_millis(500).to_string(), "500m");
        assert_eq!(Cpus::from_millis(2000).to_string(), "2");
        assert_eq!(Timeout::from_millis(90_000).to_string(), "90s");
        assert_eq!(Timeout::from_millis(120_000).to_string(), "2m");
    }

    #[test]
    fn yaml_numbers_are_accepted() {
        let cpus: Cpus = serde_yaml_ng::from_str("0.25").unwrap();
        assert_eq!(cpus.millis(), 250);
        let size: ByteSize = serde_yaml_ng::from_str("1024").unwrap();
        assert_eq!(size.bytes(), 1024);
    }
}
