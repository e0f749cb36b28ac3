//! Feature files: what the [`memory`](super::memory) backend serves and the [loader](super::load())
//! writes to Redis. The format is chosen by the file's extension.
//!
//! **JSONL** (`.jsonl`, `.ndjson`): one entity per line; blank lines are skipped.
//!
//! ```json
//! {"entity": "venue", "id": "venue-1", "features": {"rating": 4.5, "eta_min": 25}, "tags": ["pizza"]}
//! {"entity": "user", "id": "u-42", "features": {"affinity.pizza": 0.8, "age": null}}
//! ```
//!
//! `features` maps names to JSON numbers (`null` is the same as leaving the name out) and may be
//! left out; `tags` is an array of strings and may be left out (no tags) or empty.
//!
//! **CSV** (`.csv`): a header `entity,id,<feature>...` with an optional `tags` column anywhere
//! after `id`; cells are decimal numbers, an empty cell is an absent value, tags are separated
//! by `|`.
//!
//! ```csv
//! entity,id,rating,eta_min,tags
//! venue,venue-1,4.5,25,pizza|italian
//! venue,venue-2,,40,
//! ```
//!
//! Every value must be a finite number within the range of `f32`; an entity kind is a name
//! without `:` or spaces (it is the middle of the Redis key); feature names are non-empty and do
//! not start with `_` (reserved). A line that breaks a rule is an error naming `file:line` and
//! what is wrong: the memory backend refuses the whole file (and keeps what it had), the loader
//! stops there unless told to skip bad lines.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

use super::is_reserved;
use super::value::{self, MAX_TAGS_BYTES, Refusal};

/// The longest id accepted.
pub const MAX_ID_BYTES: usize = 512;
/// The longest feature name or entity kind accepted.
pub const MAX_NAME_BYTES: usize = 256;

/// A file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated, with a header.
    Csv,
}

impl Format {
    /// The format of `path`, by its extension.
    pub fn of(path: &Path) -> Result<Format, String> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
            Some("csv") => Ok(Format::Csv),
            _ => Err(format!("{}: a feature file is .jsonl, .ndjson or .csv", path.display())),
        }
    }
}

/// One entity of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The entity kind.
    pub entity: String,
    /// The id.
    pub id: String,
    /// Feature values, sorted by name, names distinct.
    pub features: Vec<(String, f32)>,
    /// Tags, when the line has them (possibly none).
    pub tags: Option<Vec<String>>,
}

/// What is wrong with a file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A line breaks the format.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

/// The records of a file, in order, with an error for each bad line (reading goes on after it).
pub struct Records {
    path: PathBuf,
    source: Source,
    bytes: u64,
    line: u64,
    failed: bool,
}

enum Source {
    Jsonl { reader: BufReader<File>, buffer: String },
    Csv { reader: Box<csv::Reader<File>>, columns: Result<Columns, String>, record: csv::ByteRecord },
}

/// What the columns of a CSV file are.
struct Columns {
    /// Per column after `id`: the feature name, or `None` for the tags column.
    names: Vec<Option<String>>,
}

impl Records {
    /// Opens `path` (JSONL or CSV by its extension).
    pub fn open(path: &Path) -> Result<Records, FileError> {
        let io = |source| FileError::Io { path: path.to_owned(), source };
        let format = Format::of(path).map_err(|message| FileError::Line { path: path.to_owned(), line: 0, message })?;
        let file = File::open(path).map_err(io)?;
        let source = match format {
            Format::Jsonl => Source::Jsonl { reader: BufReader::with_capacity(1 << 16, file), buffer: String::new() },
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(file);
                let columns = match reader.headers() {
                    Ok(header) => Columns::of(header),
                    Err(e) => Err(e.to_string()),
                };
                Source::Csv { reader: Box::new(reader), columns, record: csv::ByteRecord::new() }
            }
        };
        Ok(Records { path: path.to_owned(), source, bytes: 0, line: 0, failed: false })
    }

    /// Bytes read so far (for progress).
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    fn line_error(&self, line: u64, message: impl Into<String>) -> FileError {
        FileError::Line { path: self.path.clone(), line, message: message.into() }
    }

    fn next_jsonl(&mut self) -> Option<Result<Record, FileError>> {
        let Source::Jsonl { reader, buffer } = &mut self.source else { unreachable!() };
        loop {
            buffer.clear();
            match reader.read_line(buffer) {
                Ok(0) => return None,
                Ok(n) => {
                    self.bytes += n as u64;
                    self.line += 1;
                }
                Err(source) => {
                    self.failed = true;
                    return Some(Err(FileError::Io { path: self.path.clone(), source }));
                }
            }
            let text = buffer.trim();
            if text.is_empty() {
                continue;
            }
            let record = serde_json::from_str::<Line>(text)
                .map_err(|e| format!("not a feature line ({e})"))
                .and_then(Line::into_record);
            let line = self.line;
            return Some(record.map_err(|message| self.line_error(line, message)));
        }
    }

    fn next_csv(&mut self) -> Option<Result<Record, FileError>> {
        let Source::Csv { reader, columns, record } = &mut self.source else { unreachable!() };
        let columns = match columns {
            Ok(columns) => columns,
            Err(message) => {
                self.failed = true;
                let message = format!("not a feature CSV header: {message}");
                return Some(Err(self.line_error(1, message)));
            }
        };
        match reader.read_byte_record(record) {
            Ok(false) => None,
            Ok(true) => {
                let (line, byte) = record.position().map_or((self.line, self.bytes), |p| (p.line(), p.byte()));
                self.line = line;
                self.bytes = byte + record.as_slice().len() as u64;
                let parsed = columns.record(record);
                Some(parsed.map_err(|message| self.line_error(line, message)))
            }
            Err(e) => {
                let line = e.position().map_or(self.line, csv::Position::line);
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    self.failed = true;
                }
                Some(Err(self.line_error(line, e.to_string())))
            }
        }
    }
}

impl Iterator for Records {
    type Item = Result<Record, FileError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.source {
            Source::Jsonl { .. } => self.next_jsonl(),
            Source::Csv { .. } => self.next_csv(),
        }
    }
}

impl Columns {
    fn of(header: &csv::StringRecord) -> Result<Columns, String> {
        if header.get(0) != Some("entity") || header.get(1) != Some("id") {
            return Err("the first two columns are `entity,id`".into());
        }
        let mut names = Vec::new();
        for name in header.iter().skip(2) {
            if name == "tags" {
                if names.contains(&None) {
                    return Err("two `tags` columns".into());
                }
                names.push(None);
            } else {
                check_name(name)?;
                if names.iter().flatten().any(|n| n == name) {
                    return Err(format!("two `{name}` columns"));
                }
                names.push(Some(name.to_owned()));
            }
        }
        Ok(Columns { names })
    }

    fn record(&self, record: &csv::ByteRecord) -> Result<Record, String> {
        let cell = |i: usize| std::str::from_utf8(&record[i]).map_err(|_| format!("column {} is not UTF-8", i + 1));
        let mut out = Record { entity: cell(0)?.to_owned(), id: cell(1)?.to_owned(), features: Vec::new(), tags: None };
        for (i, name) in self.names.iter().enumerate() {
            let text = cell(i + 2)?;
            if text.is_empty() {
                continue;
            }
            match name {
                Some(name) => {
                    let value = value::parse_decimal(text).map_err(|why| bad_value(name, text, why))?;
                    out.features.push((name.clone(), value));
                }
                None => out.tags = Some(text.split('|').map(str::to_owned).collect()),
            }
        }
        out.features.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        check(out)
    }
}

fn bad_value(name: &str, text: &str, why: Refusal) -> String {
    let what = match why {
        Refusal::OutOfRange => "is beyond the range of f32",
        Refusal::NotFinite => "is not finite",
        Refusal::TooLarge => "is too long",
        _ => "is not a number",
    };
    format!("feature `{name}`: {text} {what} ({})", why.reason())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!("a feature name is 1 to {MAX_NAME_BYTES} bytes: `{name}`"));
    }
    if is_reserved(name) {
        return Err(format!("feature names starting with `_` are reserved: `{name}`"));
    }
    Ok(())
}

/// Checks what the format requires of a record.
fn check(record: Record) -> Result<Record, String> {
    let entity = &record.entity;
    if entity.is_empty()
        || entity.len() > MAX_NAME_BYTES
        || entity.contains(':')
        || entity.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("entity `{entity}`: an entity kind is a name without `:` or spaces"));
    }
    if record.id.is_empty() || record.id.len() > MAX_ID_BYTES {
        return Err(format!("an id is 1 to {MAX_ID_BYTES} bytes"));
    }
    for (name, _) in &record.features {
        check_name(name)?;
    }
    if let Some(pair) = record.features.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!("feature `{}` twice", pair[0].0));
    }
    if let Some(tags) = &record.tags {
        let bytes: usize = tags.iter().map(|t| t.len() + 3).sum();
        if bytes + 2 > MAX_TAGS_BYTES {
            return Err(format!("tags: more than {MAX_TAGS_BYTES} bytes"));
        }
    }
    Ok(record)
}

/// A JSONL line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    entity: String,
    id: String,
    #[serde(default)]
    features: Pairs,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

impl Line {
    fn into_record(self) -> Result<Record, String> {
        let mut features = Vec::with_capacity(self.features.0.len());
        for (name, number) in self.features.0 {
            let Some(number) = number else { continue };
            let value = value::from_f64(number).map_err(|why| bad_value(&name, &number.to_string(), why))?;
            features.push((name, value));
        }
        features.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        check(Record { entity: self.entity, id: self.id, features, tags: self.tags })
    }
}

/// `features`: a map of names to numbers or null, in file order (duplicates are caught later).
#[derive(Default)]
struct Pairs(Vec<(String, Option<f64>)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor;
        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of feature names to numbers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(PairsVisitor)
    }
}

/// Reads a whole file, stopping at the first bad line.
pub fn read_all(path: &Path) -> Result<Vec<Record>, FileError> {
    Records::open(path)?.collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
        (dir, path)
    }

    #[test]
    fn jsonl_lines_read_into_records() {
        let (_dir, path) = file(
            "f.jsonl",
            r#"{"entity": "venue", "id": "venue-1", "features": {"rating": 4.5, "eta_min": 25}, "tags": ["pizza"]}

{"entity": "user", "id": "u-42", "features": {"affinity.pizza": 0.8, "age": null}}
{"entity": "venue", "id": "venue-2"}
"#,
        );
        let records = read_all(&path).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].features, [("eta_min".to_owned(), 25.0), ("rating".to_owned(), 4.5)]);
        assert_eq!(records[0].tags, Some(vec!["pizza".to_owned()]));
        assert_eq!((records[1].features.len(), records[1].tags.is_none()), (1, true));
        assert!(records[2].features.is_empty());
    }

    #[test]
    fn csv_rows_read_into_records() {
        let (_dir, path) =
            file("f.csv", "entity,id,rating,eta_min,tags\nvenue,venue-1,4.5,25,pizza|italian\nvenue,venue-2,,40,\n");
        let records = read_all(&path).unwrap();
        assert_eq!(records[0].tags, Some(vec!["pizza".to_owned(), "italian".to_owned()]));
        assert_eq!(records[1].features, [("eta_min".to_owned(), 40.0)]);
        assert_eq!(records[1].tags, None);
    }

    fn first_error(name: &str, text: &str) -> String {
        let (_dir, path) = file(name, text);
        let error = Records::open(&path).unwrap().find_map(Result::err).expect("an error").to_string();
        error.rsplit_once(&*path.file_name().unwrap().to_string_lossy()).unwrap().1.to_owned()
    }

    #[test]
    fn bad_lines_name_the_line_and_what_is_wrong() {
        let good = r#"{"entity": "venue", "id": "v1"}"#;
        let cases = [
            (r#"{"entity": "venue", "id": "v2", "features": {"rating": 1e39}}"#, "out-of-range"),
            (r#"{"entity": "venue", "id": "v2", "features": {"rating": "4.5"}}"#, "not a feature line"),
            (r#"{"entity": "venue", "id": "v2", "features": {"_tags": 1}}"#, "reserved"),
            (r#"{"entity": "venue", "id": "v2", "features": {"a": 1, "a": 2}}"#, "`a` twice"),
            (r#"{"entity": "ven:ue", "id": "v2"}"#, "entity kind"),
            (r#"{"entity": "venue", "id": ""}"#, "an id"),
            (r#"{"entity": "venue", "id": "v2", "colour": "red"}"#, "unknown field"),
            (r#"{"entity": "venue", "id": "v2""#, "not a feature line"),
        ];
        for (line, what) in cases {
            let error = first_error("f.jsonl", &format!("{good}\n\n{line}\n{good}\n"));
            assert!(error.starts_with(":3: ") && error.contains(what), "{line}: {error}");
        }
        let error = first_error("f.csv", "entity,id,rating\nvenue,v1,4\nvenue,v2,NaN\n");
        assert!(error.starts_with(":3: ") && error.contains("not-finite"), "{error}");
        let error = first_error("f.csv", "entity,id,rating\nvenue,v1,4\nvenue,v2\n");
        assert!(error.starts_with(":3: "), "{error}");
        let error = first_error("f.csv", "id,entity\n");
        assert!(error.starts_with(":1: ") && error.contains("entity,id"), "{error}");
    }

    #[test]
    fn reading_goes_on_after_a_bad_line() {
        let (_dir, path) = file(
            "f.jsonl",
            "{\"entity\": \"venue\", \"id\": \"v1\"}\nnonsense\n{\"entity\": \"venue\", \"id\": \"v2\"}\n",
        );
        let results: Vec<_> = Records::open(&path).unwrap().collect();
        assert_eq!(results.len(), 3);
        assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
    }

    #[test]
    fn an_unknown_extension_is_refused() {
        assert!(Format::of(Path::new("features.txt")).is_err());
        assert_eq!(Format::of(Path::new("features.NDJSON")), Ok(Format::Jsonl));
    }
}
