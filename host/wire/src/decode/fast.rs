//! The fast path: one pass over the body's bytes, straight into the [`Builder`], for the bodies
//! real callers send; everything else is left to the serde decoder.
//!
//! serde_json's deserializer is general: every value goes through a visitor, every string through
//! its scratch buffer, every number through a `u64`/`i64`/`f64` dispatch. The request format is
//! fixed, so this parser knows at each byte what may come next and writes the value where it
//! belongs. It is *conservative*: it returns `None` (and the serde decoder in `super::decode`
//! runs on the same bytes) for every body it is not certain about, which includes every body that
//! is wrong. It never rejects, so every error message, path and limit is the serde decoder's, and
//! whatever it accepts, the serde decoder accepts with the very same columns; the differential
//! tests (`proptests`) and the `decode` fuzz target hold it to that. What it leaves to serde:
//!
//! - strings with a backslash escape (they need unescaping; callers rarely send them);
//! - numbers whose digits overflow a `u64` mantissa, whose exponent has more than four digits or
//!   is below -308, or that are out of range. Every other number is computed the way serde_json
//!   computes it without its `float_roundtrip` feature (which this workspace does not enable;
//!   if a build did, the differential tests would fail on long numbers):
//!   `mantissa as f64`, then one multiplication or division by its table's power of ten, so the
//!   two agree bit for bit, the 17-digit doubles JavaScript writes included;
//! - anything the builder refuses (a limit, a repeated feature, a duplicate id), an unknown or
//!   repeated field, and any syntax error.
//!
//! The checks made on values (request id, bucket key, degrees, the RFC 3339 time) are the same
//! functions the serde seeds call.

use super::builder::{Builder, degrees, empty_tags, parse_time};
use super::tags::close_row;
use super::{DecodeOptions, Decoded, Shape, is_request_id};
use crate::types;

/// Decodes `body` if this path is certain of the answer; `None` leaves it to the serde decoder.
pub(super) fn decode(body: &[u8], options: &DecodeOptions<'_>) -> Option<Decoded> {
    // A valid body is UTF-8 throughout (outside its strings JSON is ASCII), and checking it once
    // is much cheaper than once per string: strings are then slices between ASCII quotes.
    let text = std::str::from_utf8(body).ok()?;
    let mut builder = Builder::new(options);
    let mut parser = Parser { text, body, at: 0, keys: Vec::new() };
    parser.request(&mut builder)?;
    parser.skip_whitespace();
    if parser.at != body.len() {
        return None;
    }
    builder.finish().ok()
}

/// `None` everywhere: "not certain, let serde decide".
type Maybe<T> = Option<T>;

/// 10^0 ..= 10^308 as `f64` literals: serde_json's table, value for value (each literal is the
/// `f64` nearest its power of ten; up to 10^22 exactly).
const POW10: [f64; 309] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28, 1e29, 1e30, 1e31, 1e32, 1e33, 1e34, 1e35, 1e36, 1e37, 1e38, 1e39,
    1e40, 1e41, 1e42, 1e43, 1e44, 1e45, 1e46, 1e47, 1e48, 1e49, 1e50, 1e51, 1e52, 1e53, 1e54, 1e55, 1e56, 1e57, 1e58,
    1e59, 1e60, 1e61, 1e62, 1e63, 1e64, 1e65, 1e66, 1e67, 1e68, 1e69, 1e70, 1e71, 1e72, 1e73, 1e74, 1e75, 1e76, 1e77,
    1e78, 1e79, 1e80, 1e81, 1e82, 1e83, 1e84, 1e85, 1e86, 1e87, 1e88, 1e89, 1e90, 1e91, 1e92, 1e93, 1e94, 1e95, 1e96,
    1e97, 1e98, 1e99, 1e100, 1e101, 1e102, 1e103, 1e104, 1e105, 1e106, 1e107, 1e108, 1e109, 1e110, 1e111, 1e112, 1e113,
    1e114, 1e115, 1e116, 1e117, 1e118, 1e119, 1e120, 1e121, 1e122, 1e123, 1e124, 1e125, 1e126, 1e127, 1e128, 1e129,
    1e130, 1e131, 1e132, 1e133, 1e134, 1e135, 1e136, 1e137, 1e138, 1e139, 1e140, 1e141, 1e142, 1e143, 1e144, 1e145,
    1e146, 1e147, 1e148, 1e149, 1e150, 1e151, 1e152, 1e153, 1e154, 1e155, 1e156, 1e157, 1e158, 1e159, 1e160, 1e161,
    1e162, 1e163, 1e164, 1e165, 1e166, 1e167, 1e168, 1e169, 1e170, 1e171, 1e172, 1e173, 1e174, 1e175, 1e176, 1e177,
    1e178, 1e179, 1e180, 1e181, 1e182, 1e183, 1e184, 1e185, 1e186, 1e187, 1e188, 1e189, 1e190, 1e191, 1e192, 1e193,
    1e194, 1e195, 1e196, 1e197, 1e198, 1e199, 1e200, 1e201, 1e202, 1e203, 1e204, 1e205, 1e206, 1e207, 1e208, 1e209,
    1e210, 1e211, 1e212, 1e213, 1e214, 1e215, 1e216, 1e217, 1e218, 1e219, 1e220, 1e221, 1e222, 1e223, 1e224, 1e225,
    1e226, 1e227, 1e228, 1e229, 1e230, 1e231, 1e232, 1e233, 1e234, 1e235, 1e236, 1e237, 1e238, 1e239, 1e240, 1e241,
    1e242, 1e243, 1e244, 1e245, 1e246, 1e247, 1e248, 1e249, 1e250, 1e251, 1e252, 1e253, 1e254, 1e255, 1e256, 1e257,
    1e258, 1e259, 1e260, 1e261, 1e262, 1e263, 1e264, 1e265, 1e266, 1e267, 1e268, 1e269, 1e270, 1e271, 1e272, 1e273,
    1e274, 1e275, 1e276, 1e277, 1e278, 1e279, 1e280, 1e281, 1e282, 1e283, 1e284, 1e285, 1e286, 1e287, 1e288, 1e289,
    1e290, 1e291, 1e292, 1e293, 1e294, 1e295, 1e296, 1e297, 1e298, 1e299, 1e300, 1e301, 1e302, 1e303, 1e304, 1e305,
    1e306, 1e307, 1e308,
];

/// A JSON number, as serde_json hands it to a visitor.
#[derive(Clone, Copy)]
enum Number {
    /// A non-negative integer (`visit_u64`).
    U64(u64),
    /// A negative integer (`visit_i64`).
    I64(i64),
    /// A number with a fraction or an exponent, or `-0` (`visit_f64`).
    F64(f64),
}

impl Number {
    /// As a feature value (see `fields::Value`): `None` if it does not fit an `f32`.
    fn feature(self) -> Maybe<f32> {
        match self {
            Number::U64(v) => Some(v as f32),
            Number::I64(v) => Some(v as f32),
            Number::F64(v) => Some(v as f32).filter(|narrowed| narrowed.is_finite()),
        }
    }

    /// As an `f64` field (serde's `f64` accepts every number).
    fn float(self) -> f64 {
        match self {
            Number::U64(v) => v as f64,
            Number::I64(v) => v as f64,
            Number::F64(v) => v,
        }
    }
}

struct Parser<'b> {
    text: &'b str,
    /// `text`'s bytes.
    body: &'b [u8],
    at: usize,
    /// The row shape's feature names in column order, as they appear in the body: `keys[j]` is
    /// the name of column `j` (pushed when the column is made here), so that matching the next
    /// key of a row costs what a `Vec` lookup does (see [`Parser::known_key`]).
    keys: Vec<&'b [u8]>,
}

/// The bytes that end the run of plain characters in a string: the closing quote, a backslash
/// (an escape), and the control characters JSON forbids.
static STOP: [bool; 256] = {
    let mut stop = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        stop[b] = true;
        b += 1;
    }
    stop[b'"' as usize] = true;
    stop[b'\\' as usize] = true;
    stop
};

impl<'b> Parser<'b> {
    /// Skips whitespace. Most bodies are minified, so the next byte is checked first and the loop
    /// is a call away: the common case is one compare that the branch predictor learns.
    #[inline]
    fn skip_whitespace(&mut self) {
        if let Some(&byte) = self.body.get(self.at)
            && byte > b' '
        {
            return;
        }
        self.skip_whitespace_run();
    }

    /// The loop of [`Parser::skip_whitespace`], for a body that has some.
    #[inline(never)]
    fn skip_whitespace_run(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.body.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, not consumed.
    #[inline]
    fn peek(&mut self) -> Maybe<u8> {
        self.skip_whitespace();
        self.body.get(self.at).copied()
    }

    /// Consumes `byte` if it comes next.
    #[inline]
    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    #[inline]
    fn expect(&mut self, byte: u8) -> Maybe<()> {
        self.eat(byte).then_some(())
    }

    /// Consumes `null` if it comes next.
    fn null(&mut self) -> bool {
        if self.peek() == Some(b'n') && self.body[self.at..].starts_with(b"null") {
            self.at += 4;
            true
        } else {
            false
        }
    }

    /// A string without escapes, borrowed from the body.
    fn string(&mut self) -> Maybe<&'b str> {
        self.expect(b'"')?;
        let start = self.at;
        // A quote ends it; a backslash (an escape) or a control character sends it to serde.
        let end = start + stop(&self.body[start..])?;
        if self.body[end] != b'"' {
            return None;
        }
        self.at = end + 1;
        // Both ends are next to an ASCII quote, so on character boundaries.
        self.text.get(start..end)
    }

    /// A string or `null`.
    fn optional_string(&mut self) -> Maybe<Option<&'b str>> {
        if self.null() { Some(None) } else { self.string().map(Some) }
    }

    /// A JSON number inside the range where this path and serde_json agree exactly.
    ///
    /// One pass: each run of digits is read and valued at once, eight bytes at a time where the
    /// body has them (see [`digits_at`]), so a short number costs no branch per digit.
    #[inline(always)]
    fn number(&mut self) -> Maybe<Number> {
        self.skip_whitespace();
        self.number_here()
    }

    /// [`Parser::number`] where the caller has skipped the whitespace before it.
    ///
    /// A minus sign takes a call: were it `at += negative`, every number's digits would be read
    /// only once the sign's byte is loaded and compared, while as a branch (rarely taken, so
    /// predicted) nothing waits for it.
    #[inline(always)]
    fn number_here(&mut self) -> Maybe<Number> {
        if self.body.get(self.at) == Some(&b'-') {
            return self.negative_number();
        }
        self.number_from(false, self.at)
    }

    /// A number with a minus sign.
    #[inline(never)]
    fn negative_number(&mut self) -> Maybe<Number> {
        self.number_from(true, self.at + 1)
    }

    /// The number whose digits start at `at`, after its minus sign if `negative`.
    #[inline(always)]
    fn number_from(&mut self, negative: bool, start: usize) -> Maybe<Number> {
        let body = self.body;
        let mut at = start;
        let integer_start = at;
        let (value, integer) = digits_at(body, at);
        // JSON: at least one digit, and no leading zero before another digit.
        if integer == 0 || (integer > 1 && body[at] == b'0') {
            return None;
        }
        let mut mantissa = if integer <= 19 { value } else { accumulate(0, &body[at..at + integer])? };
        at += integer;
        let mut exponent: i32 = 0;
        let mut float = false;
        if body.get(at) == Some(&b'.') {
            at += 1;
            let (value, fraction) = digits_at(body, at);
            if fraction == 0 {
                return None;
            }
            mantissa = if integer + fraction <= 19 {
                // Nineteen digits in all fit a `u64`, so neither step overflows.
                mantissa * POW10_U64[fraction] + value
            } else {
                accumulate(mantissa, &body[at..at + fraction])?
            };
            at += fraction;
            exponent = -(fraction as i32);
            float = true;
        }
        if let Some(b'e' | b'E') = body.get(at) {
            at += 1;
            let exponent_negative = body.get(at) == Some(&b'-');
            if let Some(b'-' | b'+') = body.get(at) {
                at += 1;
            }
            let (value, digits) = digits_at(body, at);
            if digits == 0 || digits > 4 {
                return None;
            }
            at += digits;
            let value = value as i32;
            exponent += if exponent_negative { -value } else { value };
            float = true;
        }
        debug_assert!(at > integer_start);
        self.at = at;
        if !float {
            if !negative {
                return Some(Number::U64(mantissa));
            }
            // As serde_json: an `i64` if it is one, else (`-0` and below `i64::MIN`) a float.
            let value = (mantissa as i64).wrapping_neg();
            return Some(if value >= 0 { Number::F64(-(mantissa as f64)) } else { Number::I64(value) });
        }
        let scale = *POW10.get(exponent.unsigned_abs() as usize)?;
        let magnitude = if exponent >= 0 { mantissa as f64 * scale } else { mantissa as f64 / scale };
        if magnitude.is_infinite() {
            return None;
        }
        Some(Number::F64(if negative { -magnitude } else { magnitude }))
    }

    /// A non-negative integer that fits `u64` (what serde's `u64` accepts), or `null`.
    fn optional_u64(&mut self) -> Maybe<Option<u64>> {
        if self.null() {
            return Some(None);
        }
        match self.number()? {
            Number::U64(v) => Some(Some(v)),
            _ => None,
        }
    }

    /// A feature value: a number, `true`/`false` (1/0) or `null` (NaN).
    #[inline(always)]
    fn value(&mut self) -> Maybe<f32> {
        match self.peek()? {
            b'n' => self.null().then_some(f32::NAN),
            b't' => self.word(b"true").then_some(1.0),
            b'f' => self.word(b"false").then_some(0.0),
            _ => self.number_here()?.feature(),
        }
    }

    fn word(&mut self, word: &[u8]) -> bool {
        if self.body[self.at..].starts_with(word) {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    /// An object's members: `member` is called with each key, positioned at its value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'b str) -> Maybe<()>) -> Maybe<()> {
        self.expect(b'{')?;
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.expect(b':')?;
            member(self, key)?;
            if !self.eat(b',') {
                return self.expect(b'}');
            }
        }
    }

    /// An object of fixed fields, each at most once: `member` gets the field's index in `names`.
    ///
    /// A key is matched where it stands, as the quoted name (see [`Parser::quoted`]), without
    /// scanning it first: the field after the last one is tried first, since callers write
    /// fields in one order. A key that is none of the names as written is unknown, or has an
    /// escape: either way serde decides.
    fn fields(&mut self, names: &[&str], mut member: impl FnMut(&mut Self, usize) -> Maybe<()>) -> Maybe<()> {
        let mut seen = 0u32;
        self.expect(b'{')?;
        if self.eat(b'}') {
            return Some(());
        }
        let mut next = 0;
        loop {
            self.skip_whitespace();
            let field = match names.get(next) {
                Some(name) if self.quoted(name.as_bytes()) => next,
                _ => names.iter().position(|name| self.quoted(name.as_bytes()))?,
            };
            if seen & (1 << field) != 0 {
                return None;
            }
            seen |= 1 << field;
            self.expect(b':')?;
            member(self, field)?;
            next = field + 1;
            if !self.eat(b',') {
                return self.expect(b'}');
            }
        }
    }

    /// Consumes the key `"name"` if it comes next, byte for byte (no whitespace is skipped).
    /// `name` has no quote, backslash or control character (it is a field name, or came through
    /// [`Parser::string`]), so equal bytes are the same key.
    #[inline]
    fn quoted(&mut self, name: &[u8]) -> bool {
        let Some(key) = self.body.get(self.at..self.at + name.len() + 2) else {
            return false;
        };
        if key[0] == b'"' && key[name.len() + 1] == b'"' && same(&key[1..=name.len()], name) {
            self.at += name.len() + 2;
            true
        } else {
            false
        }
    }

    /// An array's elements: `element` is called positioned at each.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Maybe<()>) -> Maybe<()> {
        self.expect(b'[')?;
        if self.eat(b']') {
            return Some(());
        }
        loop {
            element(self)?;
            if !self.eat(b',') {
                return self.expect(b']');
            }
        }
    }

    fn request(&mut self, b: &mut Builder<'_>) -> Maybe<()> {
        const TOP: &[&str] = &["request_id", "bucket_key", "surface", "seed", "limit", "user", "context", "candidates"];
        self.fields(TOP, |p, field| {
            match field {
                0 => match p.optional_string()? {
                    Some(id) if !is_request_id(id) => return None,
                    id => b.request_id = id.map(str::to_owned),
                },
                1 => match p.optional_string()? {
                    Some(key) if key.is_empty() || key.len() > 256 => return None,
                    key => b.bucket_key = key.map(str::to_owned),
                },
                2 => b.surface = p.optional_string()?.map(str::to_owned),
                3 => b.seed = p.optional_u64()?,
                4 => b.limit = p.optional_u64()?.map(u32::try_from).transpose().ok()?,
                5 => p.user(b)?,
                6 => p.context(b)?,
                _ => match p.peek()? {
                    b'[' => p.rows(b)?,
                    b'{' => p.columns(b)?,
                    _ => return None,
                },
            }
            Some(())
        })
    }

    fn user(&mut self, b: &mut Builder<'_>) -> Maybe<()> {
        if self.null() {
            return Some(());
        }
        self.fields(&["id", "features"], |p, field| {
            match field {
                0 => b.user_id = p.optional_string()?.map(str::to_owned),
                _ if p.null() => {}
                _ => p.object(|p, name| {
                    let value = p.value()?;
                    b.user_feature(name, value).ok()
                })?,
            }
            Some(())
        })
    }

    fn context(&mut self, b: &mut Builder<'_>) -> Maybe<()> {
        if self.null() {
            return Some(());
        }
        const CONTEXT: &[&str] = &["country", "city", "locale", "lat", "lon", "device", "time", "cart"];
        self.fields(CONTEXT, |p, field| {
            let c = &mut b.context;
            match field {
                0 => c.country = p.optional_string()?.map(str::to_owned),
                1 => c.city = p.optional_string()?.map(str::to_owned),
                2 => c.locale = p.optional_string()?.map(str::to_owned),
                3 => c.latitude = degrees(p.optional_float()?, 90.0).ok()?,
                4 => c.longitude = degrees(p.optional_float()?, 180.0).ok()?,
                5 => c.device = p.optional_string()?.map(str::to_owned),
                6 => c.time = p.optional_string()?.map(parse_time).transpose().ok()?,
                _ => {
                    let mut cart = types::Cart { item_ids: types::StringColumn::empty(), tags: empty_tags() };
                    if !p.null() {
                        p.array(|p| p.cart_item(b, &mut cart))?;
                    }
                    b.cart = Some(cart);
                }
            }
            Some(())
        })
    }

    fn optional_float(&mut self) -> Maybe<Option<f64>> {
        if self.null() { Some(None) } else { self.number().map(|n| Some(n.float())) }
    }

    fn cart_item(&mut self, b: &mut Builder<'_>, cart: &mut types::Cart) -> Maybe<()> {
        if cart.item_ids.len() >= b.options.max_candidates {
            return None;
        }
        let mut id = None;
        self.fields(&["id", "tags"], |p, field| {
            match field {
                0 => id = Some(p.string()?),
                _ => p.tags(b, &mut cart.tags)?,
            }
            Some(())
        })?;
        cart.item_ids.push(id?);
        close_row(&mut cart.tags, cart.item_ids.len());
        Some(())
    }

    /// One row's tags, or `null` for none; the caller closes the row.
    fn tags(&mut self, b: &mut Builder<'_>, column: &mut types::TagColumn) -> Maybe<()> {
        if self.null() {
            return Some(());
        }
        let start = column.indices.len();
        self.array(|p| {
            let tag = p.string()?;
            b.tag(column, start, tag).ok()
        })
    }

    /// The row shape: one `{id, features, tags}` object per candidate.
    ///
    /// Once the first candidate is read, the columns are reserved for as many more as the rest of
    /// the body would hold if they were the size of the first: most bodies are uniform, and one
    /// allocation per column replaces a dozen of a growing vector (and their copies). The
    /// estimate is bounded by the body's length, so it costs no more memory than the body.
    fn rows(&mut self, b: &mut Builder<'_>) -> Maybe<()> {
        b.shape = Some(Shape::Rows);
        let mut tags = empty_tags();
        let start = self.at;
        self.array(|p| {
            p.candidate(b, &mut tags)?;
            if b.candidates() == 1 {
                // An eighth more than the first candidate's size makes room for: a first
                // candidate has the shortest id, and growing a matrix copies it.
                let first = p.at - start;
                let more = (p.body.len() - p.at) / first.max(1);
                b.reserve_rows(more + more / 8, &mut tags);
            }
            Some(())
        })?;
        b.candidate_tags = Some(tags);
        Some(())
    }

    fn candidate(&mut self, b: &mut Builder<'_>, tags: &mut types::TagColumn) -> Maybe<()> {
        b.room_for_candidate().ok()?;
        let row = b.candidates() as u32;
        let mut has_id = false;
        self.fields(&["id", "features", "tags"], |p, field| {
            match field {
                0 => {
                    b.push_id(p.string()?).ok()?;
                    has_id = true;
                }
                1 => p.row_features(b, row)?,
                _ => p.tags(b, tags)?,
            }
            Some(())
        })?;
        if !has_id {
            return None;
        }
        close_row(tags, row as usize + 1);
        Some(())
    }

    /// One candidate's features (row shape). The key is usually the name of the column after
    /// the last one (candidates list their features in one order), or the one after that (a
    /// feature left out); either is matched in place with one compare of the bytes, and only
    /// another key is scanned and looked up by name.
    fn row_features(&mut self, b: &mut Builder<'_>, row: u32) -> Maybe<()> {
        if self.null() {
            return Some(());
        }
        self.expect(b'{')?;
        if !self.eat(b'}') {
            b.rows.open_row(row);
            let mut next = 0;
            loop {
                self.skip_whitespace();
                let column = match self.known_key(next) {
                    Some(column) => column,
                    None => {
                        let name = self.string()?;
                        // `keys` had no match at `next` or after it: look the name up.
                        let column = b.column(name).ok()?;
                        if column as usize == self.keys.len() {
                            if self.keys.is_empty() {
                                self.keys.reserve(32);
                            }
                            self.keys.push(name.as_bytes());
                        }
                        column
                    }
                };
                self.expect(b':')?;
                let value = self.value()?;
                b.mark_row_feature(row, column).ok()?;
                b.rows.set_in_open_row(row, column, value);
                next = column as usize + 1;
                if !self.eat(b',') {
                    self.expect(b'}')?;
                    break;
                }
            }
        }
        b.rows.end_row(b.feature_names.len());
        Some(())
    }

    /// Consumes the key `"keys[guess]"` or `"keys[guess + 1]"` if it comes next (see
    /// [`Parser::quoted`]). Every known name came through [`Parser::string`], so it has no quote,
    /// backslash or control character: equal bytes are the same key. `keys[j]` is only ever the
    /// name column `j` was made for, so a name missing here (a column made another way) is only
    /// a miss: the caller looks it up by name.
    #[inline]
    fn known_key(&mut self, guess: usize) -> Maybe<u32> {
        let key = *self.keys.get(guess)?;
        if self.quoted(key) {
            return Some(guess as u32);
        }
        let skipped = guess + 1;
        let key = *self.keys.get(skipped)?;
        self.quoted(key).then_some(skipped as u32)
    }

    /// The columnar shape: an object of `{ids, feature_names, features, tags}` columns.
    fn columns(&mut self, b: &mut Builder<'_>) -> Maybe<()> {
        b.shape = Some(Shape::Columns);
        let mut values: Option<Vec<f32>> = None;
        let mut tags: Option<types::TagColumn> = None;
        self.fields(&["ids", "feature_names", "features", "tags"], |p, field| {
            match field {
                0 => p.array(|p| b.push_id(p.string()?).ok())?,
                1 => p.array(|p| b.new_column(p.string()?).ok())?,
                2 => values = Some(p.matrix(b.options, b.candidates().saturating_mul(b.feature_names.len()))?),
                _ => tags = Some(p.tag_rows(b, b.candidates())?),
            }
            Some(())
        })?;
        let n = b.candidates();
        let values = values.unwrap_or_default();
        if Some(values.len()) != n.checked_mul(b.feature_names.len()) {
            return None;
        }
        b.matrix = Some(values);
        match tags {
            Some(tags) if tags.offsets.len() != n + 1 => return None,
            tags => b.candidate_tags = tags,
        }
        Some(())
    }

    /// The columnar matrix, room made for the `expected` values the ids and feature names read
    /// before it make (when they come first, as usual): one allocation rather than a dozen of a
    /// growing vector, each larger one copied into fresh pages.
    fn matrix(&mut self, options: &DecodeOptions<'_>, expected: usize) -> Maybe<Vec<f32>> {
        let cap = options.max_candidates.saturating_mul(options.max_features).min(options.max_values);
        let mut values = Vec::with_capacity(expected.min(cap));
        self.array(|p| {
            let value = p.value()?;
            if values.len() >= cap {
                return None;
            }
            values.push(value);
            Some(())
        })?;
        Some(values)
    }

    /// The columnar tag rows, room made for the `expected` rows of the ids read before them.
    fn tag_rows(&mut self, b: &mut Builder<'_>, expected: usize) -> Maybe<types::TagColumn> {
        let mut column = empty_tags();
        column.offsets.reserve(expected);
        let mut rows = 0;
        self.array(|p| {
            p.tags(b, &mut column)?;
            rows += 1;
            if rows > b.options.max_candidates {
                return None;
            }
            close_row(&mut column, rows);
            Some(())
        })?;
        Some(column)
    }
}

/// The position of the first [`STOP`] byte, eight bytes at a time (SWAR: a word's bytes are
/// compared at once with the carries of a subtraction; what serde_json's skimming does too).
fn stop(bytes: &[u8]) -> Maybe<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // A byte's high bit in `found` is set for a quote, a backslash or a byte below 0x20 (a
        // zero byte of `word ^ quotes`, of `word ^ backslashes`, or a byte that borrows when 0x20 is
        // taken from it); bytes at or above 0x80 are masked by `!word`.
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let zero = |x: u64| x.wrapping_sub(ONES) & !x;
        let found = (zero(quote) | zero(backslash) | word.wrapping_sub(ONES * 0x20)) & !word & HIGHS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks.remainder().iter().position(|&b| STOP[usize::from(b)]).map(|i| at + i)
}

/// Whether `a` and `b`, of one length, hold the same bytes. Names are a few bytes long, where a
/// call to `memcmp` costs more than the compare: two overlapping loads of a word (or of half a
/// word, or three bytes) from each compare all of a name of up to sixteen bytes.
#[inline(always)]
pub(super) fn same(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len();
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("eight bytes"));
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("four bytes"));
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

/// `start` followed by the decimal `digits`, if it fits a `u64`.
fn accumulate(start: u64, digits: &[u8]) -> Maybe<u64> {
    // Nineteen digits always fit; the checks are for longer numbers only.
    if start == 0 && digits.len() <= 19 {
        return Some(fold(0, digits));
    }
    digits.iter().try_fold(start, |m, &d| m.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// `start` followed by the decimal `digits`, where the caller knows that at most nineteen digits
/// are in all (so the result fits a `u64`).
fn fold(start: u64, digits: &[u8]) -> u64 {
    digits.iter().fold(start, |m, &d| m * 10 + u64::from(d - b'0'))
}

/// 10^0 ..= 10^19, the powers of ten a `u64` holds.
const POW10_U64: [u64; 20] = {
    let mut table = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// `0x0101…01` times a byte: that byte in every lane of a word.
const fn lanes(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

/// The run of decimal digits at `body[start..]`: its length, and its value when the run has at
/// most nineteen digits (longer runs are valued by the caller, with overflow checks).
///
/// Eight bytes are classified at once (SWAR): a byte is a digit when it is `'0'..='9'`, which
/// `b ^ '0' < 10` tests lane by lane without carries between lanes; the first non-digit's lane is
/// found with `trailing_zeros`, and the digits before it are valued with three multiplications
/// (as fast_float and simdjson do), so a number's digits cost no branch each. The last bytes of
/// the body, fewer than eight, are read one at a time.
#[inline]
fn digits_at(body: &[u8], start: usize) -> (u64, usize) {
    let mut at = start;
    let mut value = 0u64;
    while let Some(chunk) = body.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let lanes_value = word ^ lanes(b'0');
        // A lane's high bit is set when its byte is not a digit: its low seven bits are 10 or
        // more (adding 0x76 carries into bit 7, and never out of the lane), or its own high bit is.
        let not_digit = (((lanes_value & lanes(0x7f)).wrapping_add(lanes(0x76))) | lanes_value) & lanes(0x80);
        if not_digit != 0 {
            let n = (not_digit.trailing_zeros() / 8) as usize;
            if n > 0 {
                // The `n` digits moved to the top lanes, zeros below: the same number.
                let digits = eight_digits(lanes_value << (8 * (8 - n)));
                value = value.wrapping_mul(POW10_U64[n]).wrapping_add(digits);
            }
            return (value, at + n - start);
        }
        value = value.wrapping_mul(100_000_000).wrapping_add(eight_digits(lanes_value));
        at += 8;
    }
    while let Some(&digit @ b'0'..=b'9') = body.get(at) {
        value = value.wrapping_mul(10).wrapping_add(u64::from(digit - b'0'));
        at += 1;
    }
    (value, at - start)
}

/// The value of eight decimal digits, one per byte lane (`0..=9`, the first digit in the lowest
/// lane): pairs, then quadruples, then the whole, each step one multiply-add across lanes.
#[inline]
fn eight_digits(lanes_value: u64) -> u64 {
    const MASK: u64 = 0x0000_00ff_0000_00ff;
    const MUL1: u64 = 100 + (1_000_000 << 32);
    const MUL2: u64 = 1 + (10_000 << 32);
    let pairs = lanes_value.wrapping_mul(10).wrapping_add(lanes_value >> 8);
    ((pairs & MASK).wrapping_mul(MUL1).wrapping_add(((pairs >> 16) & MASK).wrapping_mul(MUL2))) >> 32
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::{Number, POW10, POW10_U64, Parser, STOP, accumulate, digits_at, fold, stop};

    /// The number parser before the eight-digits-at-a-time one, kept as the reference the new one
    /// must equal on every input (it was held to serde_json by the differential tests since).
    fn reference(body: &[u8]) -> Option<(Number, usize)> {
        // `Parser::number` skips the whitespace before a number.
        let mut at = body.iter().take_while(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t')).count();
        let digits = |at: &mut usize| {
            let start = *at;
            while let Some(b'0'..=b'9') = body.get(*at) {
                *at += 1;
            }
            &body[start..*at]
        };
        let negative = body.get(at) == Some(&b'-');
        if negative {
            at += 1;
        }
        let integer = digits(&mut at);
        if integer.is_empty() || (integer.len() > 1 && integer[0] == b'0') {
            return None;
        }
        let mut mantissa = accumulate(0, integer)?;
        let mut exponent: i32 = 0;
        let mut float = false;
        if body.get(at) == Some(&b'.') {
            at += 1;
            let fraction = digits(&mut at);
            if fraction.is_empty() {
                return None;
            }
            mantissa = if integer.len() + fraction.len() <= 19 {
                fold(mantissa, fraction)
            } else {
                accumulate(mantissa, fraction)?
            };
            exponent = -(fraction.len() as i32);
            float = true;
        }
        if let Some(b'e' | b'E') = body.get(at) {
            at += 1;
            let exponent_negative = body.get(at) == Some(&b'-');
            if let Some(b'-' | b'+') = body.get(at) {
                at += 1;
            }
            let digits = digits(&mut at);
            if digits.is_empty() || digits.len() > 4 {
                return None;
            }
            let value = accumulate(0, digits)? as i32;
            exponent += if exponent_negative { -value } else { value };
            float = true;
        }
        if !float {
            if !negative {
                return Some((Number::U64(mantissa), at));
            }
            let value = (mantissa as i64).wrapping_neg();
            return Some((if value >= 0 { Number::F64(-(mantissa as f64)) } else { Number::I64(value) }, at));
        }
        let scale = *POW10.get(exponent.unsigned_abs() as usize)?;
        let magnitude = if exponent >= 0 { mantissa as f64 * scale } else { mantissa as f64 / scale };
        if magnitude.is_infinite() {
            return None;
        }
        Some((Number::F64(if negative { -magnitude } else { magnitude }), at))
    }

    /// What [`Parser::number`] makes of `body`, and where it stopped.
    fn parse(body: &[u8]) -> Option<(Number, usize)> {
        let text = std::str::from_utf8(body).ok()?;
        let mut parser = Parser { text, body, at: 0, keys: Vec::new() };
        parser.number().map(|number| (number, parser.at))
    }

    /// A number's kind and bits, comparable (`-0.0` and `0.0` differ, as they must).
    fn key(number: Number) -> (u8, u64) {
        match number {
            Number::U64(v) => (0, v),
            Number::I64(v) => (1, v as u64),
            Number::F64(v) => (2, v.to_bits()),
        }
    }

    /// serde_json's reading of `text` as one number, as its visitor would receive it.
    fn serde(text: &str) -> Option<Number> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        let number = value.as_number()?;
        Some(if let Some(v) = number.as_u64() {
            Number::U64(v)
        } else if let Some(v) = number.as_i64() {
            Number::I64(v)
        } else {
            Number::F64(number.as_f64()?)
        })
    }

    /// A digit string of `digits` significant digits, most of them random, some all nines or a
    /// one followed by zeros (the edges of carries and of powers of ten).
    fn significand(digits: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
        (digits, any::<u64>(), 0u8..4).prop_map(|(n, seed, form)| {
            let mut state = seed | 1;
            (0..n)
                .map(|i| match form {
                    0 => '9',
                    1 if i == 0 => '1',
                    1 => '0',
                    _ => {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let digit = (state % 10) as u8 + u8::from(i == 0 && state % 10 == 0);
                        char::from(b'0' + digit.min(9))
                    }
                })
                .collect()
        })
    }

    /// A JSON number as a caller might write it, or almost: signs, a fraction, an exponent of
    /// either case and sign, with the significant digits split anywhere; now and then a leading
    /// zero, an empty part or a stray byte, which JSON refuses.
    fn number_text() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            prop_oneof![
                4 => significand(1..=15),
                4 => significand(16..=17),
                2 => significand(18..=21),
                1 => significand(22..=40),
            ],
            any::<prop::sample::Index>(),
            prop_oneof![3 => Just(None), 2 => (0usize..4).prop_map(Some), 1 => (0usize..330).prop_map(Some)],
            prop::option::of((
                select(&["e", "E", "e+", "e-", "E-", "E+"][..]),
                prop_oneof![-25i32..25, 280i32..330, Just(22), Just(23), 0i32..100_000],
                0usize..3,
            )),
            prop_oneof![20 => Just(""), 1 => select(&["0", "00", ".", "-", "+", "e", " ", ",", "x", "é"][..])],
            any::<prop::sample::Index>(),
        )
            .prop_map(|(negative, digits, point, zeros, exponent, stray, stray_at)| {
                let mut text = String::from(if negative { "-" } else { "" });
                let point = point.index(digits.len() + 1);
                match point {
                    0 => text.push('0'),
                    _ => text.push_str(&digits[..point]),
                }
                if let Some(zeros) = zeros.filter(|_| point < digits.len()) {
                    text.push('.');
                    if point == 0 {
                        text.push_str(&"0".repeat(zeros));
                    }
                    text.push_str(&digits[point..]);
                }
                if let Some((e, value, padding)) = exponent {
                    text.push_str(e);
                    text.push_str(&"0".repeat(padding));
                    text.push_str(&value.unsigned_abs().to_string());
                }
                let at = stray_at.index(text.len() + 1);
                if text.is_char_boundary(at) {
                    text.insert_str(at, stray);
                }
                text
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// The word-at-a-time scan finds what the byte-at-a-time one finds, wherever in a word.
        #[test]
        fn the_word_scan_finds_the_first_stop_byte(
            bytes in prop::collection::vec(prop_oneof![any::<u8>(), 0x20u8..0x7f, Just(b'"')], 0..40),
        ) {
            prop_assert_eq!(stop(&bytes), bytes.iter().position(|&b| STOP[usize::from(b)]));
        }

        /// Digit runs of every length, at every offset in a word, before any byte and at the end
        /// of the body, are measured and valued as one digit at a time would.
        #[test]
        fn digit_runs_are_read_as_one_digit_at_a_time_reads_them(
            before in 0usize..9,
            digits in prop::collection::vec(b'0'..=b'9', 0..40),
            after in prop::collection::vec(any::<u8>(), 0..10),
        ) {
            let mut body = vec![b'x'; before];
            body.extend_from_slice(&digits);
            body.extend_from_slice(&after);
            let run = body[before..].iter().take_while(|b| b.is_ascii_digit()).count();
            let (value, len) = digits_at(&body, before);
            prop_assert_eq!(len, run);
            if run <= 19 {
                prop_assert_eq!(value, fold(0, &body[before..before + run]));
            }
        }

        /// The number parser equals the one it replaced, on numbers and near-numbers alike, where
        /// the body ends after the number and where other bytes follow it.
        #[test]
        fn numbers_parse_as_the_reference_parses_them(text in number_text(), tail in select(&["", "}", ",\"a\":1}]}"][..])) {
            let body = format!("{text}{tail}");
            let got = parse(body.as_bytes()).map(|(n, at)| (key(n), at));
            let want = reference(body.as_bytes()).map(|(n, at)| (key(n), at));
            prop_assert_eq!(got, want, "{}", body);
        }

        /// What the parser takes as a whole number, serde_json reads as the same number, bit for
        /// bit; and every number of at most nineteen significant digits without a leading zero
        /// and with a decimal exponent within ±308 (JavaScript's shortest forms among them) is taken.
        #[test]
        fn numbers_parse_as_serde_json_parses_them(text in number_text()) {
            let parsed = parse(text.as_bytes()).filter(|&(_, at)| at == text.len());
            let want = serde(&text);
            if let Some((number, _)) = parsed {
                prop_assert_eq!(Some(key(number)), want.map(key), "{}", text);
            }
            if want.is_some() && plain(&text) {
                prop_assert!(parsed.is_some(), "left to serde: {}", text);
            }
        }

        /// Every finite `f64` and `f32`, as Rust and serde_json write them (shortest round trip,
        /// up to seventeen digits, with exponents to ±308 and subnormals), parses to serde's bits.
        #[test]
        fn written_floats_parse_as_serde_json_parses_them(bits in any::<u64>(), narrow in any::<bool>()) {
            let value = if narrow { f64::from(f32::from_bits(bits as u32)) } else { f64::from_bits(bits) };
            prop_assume!(value.is_finite());
            for text in [serde_json::to_string(&value).expect("finite"), format!("{value:e}"), format!("{value:?}")] {
                let parsed = parse(text.as_bytes()).filter(|&(_, at)| at == text.len());
                let want = serde(&text);
                if let Some((number, _)) = parsed {
                    prop_assert_eq!(Some(key(number)), want.map(key), "{}", text);
                }
            }
        }
    }

    /// Whether the fast path must take `text`: a valid number whose significant digits fit
    /// nineteen, its exponent (as written and as applied) within what the table holds, and
    /// no more than four exponent digits.
    fn plain(text: &str) -> bool {
        let (mantissa, exponent) = match text.find(['e', 'E']) {
            Some(at) => (&text[..at], Some(&text[at + 1..])),
            None => (text, None),
        };
        let unsigned = mantissa.trim_start_matches('-');
        let (integer, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let digits = integer.len() + fraction.len();
        let written = exponent.map_or(Some(0), |e| {
            let e = e.trim_start_matches('+');
            let digits = e.trim_start_matches('-');
            (digits.len() <= 4).then(|| e.parse::<i32>().ok()).flatten()
        });
        let Some(written) = written else { return false };
        let applied = written - fraction.len() as i32;
        // A finite result at an exponent the table holds; an overflow is serde's to report.
        let value: f64 = text.parse().unwrap_or(f64::INFINITY);
        digits <= 19 && applied.abs() <= 308 && value.is_finite()
    }

    #[test]
    fn the_powers_of_ten_are_exact() {
        for (i, &p) in POW10_U64.iter().enumerate() {
            assert_eq!(p, 10u64.pow(i as u32));
        }
    }

    /// The edges named: 15 to 20 significant digits, exponents near ±22 (the last exact power)
    /// and ±308, negative zero, the largest `u64` and the `i64` bounds; each parses as
    /// serde_json parses it, or (leading zeros, empty parts, overflow, subnormals) is left to serde.
    #[test]
    fn numbers_at_the_named_edges() {
        let taken = [
            "0",
            "-0",
            "-0.0",
            "0.0",
            "0e0",
            "-0e-5",
            "1",
            "-1",
            "123456789012345",
            "1234567890123456",
            "12345678901234567",
            "1234567890123456789",
            "0.1234567890123456789",
            "9007199254740993",
            "18446744073709551615",
            "-9223372036854775808",
            "-9223372036854775809",
            "1e22",
            "1e23",
            "1.7976931348623157e308",
            "1e-308",
            "1.7976931348623157e307",
            "2.2250738585072014e-292",
            "4.9e-307",
            "123.456e-300",
            "0.30000000000000004",
            "1E+2",
            "1e-22",
            "1e-23",
            "9999999999999999999",
            "12.34",
            "4999",
            "60.99",
            "-1.5E-7",
            " 0",
            "\t-2.5",
        ];
        for text in taken {
            let parsed = parse(text.as_bytes()).filter(|&(_, at)| at == text.len());
            let (number, _) = parsed.unwrap_or_else(|| panic!("{text} is left to serde"));
            assert_eq!(Some(key(number)), serde(text).map(key), "{text}");
            assert_eq!(
                parse(text.as_bytes()).map(|(n, at)| (key(n), at)),
                reference(text.as_bytes()).map(|(n, at)| (key(n), at))
            );
        }
        let left = [
            "01",
            "-01",
            "00",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "1.e5",
            "18446744073709551616",
            "12345678901234567890.5",
            "1e400",
            "1e00001",
            "1.7976931348623159e308",
            "1e-400",
            "-",
            "+1",
            "0x10",
            "",
            // Subnormals and the smallest normals need more than one division (serde_json divides
            // by 1e308 first): left to serde.
            "2.2250738585072014e-308",
            "4.9e-324",
            "5e-324",
            "1e-320",
        ];
        for text in left {
            let parsed = parse(text.as_bytes()).filter(|&(_, at)| at == text.len());
            assert!(parsed.is_none(), "{text} taken");
        }
    }

    #[test]
    fn every_stop_byte_is_found_at_every_position() {
        for b in (0..=255u8).filter(|&b| STOP[usize::from(b)]) {
            for at in 0..17 {
                let mut bytes = vec![b'a'; 24];
                bytes[at] = b;
                // A high byte before it and a space (just above the controls) after it must
                // neither hide it nor be taken for it.
                if at > 0 {
                    bytes[at - 1] = 0xe9;
                }
                bytes[at + 1] = 0x20;
                assert_eq!(stop(&bytes), Some(at), "{b:#x} at {at}");
            }
        }
    }
}
