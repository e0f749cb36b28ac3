//! The host checks every answer; a broken one is a typed error, never a panic or a bad page.

use relish_host::runtime::{CallError, InvalidOutput};
use relish_tests::{budget, decode, guest, policy};

const FOUR: &str = r#"{"candidates": [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}], "limit": 3}"#;

fn invalid(name: &str) -> InvalidOutput {
    let request = decode(FOUR);
    match guest(name).rank(&request, &budget()) {
        Err(CallError::InvalidOutput(invalid)) => invalid,
        other => panic!("{name}: expected invalid output, got {other:?}"),
    }
}

#[test]
fn an_out_of_range_index_is_rejected() {
    assert_eq!(invalid("out-of-range"), InvalidOutput::IndexOutOfRange { position: 0, index: 4, candidates: 4 });
}

#[test]
fn a_duplicate_index_is_rejected() {
    assert_eq!(invalid("duplicate-index"), InvalidOutput::Duplicate { index: 0, first: 0, second: 1 });
}

#[test]
fn a_nan_score_is_rejected() {
    assert!(matches!(invalid("nan-score"), InvalidOutput::NonFiniteScore { position: 0, .. }));
}

#[test]
fn infinite_scores_are_rejected() {
    for score in ["inf", "-inf"] {
        let mut request = decode(FOUR);
        request.params = [("score", score)].into_iter().collect();
        let error = guest("nan-score").rank(&request, &budget()).unwrap_err();
        let CallError::InvalidOutput(InvalidOutput::NonFiniteScore { position: 0, score: shown }) = error else {
            panic!("{score}: expected a non-finite score, got {error:?}")
        };
        assert_eq!(shown, score);
    }
}

#[test]
fn more_items_than_the_limit_are_rejected() {
    assert_eq!(invalid("too-many"), InvalidOutput::TooMany { items: 4, limit: 3 });
}

#[test]
fn the_reason_code_of_an_invalid_answer_is_invalid_output() {
    let request = decode(FOUR);
    let error = guest("duplicate-index").rank(&request, &budget()).unwrap_err();
    assert_eq!(error.reason(), "invalid-output");
    // The runtime is unharmed: a good policy still answers right after.
    assert_eq!(policy("popularity").rank(&request, &budget()).unwrap().len(), 3);
}
