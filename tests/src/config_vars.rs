//! The configuration variables the services read, taken from the config types themselves (so
//! a doc check cannot drift from the code): a serde deserializer that only records field names.

use std::collections::BTreeSet;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A deserializer that only records the field names a struct asks for.
struct FieldNames(Vec<&'static str>);

#[derive(Debug)]
struct Stop;
impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stop")
    }
}
impl std::error::Error for Stop {}
impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for &mut FieldNames {
    type Error = Stop;
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.0.extend_from_slice(fields);
        Err(Stop)
    }
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

fn vars_of<T: for<'de> Deserialize<'de>>() -> Vec<String> {
    let mut names = FieldNames(Vec::new());
    let _ = T::deserialize(&mut names);
    assert!(!names.0.is_empty());
    names.0.iter().map(|f| f.to_uppercase()).collect()
}

/// Every environment variable either service reads, upper-cased.
pub fn all_vars() -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    all.extend(vars_of::<portail_agent::AgentSettings>());
    all.extend(vars_of::<portail_core::config::DatabaseConfig>());
    all.extend(vars_of::<portail_core::config::S3Config>());
    all.extend(vars_of::<portail_core::config::LogConfig>());
    all.extend(vars_of::<portail_url_service::ServiceSettings>());
    all
}
