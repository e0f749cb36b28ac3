//! The request a policy receives, as plain Rust values: the records of `relish:policy/types` in
//! `wit/policy.wit`, field for field, so that this crate needs no WebAssembly runtime.
//!
//! The host moves each field into the `wasmtime` bindings' records of the same name (no copy:
//! every list of names is already the contract's packed `string-column`); the documentation of
//! every field is the contract's.

/// Day of the week at the user's location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// `n` strings packed into one buffer: string `i` is `data[offsets[i]..offsets[i + 1]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StringColumn {
    /// The UTF-8 bytes of every string, concatenated.
    pub data: String,
    /// `n + 1` byte offsets into `data`.
    pub offsets: Vec<u32>,
}

impl StringColumn {
    /// An empty column (`offsets` is `[0]`).
    pub fn empty() -> Self {
        StringColumn { data: String::new(), offsets: vec![0] }
    }

    /// The column's strings, borrowed.
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

    /// The bytes of string `i`, if there is one: for comparing names where every byte counts
    /// (no check that a slice of `data` falls on character boundaries, which it does).
    #[inline]
    pub fn bytes(&self, i: usize) -> Option<&[u8]> {
        let (start, end) = (*self.offsets.get(i)?, *self.offsets.get(i + 1)?);
        self.data.as_bytes().get(start as usize..end as usize)
    }

    /// Makes room for `strings` more strings of `bytes` bytes in all.
    pub fn reserve(&mut self, strings: usize, bytes: usize) {
        self.offsets.reserve(strings);
        self.data.reserve(bytes);
    }

    /// Every string, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator + Clone + '_ {
        self.strings().iter()
    }

    /// The index of the first string equal to `s` (a linear scan).
    pub fn position(&self, s: &str) -> Option<usize> {
        self.strings().position(s)
    }

    /// Appends a string.
    pub fn push(&mut self, s: &str) {
        push(&mut self.data, &mut self.offsets, s);
    }

    /// The strings, owned.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
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

/// Compares as the list of its strings.
impl<S: AsRef<str>> PartialEq<[S]> for StringColumn {
    fn eq(&self, other: &[S]) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b.as_ref())
    }
}

/// Compares as the list of its strings.
impl<S: AsRef<str>, const N: usize> PartialEq<[S; N]> for StringColumn {
    fn eq(&self, other: &[S; N]) -> bool {
        *self == other[..]
    }
}

/// Compares as the list of its strings.
impl<S: AsRef<str>> PartialEq<Vec<S>> for StringColumn {
    fn eq(&self, other: &Vec<S>) -> bool {
        *self == other[..]
    }
}

/// The strings of a packed column (a [`StringColumn`], or another type with the same two fields,
/// such as the host's bindings of the contract's `string-column`), borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Strings<'a> {
    /// The UTF-8 bytes of every string, concatenated.
    pub data: &'a str,
    /// `n + 1` byte offsets into `data`.
    pub offsets: &'a [u32],
}

impl<'a> Strings<'a> {
    /// The number of strings.
    #[inline]
    pub fn len(self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether there are none.
    #[inline]
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// String `i`. Panics if `i >= len()`.
    #[inline]
    pub fn get(self, i: usize) -> &'a str {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Every string, in order.
    pub fn iter(self) -> impl DoubleEndedIterator<Item = &'a str> + ExactSizeIterator + Clone + 'a {
        self.offsets.windows(2).map(move |w| &self.data[w[0] as usize..w[1] as usize])
    }

    /// The index of the first string equal to `s` (a linear scan).
    pub fn position(self, s: &str) -> Option<usize> {
        self.iter().position(|t| t == s)
    }
}

/// Appends `s` to the packed column of `data` and `offsets` (which gets its leading `0` if it is
/// empty).
pub fn push(data: &mut String, offsets: &mut Vec<u32>, s: &str) {
    if offsets.is_empty() {
        offsets.push(0);
    }
    data.push_str(s);
    offsets.push(u32::try_from(data.len()).expect("a request is far below 4 GiB"));
}

/// The tags of `n` rows: row `i` has `indices[offsets[i]..offsets[i + 1]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TagColumn {
    /// `n + 1` offsets into `indices`.
    pub offsets: Vec<u32>,
    /// Indices into `Request::tag_vocabulary`.
    pub indices: Vec<u32>,
}

/// Named numeric features: `names[i]` is the name of `values[i]`.
#[derive(Debug, Clone)]
pub struct Features {
    /// Distinct feature names.
    pub names: StringColumn,
    /// One value per name, never NaN.
    pub values: Vec<f32>,
}

/// What the user already has in the cart.
#[derive(Debug, Clone, PartialEq)]
pub struct Cart {
    /// The caller's ids of the cart's items, in cart order.
    pub item_ids: StringColumn,
    /// The tags of each cart item.
    pub tags: TagColumn,
}

/// Where and how the user is browsing.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct Context {
    pub user_id: Option<String>,
    pub country: Option<String>,
    pub city: Option<String>,
    pub locale: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub device: Option<String>,
    pub cart: Cart,
}

/// The candidates to order, as columns.
#[derive(Debug, Clone)]
pub struct Candidates {
    /// The caller's id of each candidate.
    pub ids: StringColumn,
    /// The name of each feature column.
    pub feature_names: StringColumn,
    /// The row-major `n × d` feature matrix; NaN is a missing value.
    pub features: Vec<f32>,
    /// The tags of each candidate.
    pub tags: TagColumn,
}

/// One ranking request: everything a policy may use to order the candidates.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct Request {
    pub surface: String,
    pub request_id: String,
    pub time_unix_ms: i64,
    pub local_minute_of_day: u16,
    pub local_weekday: Weekday,
    pub seed: u64,
    pub context: Context,
    pub user_features: Features,
    pub tag_vocabulary: StringColumn,
    pub candidates: Candidates,
    pub limit: u32,
    pub params: Vec<(String, String)>,
}
