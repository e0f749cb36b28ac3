//! The request a policy receives, as plain Rust values: the records of `relish:policy/types` in
//! `wit/policy.wit`, field for field, so that this crate needs no WebAssembly runtime.
//!
//! The host moves each field into the `wasmtime` bindings' records of the same name (no copy);
//! the documentation of every field is the contract's.

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
    pub names: Vec<String>,
    /// One value per name, never NaN.
    pub values: Vec<f32>,
}

/// What the user already has in the cart.
#[derive(Debug, Clone, PartialEq)]
pub struct Cart {
    /// The caller's ids of the cart's items, in cart order.
    pub item_ids: Vec<String>,
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
    pub feature_names: Vec<String>,
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
    pub tag_vocabulary: Vec<String>,
    pub candidates: Candidates,
    pub limit: u32,
    pub params: Vec<(String, String)>,
}
