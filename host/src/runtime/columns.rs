//! Reading and building the contract's packed strings on the host side: `string-column` (many
//! strings in one buffer), `params` (two columns) and the context's `span`s of one `text`.
//!
//! The request is held in exactly the shape it is lowered into a policy, so that lowering is one
//! allocation and one copy per column however many strings it holds (see `wit/policy.wit`,
//! versions); these methods keep the rest of the host as easy to write as with `Vec<String>`.

use relish_wire::types::Strings;

use super::types::{Cart, Context, Params, Span, StringColumn};

impl StringColumn {
    /// An empty column (`offsets` is `[0]`).
    pub fn empty() -> Self {
        StringColumn { data: String::new(), offsets: vec![0] }
    }

    /// The column's strings, borrowed (the wire format's view of the same two fields).
    #[inline]
    pub fn strings(&self) -> Strings<'_> {
        Strings { data: &self.data, offsets: &self.offsets }
    }

    /// The number of strings.
    #[inline]
    pub fn len(&self) -> usize {
        self.strings().len()
    }

    /// Whether there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// String `i`. Panics if `i >= len()`.
    #[inline]
    pub fn get(&self, i: usize) -> &str {
        self.strings().get(i)
    }

    /// Every string, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator + Clone + '_ {
        self.strings().iter()
    }

    /// The index of the first string equal to `s` (a linear scan).
    pub fn position(&self, s: &str) -> Option<usize> {
        self.strings().position(s)
    }

    /// Whether some string equals `s`.
    pub fn contains(&self, s: &str) -> bool {
        self.position(s).is_some()
    }

    /// Appends a string.
    pub fn push(&mut self, s: &str) {
        relish_wire::types::push(&mut self.data, &mut self.offsets, s);
    }

    /// The strings, owned.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

/// The wire format's column, moved (its two fields are the contract's).
impl From<relish_wire::types::StringColumn> for StringColumn {
    fn from(column: relish_wire::types::StringColumn) -> Self {
        StringColumn { data: column.data, offsets: column.offsets }
    }
}

impl Default for StringColumn {
    fn default() -> Self {
        StringColumn::empty()
    }
}

impl<S: AsRef<str>> FromIterator<S> for StringColumn {
    fn from_iter<I: IntoIterator<Item = S>>(strings: I) -> Self {
        let mut column = StringColumn::empty();
        for s in strings {
            column.push(s.as_ref());
        }
        column
    }
}

impl Params {
    /// No parameters.
    pub fn empty() -> Self {
        Params { keys: StringColumn::empty(), values: StringColumn::empty() }
    }

    /// Every `(key, value)`, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.keys.iter().zip(self.values.iter())
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys.position(key).map(|i| self.values.get(i))
    }

    /// Sets `key` to `value`: in place if `key` is set, else appended.
    pub fn set(&mut self, key: &str, value: &str) {
        let mut found = false;
        let mut params: Params = self
            .iter()
            .map(|(k, v)| {
                let mine = k == key;
                found |= mine;
                (k, if mine { value } else { v })
            })
            .collect();
        if !found {
            params.keys.push(key);
            params.values.push(value);
        }
        *self = params;
    }

    /// The parameters as owned pairs.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut params = Params::empty();
        for (key, value) in pairs {
            params.keys.push(key.as_ref());
            params.values.push(value.as_ref());
        }
        params
    }
}

/// The string fields of a [`Context`], for [`Context::new`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ContextStrings<'a> {
    /// `user-id`.
    pub user_id: Option<&'a str>,
    /// `country`.
    pub country: Option<&'a str>,
    /// `city`.
    pub city: Option<&'a str>,
    /// `locale`.
    pub locale: Option<&'a str>,
    /// `device`.
    pub device: Option<&'a str>,
}

impl Context {
    /// A context with these strings packed into its `text`.
    pub fn new(strings: ContextStrings<'_>, latitude: Option<f64>, longitude: Option<f64>, cart: Cart) -> Self {
        let ContextStrings { user_id, country, city, locale, device } = strings;
        let mut text =
            String::with_capacity([user_id, country, city, locale, device].iter().map(|s| s.map_or(0, str::len)).sum());
        let mut put = |value: Option<&str>| {
            value.map(|value| {
                let start = text.len() as u32;
                text.push_str(value);
                Span { start, end: text.len() as u32 }
            })
        };
        let (user_id, country, city, locale, device) =
            (put(user_id), put(country), put(city), put(locale), put(device));
        Context { text, user_id, country, city, locale, latitude, longitude, device, cart }
    }

    /// `user-id`.
    pub fn user_id(&self) -> Option<&str> {
        self.span(self.user_id)
    }

    /// `country`.
    pub fn country(&self) -> Option<&str> {
        self.span(self.country)
    }

    /// `city`.
    pub fn city(&self) -> Option<&str> {
        self.span(self.city)
    }

    /// `locale`.
    pub fn locale(&self) -> Option<&str> {
        self.span(self.locale)
    }

    /// `device`.
    pub fn device(&self) -> Option<&str> {
        self.span(self.device)
    }

    fn span(&self, span: Option<Span>) -> Option<&str> {
        span.map(|s| self.text.get(s.start as usize..s.end as usize).expect("spans are made by `Context::new`"))
    }
}
