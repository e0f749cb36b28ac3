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
        self.iter().position(|t| same(t, s))
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

/// Whether two strings are equal, as `a == b`, but compared a word at a time inline.
///
/// Policies look names up by linear scan (feature columns, parameters, tags, reason codes): many
/// comparisons of short strings per call. In wasm, `==` on strings of equal length calls
/// compiler-builtins' `memcmp`, a byte-at-a-time loop behind a call: measured, 5 % of a
/// `discovery` call at 50 candidates. Here a string of 4 to 8 bytes is two loads and compares a
/// side, a longer one a load per 8 bytes.
#[inline]
pub(crate) fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Overlapping loads: the last word ends at the last byte, wherever the one before ended.
    if n >= 8 {
        let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
        let mut at = 0;
        while at + 8 < n {
            if word(a, at) != word(b, at) {
                return false;
            }
            at += 8;
        }
        return word(a, n - 8) == word(b, n - 8);
    }
    if n >= 4 {
        let word = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4 bytes"));
        return word(a, 0) == word(b, 0) && word(a, n - 4) == word(b, n - 4);
    }
    // 0 to 3 bytes: the first, middle and last byte cover them all.
    n == 0 || (a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1])
}

/// The string `span` names in `text`. A span outside `text` (which a host never sends) reads as
/// empty rather than trapping the policy.
#[inline]
pub(crate) fn span(text: &str, span: raw::Span) -> &str {
    text.get(span.start as usize..span.end as usize).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_agrees_with_equality_for_every_length_and_every_differing_byte() {
        let text = "abcdefghijklmnopqrstuvwxyz0123456789";
        for n in 0..=text.len() {
            let a = &text[..n];
            // A copy: the same bytes at another address.
            let copy = String::from(a);
            assert!(same(a, a) && same(a, &copy), "{a:?} equals itself");
            for m in 0..=text.len() {
                assert_eq!(same(a, &text[..m]), n == m, "{a:?} and {:?}", &text[..m]);
            }
            for at in 0..n {
                let mut b = a.as_bytes().to_vec();
                b[at] = b'_';
                let b = String::from_utf8(b).expect("ASCII");
                assert!(!same(a, &b) && !same(&b, a), "{a:?} and {b:?} differ at {at}");
            }
        }
        assert!(same("épée", "épée") && !same("épée", "épéf"));
    }
}
