//! The tags of one row, shared by cart items, row-shape candidates and columnar tag rows.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};

use super::builder::Builder;
use super::fields::{StrSeed, nullable};
use crate::types;

/// Closes the tag row of item `rows - 1`, adding an empty row if the item had no `tags`.
pub(super) fn close_row(column: &mut types::TagColumn, rows: usize) {
    while column.offsets.len() < rows + 1 {
        column.offsets.push(column.indices.len() as u32);
    }
}

/// Tags of one row: appended to `column.indices` (distinct, in order); the row is closed by the
/// caller.
pub(super) struct TagsSeed<'b, 'c, 'o> {
    pub(super) builder: &'b mut Builder<'o>,
    pub(super) column: &'c mut types::TagColumn,
}

impl<'de> DeserializeSeed<'de> for TagsSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for TagsSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of tag strings or null")
    }

    nullable!(deserialize_seq);

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (b, column) = (self.builder, self.column);
        let start = column.indices.len();
        while let Some(()) = seq.next_element_seed(StrSeed::new("a tag string", |tag| b.tag(column, start, tag)))? {}
        Ok(())
    }
}
