//! A broken policy costs a fallback answer, never a failed request.

use hyper::StatusCode;

use crate::util::{self, THREE, get, ids, metric, rank};

#[tokio::test]
async fn a_trapping_policy_is_answered_by_the_fallback_policy() {
    let toml = "[surfaces.banners]\npolicy = \"panic\"\nfallback = \"popularity\"\n";
    let server = util::start(&["popularity"], &["panic"], toml).await;
    for _ in 0..3 {
        let answer = rank(&server, "banners", THREE).await;
        assert_eq!(answer.status, StatusCode::OK);
        let answer = answer.json();
        assert_eq!(answer["fallback"]["reason"], "trap");
        assert_eq!(answer["fallback"]["answered_by"], "popularity");
        assert!(answer["fallback"]["detail"].as_str().unwrap().contains("trapped"), "{answer}");
        assert_eq!(answer["policy"]["name"], "panic", "the response names the version that failed");
        assert_eq!(ids(&answer), ["second", "third", "first"], "popularity's order");
    }
    let scrape = String::from_utf8(get(&server, "/metrics").await.body.to_vec()).unwrap();
    let labels = [("surface", "banners"), ("policy", "panic"), ("reason", "trap"), ("answered_by", "popularity")];
    assert_eq!(metric(&scrape, "relish_fallbacks_total", &labels), 3.0);
    assert_eq!(metric(&scrape, "relish_policy_errors_total", &[("policy", "panic"), ("reason", "trap")]), 3.0);
    server.stop().await;
}

#[tokio::test]
async fn a_policy_past_its_deadline_is_interrupted_and_the_input_order_answers() {
    // No fallback policy: the last step of the chain, the input order, answers.
    let toml = "[surfaces.banners]\npolicy = \"infinite-loop\"\nfallback = \"none\"\ndeadline_ms = 20\n\
                [surfaces.discovery]\npolicy = \"popularity\"\n";
    let server = util::start(&["popularity"], &["infinite-loop"], toml).await;
    let answer = rank(&server, "banners", THREE).await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = answer.json();
    assert_eq!(answer["fallback"]["reason"], "timeout");
    assert_eq!(answer["fallback"]["answered_by"], "input-order");
    assert_eq!(ids(&answer), ["first", "second", "third"]);
    // The host keeps serving, this surface and the others.
    assert_eq!(rank(&server, "banners", THREE).await.json()["fallback"]["reason"], "timeout");
    let discovery = rank(&server, "discovery", THREE).await.json();
    assert_eq!(discovery["fallback"], serde_json::Value::Null);
    assert_eq!(ids(&discovery)[0], "second");
    server.stop().await;
}
