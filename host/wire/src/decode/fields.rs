//! Serde plumbing: the generic helpers every seed is written with (fixed-field objects, borrowed
//! strings, feature values, checked values, strings handed to a closure as they are read).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The fixed fields of one JSON object, with their wire names.
pub(super) trait Fields: Copy + 'static {
    /// The wire names, in the order of [`Fields::ALL`].
    const NAMES: &'static [&'static str];
    /// Every field.
    const ALL: &'static [Self];
}

/// Declares the fields of one object: an enum whose variants map to wire names.
macro_rules! fields {
    ($(#[$meta:meta])* enum $name:ident { $($variant:ident = $key:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy)]
        enum $name {
            $($variant,)*
        }

        impl Fields for $name {
            const NAMES: &'static [&'static str] = &[$($key,)*];
            const ALL: &'static [Self] = &[$(Self::$variant,)*];
        }
    };
}
pub(super) use fields;

/// Reads the next key of an object with fixed fields `F`. An unknown or repeated key is rejected
/// while it is read, so the error's path ends in that key (`candidates[3].colour`).
pub(super) fn next_field<'de, F: Fields, A: MapAccess<'de>>(
    map: &mut A,
    seen: &mut u32,
) -> Result<Option<F>, A::Error> {
    map.next_key_seed(FieldKey { seen, fields: PhantomData })
}

struct FieldKey<'s, F> {
    /// One bit per field already seen in this object.
    seen: &'s mut u32,
    fields: PhantomData<F>,
}

impl<'de, F: Fields> DeserializeSeed<'de> for FieldKey<'_, F> {
    type Value = F;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<F, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<F: Fields> Visitor<'_> for FieldKey<'_, F> {
    type Value = F;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<F, E> {
        let Some(i) = F::NAMES.iter().position(|name| *name == key) else {
            return Err(E::unknown_field(key, F::NAMES));
        };
        if *self.seen & (1 << i) != 0 {
            return Err(E::duplicate_field(F::NAMES[i]));
        }
        *self.seen |= 1 << i;
        Ok(F::ALL[i])
    }
}

/// A string that borrows from the body when it needs no unescaping.
pub(super) struct Str<'de>(pub(super) std::borrow::Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(v.to_owned().into()))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// A feature value: a number, `true`/`false` (1/0) or `null` (missing, NaN).
pub(super) struct Value(pub(super) f32);

impl<'de> de::Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, true/false or null")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                let narrowed = v as f32;
                if narrowed.is_finite() {
                    Ok(Value(narrowed))
                } else {
                    Err(E::custom(format!("{v} does not fit in a 32-bit float")))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(Value(v as f32))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value(v as f32))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
                Ok(Value(if v { 1.0 } else { 0.0 }))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value(f32::NAN))
            }
            fn visit_none<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value(f32::NAN))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// Reads an optional value where `null` means absent.
pub(super) fn optional<'de, T: de::Deserialize<'de>, A: MapAccess<'de>>(map: &mut A) -> Result<Option<T>, A::Error> {
    map.next_value::<Option<T>>()
}

/// Reads a `T`, then checks or converts it: an error from the check names the field just read.
pub(super) struct Check<T, F>(F, PhantomData<fn() -> T>);

pub(super) fn check<T, U, F: FnOnce(T) -> Result<U, String>>(f: F) -> Check<T, F> {
    Check(f, PhantomData)
}

impl<'de, T: de::Deserialize<'de>, U, F: FnOnce(T) -> Result<U, String>> DeserializeSeed<'de> for Check<T, F> {
    type Value = U;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<U, D::Error> {
        (self.0)(T::deserialize(deserializer)?).map_err(de::Error::custom)
    }
}

/// One string, handed to `f` as it is read (borrowed from the body, or unescaped into
/// serde_json's scratch buffer): nothing is allocated, and an error from `f` names the string's
/// own path.
pub(super) struct StrSeed<F> {
    expecting: &'static str,
    f: F,
}

impl<F> StrSeed<F> {
    /// The bound here makes a closure argument take any `&str` lifetime.
    pub(super) fn new<T>(expecting: &'static str, f: F) -> Self
    where
        F: FnOnce(&str) -> Result<T, String>,
    {
        StrSeed { expecting, f }
    }
}

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> DeserializeSeed<'de> for StrSeed<F> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for StrSeed<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.f)(v).map_err(E::custom)
    }
}

/// An array of strings, each handed to `f` as it is read (see [`StrSeed`]).
pub(super) struct EachStr<F> {
    expecting: &'static str,
    f: F,
}

impl<F> EachStr<F> {
    pub(super) fn new(expecting: &'static str, f: F) -> Self
    where
        F: FnMut(&str) -> Result<(), String>,
    {
        EachStr { expecting, f }
    }
}

impl<'de, F: FnMut(&str) -> Result<(), String>> DeserializeSeed<'de> for EachStr<F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(&str) -> Result<(), String>> Visitor<'de> for EachStr<F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(()) = seq.next_element_seed(StrSeed::new("a string", &mut self.f))? {}
        Ok(())
    }
}

/// Implements `visit_none`/`visit_unit` (absent) and `visit_some` (then `$method`) for a seed
/// whose value may be `null`.
macro_rules! nullable {
    ($method:ident) => {
        fn visit_none<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }

        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.$method(self)
        }
    };
}
pub(super) use nullable;
