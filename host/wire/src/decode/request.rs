//! The request object and everything in it but the candidates' own shapes: the top-level fields,
//! `user`, `context` and its cart, and the `candidates` field, which dispatches on the shape.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::builder::{Builder, degrees, empty_tags, parse_time};
use super::fields::{Fields, Str, Value, check, fields, next_field, nullable, optional};
use super::tags::{TagsSeed, close_row};
use super::{REQUEST_ID_RULE, columnar, is_request_id, row};
use crate::types;

pub(super) struct RequestSeed<'b, 'o>(pub(super) &'b mut Builder<'o>);

fields! {
    /// The top-level fields of a request.
    enum Top {
        RequestId = "request_id",
        BucketKey = "bucket_key",
        Surface = "surface",
        Seed = "seed",
        Limit = "limit",
        User = "user",
        Context = "context",
        Candidates = "candidates",
    }
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a ranking request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.0;
        let mut seen = 0;
        while let Some(field) = next_field(&mut map, &mut seen)? {
            match field {
                Top::RequestId => {
                    b.request_id = map.next_value_seed(check(|id: Option<String>| match id {
                        Some(id) if !is_request_id(&id) => Err(format!("must be {REQUEST_ID_RULE}")),
                        id => Ok(id),
                    }))?;
                }
                Top::BucketKey => {
                    b.bucket_key = map.next_value_seed(check(|key: Option<String>| match key {
                        Some(key) if key.is_empty() || key.len() > 256 => {
                            Err("must be 1 to 256 bytes (a device or session id)".to_owned())
                        }
                        key => Ok(key),
                    }))?;
                }
                Top::Surface => b.surface = optional(&mut map)?,
                Top::Seed => b.seed = optional(&mut map)?,
                Top::Limit => b.limit = optional(&mut map)?,
                Top::User => map.next_value_seed(UserSeed(b))?,
                Top::Context => map.next_value_seed(ContextSeed(b))?,
                Top::Candidates => map.next_value_seed(CandidatesSeed(b))?,
            }
        }
        Ok(())
    }
}

struct UserSeed<'b, 'o>(&'b mut Builder<'o>);

fields! {
    /// The fields of `user`.
    enum UserField {
        Id = "id",
        Features = "features",
    }
}

impl<'de> DeserializeSeed<'de> for UserSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for UserSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a user object `{\"id\": ..., \"features\": {...}}` or null")
    }

    nullable!(deserialize_map);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.0;
        let mut seen = 0;
        while let Some(field) = next_field(&mut map, &mut seen)? {
            match field {
                UserField::Id => b.user_id = optional(&mut map)?,
                UserField::Features => map.next_value_seed(UserFeaturesSeed(b))?,
            }
        }
        Ok(())
    }
}

struct UserFeaturesSeed<'b, 'o>(&'b mut Builder<'o>);

impl<'de> DeserializeSeed<'de> for UserFeaturesSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for UserFeaturesSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of feature names to numbers")
    }

    nullable!(deserialize_map);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<Str<'de>>()? {
            map.next_value_seed(UserFeatureSeed { builder: self.0, name: &name.0 })?;
        }
        Ok(())
    }
}

/// The value of one user feature; `null` leaves the feature out.
struct UserFeatureSeed<'b, 'n, 'o> {
    builder: &'b mut Builder<'o>,
    name: &'n str,
}

impl<'de> DeserializeSeed<'de> for UserFeatureSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let Value(value) = de::Deserialize::deserialize(deserializer)?;
        self.builder.user_feature(self.name, value).map_err(de::Error::custom)
    }
}

struct ContextSeed<'b, 'o>(&'b mut Builder<'o>);

fields! {
    /// The fields of `context`.
    enum ContextField {
        Country = "country",
        City = "city",
        Locale = "locale",
        Lat = "lat",
        Lon = "lon",
        Device = "device",
        Time = "time",
        Cart = "cart",
    }
}

impl<'de> DeserializeSeed<'de> for ContextSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ContextSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a context object or null")
    }

    nullable!(deserialize_map);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.0;
        let mut seen = 0;
        while let Some(field) = next_field(&mut map, &mut seen)? {
            match field {
                ContextField::Country => b.context.country = optional(&mut map)?,
                ContextField::City => b.context.city = optional(&mut map)?,
                ContextField::Locale => b.context.locale = optional(&mut map)?,
                ContextField::Device => b.context.device = optional(&mut map)?,
                ContextField::Lat => b.context.latitude = map.next_value_seed(check(|v| degrees(v, 90.0)))?,
                ContextField::Lon => b.context.longitude = map.next_value_seed(check(|v| degrees(v, 180.0)))?,
                ContextField::Time => {
                    let parse = |text: Option<Str<'de>>| text.map(|t| parse_time(&t.0)).transpose();
                    b.context.time = map.next_value_seed(check(parse))?;
                }
                ContextField::Cart => {
                    let mut cart = types::Cart { item_ids: types::StringColumn::empty(), tags: empty_tags() };
                    map.next_value_seed(CartSeed { builder: b, cart: &mut cart })?;
                    b.cart = Some(cart);
                }
            }
        }
        Ok(())
    }
}

/// The cart: an array of items, or `null` for none.
struct CartSeed<'b, 'c, 'o> {
    builder: &'b mut Builder<'o>,
    cart: &'c mut types::Cart,
}

impl<'de> DeserializeSeed<'de> for CartSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for CartSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of cart items `{\"id\": ..., \"tags\": [...]}` or null")
    }

    nullable!(deserialize_seq);

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(()) = seq.next_element_seed(CartItemSeed { builder: self.builder, cart: self.cart })? {}
        Ok(())
    }
}

struct CartItemSeed<'b, 'c, 'o> {
    builder: &'b mut Builder<'o>,
    cart: &'c mut types::Cart,
}

fields! {
    /// The fields of a cart item.
    enum CartItemField {
        Id = "id",
        Tags = "tags",
    }
}

impl<'de> DeserializeSeed<'de> for CartItemSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let max = self.builder.options.max_candidates;
        if self.cart.item_ids.len() >= max {
            return Err(de::Error::custom(
                self.builder.too_large(format!("too many cart items: at most {max} allowed")),
            ));
        }
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CartItemSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a cart item `{\"id\": ..., \"tags\": [...]}`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut id = None;
        let mut seen = 0;
        while let Some(field) = next_field(&mut map, &mut seen)? {
            match field {
                CartItemField::Id => id = Some(map.next_value::<String>()?),
                CartItemField::Tags => {
                    map.next_value_seed(TagsSeed { builder: self.builder, column: &mut self.cart.tags })?
                }
            }
        }
        let id = id.ok_or_else(|| de::Error::missing_field("id"))?;
        self.cart.item_ids.push(&id);
        close_row(&mut self.cart.tags, self.cart.item_ids.len());
        Ok(())
    }
}

struct CandidatesSeed<'b, 'o>(&'b mut Builder<'o>);

impl<'de> DeserializeSeed<'de> for CandidatesSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CandidatesSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of candidates (row shape) or an object of columns (columnar shape)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        row::candidates(self.0, seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        columnar::candidates(self.0, map)
    }
}
