//! The ops page: `GET /` on the admin listener, and the live series it plots.
//!
//! The page (`ops/index.html`, `ops/ops.js`, `ops/ops.css`, compiled into the binary) is plain
//! HTML and JavaScript: a person signs in with an admin token, which the page keeps in the
//! browser session and sends as a bearer header on every API call, never in a URL or a cookie.
//! So the page itself is public and worth nothing without a token, and a cross-site request
//! cannot act with the operator's rights (a browser attaches no bearer header on its own, and
//! the API's JSON bodies need a CORS preflight the API never grants): CSRF-safe by construction.
//! A content security policy lets the page run only its own script and talk only to its origin.
//!
//! [`Series`] keeps the last 15 minutes of what the page plots, one point every 2 s, in a ring
//! buffer: a task reads the Prometheus registry (the counters the hot path updates anyway) and
//! stores the differences since the previous read, so no Prometheus server is needed to watch a
//! canary, and the response path does nothing more. `GET /v1/ops/series` answers them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use prometheus::proto::{MetricFamily, MetricType};
use serde::Serialize;

use super::http::HttpResponse;

/// How often a point is taken.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How long points are kept.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

const PAGE: &str = include_str!("ops/index.html");
const SCRIPT: &str = include_str!("ops/ops.js");
const STYLE: &str = include_str!("ops/ops.css");

/// What the page's documents may do: only the page's own script and style, requests only to
/// this origin, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The page's static documents by path, or `None` for any other path.
pub fn asset(path: &str) -> Option<HttpResponse> {
    let (body, media) = match path {
        "/" | "/index.html" => (PAGE, "text/html; charset=utf-8"),
        "/ops.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/ops.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut response = Response::new(super::http::Body::full(bytes::Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    *response.status_mut() = StatusCode::OK;
    Some(response)
}

/// One point of the series.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// When it was taken, Unix milliseconds; it covers the interval before.
    pub at: i64,
    /// By surface.
    pub surfaces: BTreeMap<String, SurfacePoint>,
    /// By feature store.
    pub stores: BTreeMap<String, StorePoint>,
    /// The fleet, on a fleet host.
    pub fleet: Option<FleetPoint>,
}

/// A surface's figures over one interval.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SurfacePoint {
    /// By plan arm.
    pub arms: BTreeMap<String, ArmPoint>,
    /// By shadow.
    pub shadows: BTreeMap<String, ShadowPoint>,
}

/// An arm's figures over one interval.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArmPoint {
    /// Requests answered per second.
    pub requests_per_second: f64,
    /// Median request time, from the histogram's buckets (`None` without requests).
    pub p50_ms: Option<f64>,
    /// 99th percentile request time.
    pub p99_ms: Option<f64>,
    /// The share of requests answered by a fallback, by reason.
    pub fallback_rate: BTreeMap<String, f64>,
}

/// A shadow's figures over one interval: its calls, and the mean agreement of its answers with
/// the answers sent, by measure (`None` without calls).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShadowPoint {
    /// Shadow calls per second (every outcome).
    pub calls_per_second: f64,
    /// Mean top-1 agreement.
    pub top1: Option<f64>,
    /// Mean overlap@k.
    pub overlap: Option<f64>,
    /// Mean rank-biased overlap.
    pub rbo: Option<f64>,
    /// Mean Kendall's tau.
    pub kendall_tau: Option<f64>,
}

/// A feature store's figures over one interval.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StorePoint {
    /// Entities looked up per second.
    pub lookups_per_second: f64,
    /// The share answered from the cache (`hit` and `absent`), `None` without lookups.
    pub hit_rate: Option<f64>,
}

/// The fleet's figures at one point.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetPoint {
    /// Revisions of the fleet's state this host has not applied yet.
    pub behind: i64,
    /// Mean time from a change's write to the fleet to its applying here, over the interval
    /// (`None` when nothing was applied).
    pub lag_ms: Option<f64>,
}

/// The series, and what the last read of the registry held.
#[derive(Default)]
pub struct Series {
    points: Mutex<VecDeque<Point>>,
    last: Mutex<Option<Totals>>,
}

/// The answer of `GET /v1/ops/series`.
#[derive(Serialize)]
struct Answer<'a> {
    interval_ms: u64,
    window_ms: u64,
    points: Vec<&'a Point>,
}

impl Series {
    /// A series updated by a task every [`INTERVAL`] from `registry` until `shutdown`.
    pub fn start(registry: prometheus::Registry, mut shutdown: tokio::sync::watch::Receiver<bool>) -> Arc<Series> {
        let series = Arc::new(Series::default());
        let updated = series.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => updated.sample(&registry.gather(), now_ms()),
                    _ = shutdown.changed() => break,
                }
            }
        });
        series
    }

    /// Adds the point of a read of the registry at `at` (nothing for the first read: a point is
    /// a difference).
    pub fn sample(&self, families: &[MetricFamily], at: i64) {
        let totals = Totals::read(families);
        let mut last = self.last.lock().expect("the series lock");
        if let Some(before) = last.as_ref() {
            let seconds = ((at - before.at) as f64 / 1000.0).max(1e-3);
            let point = totals.since(before, seconds, at);
            let mut points = self.points.lock().expect("the series lock");
            points.push_back(point);
            while points.front().is_some_and(|p| at - p.at > WINDOW.as_millis() as i64) {
                points.pop_front();
            }
        }
        *last = Some(Totals { at, ..totals });
    }

    /// The points taken after `after` (Unix ms; all with `None`), as JSON.
    pub fn json(&self, after: Option<i64>) -> Vec<u8> {
        let points = self.points.lock().expect("the series lock");
        let answer = Answer {
            interval_ms: INTERVAL.as_millis() as u64,
            window_ms: WINDOW.as_millis() as u64,
            points: points.iter().filter(|p| after.is_none_or(|after| p.at > after)).collect(),
        };
        serde_json::to_vec(&answer).expect("points serialise")
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A histogram's cumulative figures.
#[derive(Debug, Clone, Default)]
struct Histogram {
    count: f64,
    sum: f64,
    /// `(upper bound, cumulative count)`, ascending.
    buckets: Vec<(f64, f64)>,
}

impl Histogram {
    fn add(&mut self, metric: &prometheus::proto::Metric) {
        let h = metric.get_histogram();
        self.count += h.get_sample_count() as f64;
        self.sum += h.get_sample_sum();
        let buckets = h.get_bucket();
        if self.buckets.is_empty() {
            self.buckets = buckets.iter().map(|b| (b.upper_bound(), 0.0)).collect();
        }
        for (mine, bucket) in self.buckets.iter_mut().zip(buckets) {
            mine.1 += bucket.cumulative_count() as f64;
        }
    }

    fn since(&self, before: Option<&Histogram>) -> Histogram {
        let Some(before) = before else { return self.clone() };
        Histogram {
            count: self.count - before.count,
            sum: self.sum - before.sum,
            buckets: self
                .buckets
                .iter()
                .zip(before.buckets.iter().map(|b| b.1).chain(std::iter::repeat(0.0)))
                .map(|(&(bound, now), then)| (bound, now - then))
                .collect(),
        }
    }

    /// The `q` quantile, interpolated within its bucket as Prometheus' `histogram_quantile`
    /// does; the largest finite bound when it lies beyond.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        let mut lower = (0.0, 0.0);
        for &(bound, cumulative) in &self.buckets {
            if cumulative >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let width = cumulative - lower.1;
                let share = if width > 0.0 { (rank - lower.1) / width } else { 1.0 };
                return Some(lower.0 + (bound - lower.0) * share);
            }
            lower = (bound, cumulative);
        }
        Some(lower.0)
    }

    fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
}

/// The cumulative values the series is made of, from one read of the registry.
#[derive(Default)]
struct Totals {
    at: i64,
    /// By (surface, arm).
    requests: HashMap<(String, String), f64>,
    latency: HashMap<(String, String), Histogram>,
    /// By (surface, arm, reason).
    fallbacks: HashMap<(String, String, String), f64>,
    /// By (surface, shadow).
    shadow_calls: HashMap<(String, String), f64>,
    /// By (surface, shadow, measure).
    agreement: HashMap<(String, String, String), Histogram>,
    /// By (store, outcome).
    lookups: HashMap<(String, String), f64>,
    fleet: Option<(f64, f64)>,
    fleet_lag: Histogram,
}

fn label<'a>(metric: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    metric.get_label().iter().find(|l| l.name() == name).map_or("", |l| l.value())
}

fn counter(metric: &prometheus::proto::Metric, kind: MetricType) -> f64 {
    match kind {
        MetricType::COUNTER => metric.get_counter().get_value(),
        MetricType::GAUGE => metric.get_gauge().get_value(),
        _ => 0.0,
    }
}

impl Totals {
    fn read(families: &[MetricFamily]) -> Totals {
        let mut totals = Totals::default();
        let (mut head, mut applied) = (None, None);
        for family in families {
            let kind = family.get_field_type();
            for metric in family.get_metric() {
                let pair = |a: &str, b: &str| (label(metric, a).to_owned(), label(metric, b).to_owned());
                match family.name() {
                    "relish_requests_total" => {
                        *totals.requests.entry(pair("surface", "arm")).or_default() += counter(metric, kind);
                    }
                    "relish_request_duration_seconds" => {
                        totals.latency.entry(pair("surface", "arm")).or_default().add(metric);
                    }
                    "relish_fallbacks_total" => {
                        let (surface, arm) = pair("surface", "arm");
                        let reason = label(metric, "reason").to_owned();
                        *totals.fallbacks.entry((surface, arm, reason)).or_default() += counter(metric, kind);
                    }
                    "relish_shadow_calls_total" => {
                        *totals.shadow_calls.entry(pair("surface", "shadow")).or_default() += counter(metric, kind);
                    }
                    "relish_shadow_agreement" => {
                        let (surface, shadow) = pair("surface", "shadow");
                        let measure = label(metric, "measure").to_owned();
                        totals.agreement.entry((surface, shadow, measure)).or_default().add(metric);
                    }
                    "relish_feature_lookups_total" => {
                        *totals.lookups.entry(pair("store", "outcome")).or_default() += counter(metric, kind);
                    }
                    "relish_fleet_head_revision" => head = Some(counter(metric, kind)),
                    "relish_fleet_applied_revision" => applied = Some(counter(metric, kind)),
                    "relish_fleet_apply_lag_seconds" => totals.fleet_lag.add(metric),
                    _ => {}
                }
            }
        }
        totals.fleet = head.zip(applied);
        totals
    }

    /// The point of the interval from `before` to these totals, `seconds` long.
    fn since(&self, before: &Totals, seconds: f64, at: i64) -> Point {
        let delta = |now: f64, then: Option<&f64>| (now - then.copied().unwrap_or(0.0)).max(0.0);
        let mut surfaces: BTreeMap<String, SurfacePoint> = BTreeMap::new();
        // A metric that never counted (an arm's pre-resolved labels before its first request,
        // the unplanned binding's) is not an arm with traffic: left out.
        for (key, &now) in self.requests.iter().filter(|(_, now)| **now > 0.0) {
            let requests = delta(now, before.requests.get(key));
            let latency = self.latency.get(key).map(|h| h.since(before.latency.get(key))).unwrap_or_default();
            let (surface, arm) = key;
            let fallback_rate = self
                .fallbacks
                .iter()
                .filter(|((s, a, _), _)| s == surface && a == arm)
                .filter_map(|(k, &now)| {
                    let fell_back = delta(now, before.fallbacks.get(k));
                    (requests > 0.0 && fell_back > 0.0).then(|| (k.2.clone(), fell_back / requests))
                })
                .collect();
            surfaces.entry(surface.clone()).or_default().arms.insert(
                arm.clone(),
                ArmPoint {
                    requests_per_second: requests / seconds,
                    p50_ms: latency.quantile(0.5).map(|s| s * 1000.0),
                    p99_ms: latency.quantile(0.99).map(|s| s * 1000.0),
                    fallback_rate,
                },
            );
        }
        for (key, &now) in self.shadow_calls.iter().filter(|(_, now)| **now > 0.0) {
            let calls = delta(now, before.shadow_calls.get(key));
            let mean = |measure: &str| {
                let key = (key.0.clone(), key.1.clone(), measure.to_owned());
                self.agreement.get(&key).and_then(|h| h.since(before.agreement.get(&key)).mean())
            };
            let point = ShadowPoint {
                calls_per_second: calls / seconds,
                top1: mean("top1"),
                overlap: mean("overlap"),
                rbo: mean("rbo"),
                kendall_tau: mean("kendall_tau"),
            };
            surfaces.entry(key.0.clone()).or_default().shadows.insert(key.1.clone(), point);
        }
        let mut stores: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for (key, &now) in &self.lookups {
            let looked_up = delta(now, before.lookups.get(key));
            let (all, cached) = stores.entry(key.0.clone()).or_default();
            *all += looked_up;
            if key.1 == "hit" || key.1 == "absent" {
                *cached += looked_up;
            }
        }
        let stores = stores
            .into_iter()
            .map(|(store, (all, cached))| {
                let point =
                    StorePoint { lookups_per_second: all / seconds, hit_rate: (all > 0.0).then(|| cached / all) };
                (store, point)
            })
            .collect();
        let fleet = self.fleet.map(|(head, applied)| FleetPoint {
            behind: (head - applied).max(0.0) as i64,
            lag_ms: self.fleet_lag.since(Some(&before.fleet_lag)).mean().map(|s| s * 1000.0),
        });
        Point { at, surfaces, stores, fleet }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn a_point_is_the_difference_between_two_reads() {
        let metrics = Metrics::new();
        let registry = metrics.registry().clone();
        let binding = metrics.binding("discovery", "canary", "discovery", "0.2.0");
        let series = Series::default();
        series.sample(&registry.gather(), 0);
        assert!(series.points.lock().unwrap().is_empty(), "the first read only sets the baseline");

        for i in 0..100 {
            binding.answered.inc();
            // 0.1 ms for 98 requests, 50 ms for the slowest two.
            binding.request_seconds.observe(if i < 98 { 0.0001 } else { 0.05 });
        }
        for _ in 0..4 {
            metrics.fallback("discovery", "canary", "discovery", "0.2.0", "timeout", "popularity");
        }
        series.sample(&registry.gather(), 2000);
        let json: serde_json::Value = serde_json::from_slice(&series.json(None)).unwrap();
        let arm = &json["points"][0]["surfaces"]["discovery"]["arms"]["canary"];
        assert_eq!(arm["requests_per_second"], 52.0, "104 requests in 2 s: {json}");
        assert!(arm["p50_ms"].as_f64().unwrap() <= 0.1, "{arm}");
        assert!(arm["p99_ms"].as_f64().unwrap() > 25.0, "{arm}");
        let rate = arm["fallback_rate"]["timeout"].as_f64().unwrap();
        assert!((rate - 4.0 / 104.0).abs() < 1e-9, "{arm}");
        assert_eq!(json["interval_ms"], 2000);

        // Nothing new: the next point has no requests and no latency.
        series.sample(&registry.gather(), 4000);
        let json: serde_json::Value = serde_json::from_slice(&series.json(Some(2000))).unwrap();
        assert_eq!(json["points"].as_array().unwrap().len(), 1, "only the points after 2000");
        let arm = &json["points"][0]["surfaces"]["discovery"]["arms"]["canary"];
        assert_eq!((arm["requests_per_second"].as_f64(), &arm["p50_ms"]), (Some(0.0), &serde_json::Value::Null));
    }

    #[test]
    fn points_older_than_the_window_are_dropped() {
        let registry = Metrics::new().registry().clone();
        let series = Series::default();
        let step = INTERVAL.as_millis() as i64;
        let points = WINDOW.as_millis() as i64 / step;
        for i in 0..points + 20 {
            series.sample(&registry.gather(), i * step);
        }
        let kept = series.points.lock().unwrap();
        assert_eq!(kept.len() as i64, points + 1, "15 minutes of points, ends included");
        assert_eq!(kept.back().unwrap().at - kept.front().unwrap().at, WINDOW.as_millis() as i64);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let h = Histogram { count: 10.0, sum: 0.0, buckets: vec![(1.0, 0.0), (2.0, 10.0), (f64::INFINITY, 10.0)] };
        assert_eq!(h.quantile(0.5), Some(1.5));
        assert_eq!(Histogram::default().quantile(0.5), None);
        let beyond = Histogram { count: 2.0, sum: 0.0, buckets: vec![(1.0, 0.0), (f64::INFINITY, 2.0)] };
        assert_eq!(beyond.quantile(0.99), Some(1.0), "the largest finite bound");
    }
}
