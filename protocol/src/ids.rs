//! Short sequential ids (`T-12`, `M-40`) that agents can type in chat.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The reason an id string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIdError {
    /// What kind of id was expected, e.g. "task id".
    pub expected: &'static str,
    /// The prefix of that id kind, e.g. "T".
    pub prefix: char,
    /// The text that was given.
    pub given: String,
}

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a {} (expected {}-<number>, e.g. {}-12)",
            self.given, self.expected, self.prefix, self.prefix
        )
    }
}

impl std::error::Error for ParseIdError {}

macro_rules! short_id {
    ($name:ident, $prefix:literal, $what:literal, $pattern:expr) => {
        #[doc = concat!("A ", $what, " such as `", $prefix, "-12`: a prefix and a sequential number starting at 1.")]
        ///
        /// Parsing accepts the prefix in either case, or the bare number, with leading zeros;
        /// the number is below 10^19 (19 digits), as the schema's pattern says.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}-{}", $prefix, self.0)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = || ParseIdError {
                    expected: $what,
                    prefix: $prefix.chars().next().unwrap_or('?'),
                    given: s.chars().take(40).collect(),
                };
                let digits = match s.split_once('-') {
                    Some((p, n)) if p.eq_ignore_ascii_case($prefix) => n,
                    Some(_) => return Err(err()),
                    None => s,
                };
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err());
                }
                if digits.trim_start_matches('0').len() > 19 {
                    return Err(err());
                }
                match digits.parse::<u64>() {
                    Ok(n) if n > 0 => Ok($name(n)),
                    _ => Err(err()),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some($pattern))
                    .description(Some(concat!("A ", $what, ", e.g. `", $prefix, "-12`.")))
                    .examples([concat!($prefix, "-12")])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

short_id!(TaskId, "T", "task id", crate::grammar::TASK_ID);
short_id!(MessageId, "M", "message id", crate::grammar::MESSAGE_ID);
short_id!(ReservationId, "R", "reservation id", crate::grammar::RESERVATION_ID);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_parse_in_the_forms_agents_type() {
        assert_eq!("T-12".parse::<TaskId>(), Ok(TaskId(12)));
        assert_eq!("t-12".parse::<TaskId>(), Ok(TaskId(12)));
        assert_eq!("12".parse::<TaskId>(), Ok(TaskId(12)));
        assert_eq!(TaskId(7).to_string(), "T-7");
        assert_eq!("T-007".parse::<TaskId>(), Ok(TaskId(7)));
        assert_eq!("9999999999999999999".parse::<TaskId>(), Ok(TaskId(9_999_999_999_999_999_999)));
        for bad in ["", "T-", "T-0", "M-3", "T-x", "T--1", "T-1.5", "10000000000000000000", "99999999999999999999999"] {
            assert!(bad.parse::<TaskId>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn ids_are_strings_on_the_wire() {
        assert_eq!(serde_json::to_string(&MessageId(3)).unwrap(), "\"M-3\"");
        assert_eq!(serde_json::from_str::<TaskId>("\"T-9\"").unwrap(), TaskId(9));
        let err = serde_json::from_str::<TaskId>("\"nope\"").unwrap_err();
        assert!(err.to_string().contains("is not a task id"), "{err}");
    }
}
