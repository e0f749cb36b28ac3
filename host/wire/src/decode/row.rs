//! The row shape: `candidates` is an array of `{id, features, tags}` objects.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::Shape;
use super::builder::{Builder, empty_tags};
use super::fields::{Fields, StrSeed, Value, fields, next_field, nullable};
use super::tags::{TagsSeed, close_row};
use crate::types;

/// The candidates of the row shape, one object each.
pub(super) fn candidates<'de, A: SeqAccess<'de>>(b: &mut Builder<'_>, mut seq: A) -> Result<(), A::Error> {
    b.shape = Some(Shape::Rows);
    let mut tags = empty_tags();
    while let Some(()) = seq.next_element_seed(CandidateSeed { builder: b, tags: &mut tags })? {}
    b.candidate_tags = Some(tags);
    Ok(())
}

/// One candidate of the row shape.
struct CandidateSeed<'b, 'c, 'o> {
    builder: &'b mut Builder<'o>,
    tags: &'c mut types::TagColumn,
}

fields! {
    /// The fields of a candidate in the row shape.
    enum CandidateField {
        Id = "id",
        Features = "features",
        Tags = "tags",
    }
}

impl<'de> DeserializeSeed<'de> for CandidateSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        // Checked before reading, so one candidate too many is rejected without parsing it.
        self.builder.room_for_candidate().map_err(de::Error::custom)?;
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CandidateSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a candidate `{\"id\": ..., \"features\": {...}, \"tags\": [...]}`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.builder;
        // The id is appended when it is read, which may be after the features.
        let row = b.candidates() as u32;
        let mut has_id = false;
        let mut seen = 0;
        while let Some(field) = next_field(&mut map, &mut seen)? {
            match field {
                CandidateField::Id => {
                    map.next_value_seed(StrSeed::new("a candidate id string", |id| b.push_id(id)))?;
                    has_id = true;
                }
                CandidateField::Features => map.next_value_seed(RowFeaturesSeed { builder: b, row })?,
                CandidateField::Tags => map.next_value_seed(TagsSeed { builder: b, column: self.tags })?,
            }
        }
        if !has_id {
            return Err(de::Error::missing_field("id"));
        }
        close_row(self.tags, row as usize + 1);
        Ok(())
    }
}

/// One candidate's features in the row shape.
struct RowFeaturesSeed<'b, 'o> {
    builder: &'b mut Builder<'o>,
    row: u32,
}

impl<'de> DeserializeSeed<'de> for RowFeaturesSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for RowFeaturesSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of feature names to numbers")
    }

    nullable!(deserialize_map);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.builder;
        let mut next = 0;
        // The column is found (or added) as the key is read, so that a feature past the limit is
        // reported at its own path.
        while let Some(column) = map.next_key_seed(StrSeed::new("a feature name", |name| b.column_at(name, next)))? {
            let Value(value) = map.next_value_seed(RowValueSeed { builder: b, row: self.row, column })?;
            if !value.is_nan() {
                b.rows.set(self.row, column, value);
            }
            next = column as usize + 1;
        }
        b.rows.end_row(b.feature_names.len());
        Ok(())
    }
}

/// One value of a candidate's features, refused when the candidate named its feature already
/// (read as the value, so that the error's path ends in the feature's name).
struct RowValueSeed<'b, 'o> {
    builder: &'b mut Builder<'o>,
    row: u32,
    column: u32,
}

impl<'de> DeserializeSeed<'de> for RowValueSeed<'_, '_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        let value = <Value as de::Deserialize>::deserialize(deserializer)?;
        self.builder.mark_row_feature(self.row, self.column).map_err(de::Error::custom)?;
        Ok(value)
    }
}
