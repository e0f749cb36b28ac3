//! [`check_request`]: the promises the contract makes a policy about a request's shape.

use crate::types;

/// Checks the promises the contract makes a policy about a request's shape: string and tag
/// offsets that start at 0, never decrease, end at their data and (strings) fall on character
/// boundaries; a matrix of exactly n × d
/// values, none infinite; distinct feature names, user features and vocabulary; tag indices
/// inside the vocabulary and distinct per row; user feature values that are not NaN.
///
/// Every request [`decode`](super::decode) returns passes. The fuzz target and the property
/// tests hold the decoder to that; a host that builds requests another way can check them here.
pub fn check_request(request: &types::Request) -> Result<(), String> {
    let c = &request.candidates;
    check_column("candidates.ids", &c.ids)?;
    check_column("candidates.feature_names", &c.feature_names)?;
    check_column("tag_vocabulary", &request.tag_vocabulary)?;
    check_column("user_features.names", &request.user_features.names)?;
    check_column("context.cart.item_ids", &request.context.cart.item_ids)?;
    let n = c.ids.len();
    let d = c.feature_names.len();
    if Some(c.features.len()) != n.checked_mul(d) {
        return Err(format!("candidates.features: {} values for {n} × {d}", c.features.len()));
    }
    if c.features.iter().any(|v| v.is_infinite()) {
        return Err("candidates.features: an infinite value".to_owned());
    }
    check_distinct("candidates.feature_names", &c.feature_names)?;
    check_distinct("tag_vocabulary", &request.tag_vocabulary)?;
    let vocabulary = request.tag_vocabulary.len();
    check_tags("candidates.tags", &c.tags, n, vocabulary)?;
    let cart = &request.context.cart;
    check_tags("context.cart.tags", &cart.tags, cart.item_ids.len(), vocabulary)?;
    let user = &request.user_features;
    if user.names.len() != user.values.len() {
        return Err(format!("user_features: {} names, {} values", user.names.len(), user.values.len()));
    }
    check_distinct("user_features.names", &user.names)?;
    if user.values.iter().any(|v| !v.is_finite()) {
        return Err("user_features: a value that is NaN or infinite".to_owned());
    }
    if request.local_minute_of_day >= 24 * 60 {
        return Err(format!("local_minute_of_day {} is not a minute of a day", request.local_minute_of_day));
    }
    Ok(())
}

fn check_offsets(name: &str, offsets: &[u32], end: usize) -> Result<(), String> {
    if offsets.first() != Some(&0) || offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err(format!("{name}: offsets do not start at 0 and never decrease: {offsets:?}"));
    }
    if offsets.last().map(|&o| o as usize) != Some(end) {
        return Err(format!("{name}: the last offset is not the data length {end}"));
    }
    Ok(())
}

/// A packed column's offsets: from 0, never decreasing, to the end of its data, each on a
/// character boundary.
fn check_column(name: &str, column: &types::StringColumn) -> Result<(), String> {
    if column.offsets.is_empty() {
        return Err(format!("`{name}.offsets` is empty"));
    }
    check_offsets(name, &column.offsets, column.data.len())?;
    if let Some(&bad) = column.offsets.iter().find(|&&o| !column.data.is_char_boundary(o as usize)) {
        return Err(format!("{name}: offset {bad} is inside a UTF-8 character"));
    }
    Ok(())
}

fn check_distinct(name: &str, items: &types::StringColumn) -> Result<(), String> {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    match items.iter().find(|item| !seen.insert(*item)) {
        Some(item) => Err(format!("{name}: `{item}` appears twice")),
        None => Ok(()),
    }
}

fn check_tags(name: &str, column: &types::TagColumn, rows: usize, vocabulary: usize) -> Result<(), String> {
    if column.offsets.len() != rows + 1 {
        return Err(format!("{name}: {} offsets for {rows} rows", column.offsets.len()));
    }
    check_offsets(name, &column.offsets, column.indices.len())?;
    if let Some(&bad) = column.indices.iter().find(|&&i| i as usize >= vocabulary) {
        return Err(format!("{name}: index {bad} is outside the vocabulary of {vocabulary}"));
    }
    for (row, w) in column.offsets.windows(2).enumerate() {
        let tags = &column.indices[w[0] as usize..w[1] as usize];
        if tags.iter().enumerate().any(|(k, t)| tags[..k].contains(t)) {
            return Err(format!("{name}: row {row} repeats a tag: {tags:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_request;
    use crate::decode::{DecodeOptions, decode};

    fn request() -> crate::types::Request {
        let body = br#"{"user": {"id": "u", "features": {"a": 1, "b": 2}},
            "context": {"cart": [{"id": "c1", "tags": ["x"]}]},
            "candidates": [{"id": "v1", "features": {"f": 1, "g": 2}, "tags": ["x", "y"]}]}"#;
        decode(body, &DecodeOptions::default()).expect("a valid body").request
    }

    #[test]
    fn a_decoded_request_keeps_every_promise() {
        assert_eq!(check_request(&request()), Ok(()));
    }

    #[test]
    fn a_broken_or_repeated_list_of_names_is_named() {
        let mut bad = request();
        bad.candidates.feature_names.offsets.push(99);
        let error = check_request(&bad).unwrap_err();
        assert!(error.starts_with("candidates.feature_names:"), "{error}");

        let mut bad = request();
        bad.user_features.names.offsets.clear();
        assert_eq!(check_request(&bad).unwrap_err(), "`user_features.names.offsets` is empty");

        let mut bad = request();
        bad.tag_vocabulary = ["x", "x"].into_iter().collect();
        assert_eq!(check_request(&bad).unwrap_err(), "tag_vocabulary: `x` appears twice");

        let mut bad = request();
        bad.context.cart.item_ids = crate::types::StringColumn { data: "é".to_owned(), offsets: vec![0, 1, 2] };
        let error = check_request(&bad).unwrap_err();
        assert!(error.starts_with("context.cart.item_ids:"), "{error}");
    }
}
