//! Packed strings: the contract's `string-column` (many strings in one buffer) and `span` (one
//! string of a record's `text`), and [`Strings`], the view policies read them through.

use crate::bindings::relish::policy::types as raw;

/// A column of strings, packed into one buffer as the contract sends them (`string-column`): the
/// candidates' ids, the feature names, the tag vocabulary, the user's feature names.
///
/// Reading one is a slice of the buffer; nothing is copied.
#[derive(Clone, Copy)]
pub struct Strings<'a> {
    raw: &'a raw::StringColumn,
}

impl<'a> Strings<'a> {
    pub(crate) fn new(raw: &'a raw::StringColumn) -> Self {
        Strings { raw }
    }

    /// The number of strings.
    #[inline]
    pub fn len(&self) -> usize {
        self.raw.offsets.len().saturating_sub(1)
    }

    /// Whether there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// String `i`. Panics if `i >= len()`.
    #[inline]
    pub fn get(&self, i: usize) -> &'a str {
        let offsets = &self.raw.offsets;
        &self.raw.data[offsets[i] as usize..offsets[i + 1] as usize]
    }

    /// Every string, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a str> + Clone + use<'a> {
        let Strings { raw } = *self;
        raw.offsets.windows(2).map(move |w| &raw.data[w[0] as usize..w[1] as usize])
    }

    /// The index of the first string equal to `s`, if any (a linear scan).
    pub fn position(&self, s: &str) -> Option<usize> {
        self.iter().position(|t| t == s)
    }

    /// Whether some string equals `s`.
    pub fn contains(&self, s: &str) -> bool {
        self.position(s).is_some()
    }
}

impl std::fmt::Debug for Strings<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl raw::StringColumn {
    /// An empty column (`offsets` is `[0]`).
    pub fn empty() -> Self {
        raw::StringColumn { data: String::new(), offsets: vec![0] }
    }

    /// Appends a string.
    pub fn push(&mut self, s: &str) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.data.push_str(s);
        self.offsets.push(self.data.len() as u32);
    }
}

impl<S: AsRef<str>> FromIterator<S> for raw::StringColumn {
    fn from_iter<I: IntoIterator<Item = S>>(strings: I) -> Self {
        let mut column = raw::StringColumn::empty();
        for s in strings {
            column.push(s.as_ref());
        }
        column
    }
}

/// The string `span` names in `text`. A span outside `text` (which a host never sends) reads as
/// empty rather than trapping the policy.
#[inline]
pub(crate) fn span(text: &str, span: raw::Span) -> &str {
    text.get(span.start as usize..span.end as usize).unwrap_or("")
}
