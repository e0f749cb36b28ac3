//! The columnar shape: `candidates` is an object of columns `{ids, feature_names, features, tags}`.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::Shape;
use super::builder::{Builder, empty_tags};
use super::fields::{EachStr, Fields, Value, fields, next_field};
use super::tags::{TagsSeed, close_row};
use crate::types;

fields! {
    /// The columns of the columnar shape.
    enum ColumnsField {
        Ids = "ids",
        FeatureNames = "feature_names",
        Features = "features",
        Tags = "tags",
    }
}

/// The candidates of the columnar shape, as an object of columns.
pub(super) fn candidates<'de, A: MapAccess<'de>>(b: &mut Builder<'_>, mut map: A) -> Result<(), A::Error> {
    b.shape = Some(Shape::Columns);
    let mut values: Option<Vec<f32>> = None;
    let mut tags: Option<types::TagColumn> = None;
    let mut seen = 0;
    while let Some(field) = next_field(&mut map, &mut seen)? {
        match field {
            ColumnsField::Ids => {
                map.next_value_seed(EachStr::new("an array of candidate id strings", |id| b.push_id(id)))?
            }
            ColumnsField::FeatureNames => {
                let new_column = |name: &str| b.new_column(name);
                map.next_value_seed(EachStr::new("an array of distinct feature names", new_column))?
            }
            ColumnsField::Features => values = Some(map.next_value_seed(MatrixSeed(b))?),
            ColumnsField::Tags => tags = Some(map.next_value_seed(TagRowsSeed(b))?),
        }
    }
    // The columns may come in any order, so their lengths are checked once all are read.
    let n = b.candidates();
    let d = b.feature_names.len();
    let values = values.unwrap_or_default();
    let need = n.checked_mul(d);
    if Some(values.len()) != need {
        let message = if let Some(need) = need
            && d > 0
        {
            format!("has {} values but {n} candidates × {d} feature names need {need}", values.len())
        } else if d > 0 {
            format!("has {} values, but {n} candidates × {d} feature names is too many", values.len())
        } else {
            "has values but `feature_names` is empty or missing".to_owned()
        };
        return Err(b.invalid_at("candidates.features", message));
    }
    b.matrix = Some(values);
    match tags {
        Some(tags) if tags.offsets.len() != n + 1 => {
            let message = format!("has {} rows but there are {n} candidates", tags.offsets.len() - 1);
            return Err(b.invalid_at("candidates.tags", message));
        }
        tags => b.candidate_tags = tags,
    }
    Ok(())
}

struct MatrixSeed<'b, 'o>(&'b mut Builder<'o>);

impl<'de> DeserializeSeed<'de> for MatrixSeed<'_, '_> {
    type Value = Vec<f32>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<f32>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for MatrixSeed<'_, '_> {
    type Value = Vec<f32>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a flat row-major array of numbers (null = missing)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<f32>, A::Error> {
        let options = self.0.options;
        let cap = options.max_candidates.saturating_mul(options.max_features).min(options.max_values);
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(cap));
        while let Some(Value(value)) = seq.next_element()? {
            if values.len() >= cap {
                return Err(de::Error::custom(
                    self.0.too_large(format!("too many feature values: at most {cap} allowed")),
                ));
            }
            values.push(value);
        }
        Ok(values)
    }
}

struct TagRowsSeed<'b, 'o>(&'b mut Builder<'o>);

impl<'de> DeserializeSeed<'de> for TagRowsSeed<'_, '_> {
    type Value = types::TagColumn;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<types::TagColumn, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for TagRowsSeed<'_, '_> {
    type Value = types::TagColumn;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array with one array of tags per candidate")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<types::TagColumn, A::Error> {
        let b = self.0;
        let mut column = empty_tags();
        let mut rows = 0;
        while let Some(()) = seq.next_element_seed(TagsSeed { builder: b, column: &mut column })? {
            rows += 1;
            if rows > b.options.max_candidates {
                let message = format!("too many tag rows: at most {} allowed", b.options.max_candidates);
                return Err(de::Error::custom(b.too_large(message)));
            }
            close_row(&mut column, rows);
        }
        Ok(column)
    }
}
