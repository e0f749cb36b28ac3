//! Decoding a realistic ranking request, in both shapes, and encoding a response.
//!
//! Parsing is most of a request's cost, so this is the number to watch when touching
//! `host/wire`. Run with `cargo bench -p relish-wire --bench decode`; criterion prints the time
//! per request and the throughput in MB/s (MiB/s in criterion's units).
//!
//! Beside each decode, the floor it is measured against: serde_json skimming the same bytes into
//! `IgnoredAny` (it checks the syntax and reads no value), and the full serde decoder that the
//! fast path falls back to. Compare the three within one run. Last, the decoder and the skim
//! timed in alternation ([`interleaved`]), whose ratio drift on a shared machine cannot skew.
//!
//! The bodies are built here by a small deterministic generator (not `relish-tests`, which depends
//! on this crate): a discovery request with 20 features per venue, a few of them missing, one to
//! three tags each, a user with affinities and a full context. The 500-candidate row body is
//! 208 KB (62 KB columnar), the size an edge proxy sends for a city's venue list.

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use relish_wire::{self as wire, ArmRef, DecodeOptions, Items, PolicyRef, Response};

#[path = "support/interleave.rs"]
mod interleave;

// The allocator of the `relish` binary, which the decoder runs under in the server: glibc's
// malloc would make the decoder's few dozen allocations per request (names, columns) cost
// several times what they cost there, while the skim allocates nothing.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FEATURES: [&str; 20] = [
    "is_open",
    "impressions_7d",
    "conversions_7d",
    "rating",
    "orders_7d",
    "eta_min",
    "user_orders",
    "user_last_order_days",
    "price_level",
    "distance_km",
    "delivery_fee",
    "min_order",
    "photos",
    "menu_items",
    "promo",
    "new_venue",
    "sponsored",
    "repeat_rate",
    "cancel_rate",
    "avg_basket_eur",
];

const TAGS: [&str; 15] = [
    "pizza",
    "sushi",
    "burger",
    "thai",
    "indian",
    "mexican",
    "vegan",
    "chinese",
    "kebab",
    "salad",
    "korean",
    "greek",
    "breakfast",
    "lunch",
    "dinner",
];

/// A small deterministic generator (SplitMix64), so every run decodes the same bytes.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A value as a caller would send it: a count, a flag, or a number with two decimals.
    fn value(&mut self, feature: usize) -> String {
        match feature {
            0 | 14 | 15 | 16 => if self.below(10) < 8 { "1" } else { "0" }.to_owned(),
            1 | 2 | 4 | 6 | 7 | 11 | 12 | 13 => self.below(5000).to_string(),
            _ => format!("{}.{:02}", self.below(60), self.below(100)),
        }
    }

    /// The features a venue has: every one, except a missing `rating` or `eta_min` now and then.
    fn present(&mut self) -> [bool; 20] {
        let mut present = [true; 20];
        present[3] = self.below(10) != 0;
        present[5] = self.below(20) != 0;
        present
    }

    fn tags(&mut self) -> Vec<&'static str> {
        let mut tags: Vec<&str> = Vec::new();
        for _ in 0..1 + self.below(3) {
            let tag = TAGS[self.below(TAGS.len() as u64) as usize];
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        tags
    }
}

fn quoted(items: &[&str]) -> String {
    items.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(",")
}

/// Everything but the candidates, the same in both shapes.
fn head() -> String {
    let affinities: Vec<String> =
        TAGS[..12].iter().enumerate().map(|(i, t)| format!("\"affinity.{t}\":0.{}", 9 - i % 9)).collect();
    format!(
        concat!(
            "{{\"request_id\":\"r-bench-1\",\"surface\":\"discovery\",",
            "\"user\":{{\"id\":\"u-42\",\"features\":{{{}}}}},",
            "\"context\":{{\"country\":\"FI\",\"city\":\"helsinki\",\"locale\":\"fi-FI\",\"lat\":60.17,",
            "\"lon\":24.94,\"device\":\"ios\",\"time\":\"2026-11-28T18:30:00+02:00\"}},\"limit\":20,"
        ),
        affinities.join(",")
    )
}

/// `n` venues in the row shape.
fn rows(n: usize) -> String {
    let mut g = Gen(n as u64);
    let mut body = head();
    body.push_str("\"candidates\":[");
    for i in 0..n {
        if i > 0 {
            body.push(',');
        }
        let present = g.present();
        let features: Vec<String> = (0..FEATURES.len())
            .filter(|&j| present[j])
            .map(|j| format!("\"{}\":{}", FEATURES[j], g.value(j)))
            .collect();
        let tags = g.tags();
        write!(body, "{{\"id\":\"venue-{i}\",\"features\":{{{}}},\"tags\":[{}]}}", features.join(","), quoted(&tags))
            .unwrap();
    }
    body.push_str("]}");
    body
}

/// The same kind of request in the columnar shape (`null` for a missing value).
fn columns(n: usize) -> String {
    let mut g = Gen(n as u64);
    let (mut values, mut tag_rows) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let present = g.present();
        values.extend((0..FEATURES.len()).map(|j| if present[j] { g.value(j) } else { "null".to_owned() }));
        tag_rows.push(format!("[{}]", quoted(&g.tags())));
    }
    let ids: Vec<String> = (0..n).map(|i| format!("\"venue-{i}\"")).collect();
    format!(
        "{}\"candidates\":{{\"ids\":[{}],\"feature_names\":[{}],\"features\":[{}],\"tags\":[{}]}}}}",
        head(),
        ids.join(","),
        quoted(&FEATURES),
        values.join(","),
        tag_rows.join(",")
    )
}

fn decode(c: &mut Criterion) {
    let options = DecodeOptions { now_unix_ms: 1_795_867_200_000, ..DecodeOptions::default() };
    let mut group = c.benchmark_group("decode");
    for n in [50, 500] {
        for (shape, body) in [("rows", rows(n)), ("columns", columns(n))] {
            let decoded = wire::decode(body.as_bytes(), &options).expect("the benchmark body decodes");
            assert_eq!(decoded.request.candidates.feature_names.len(), FEATURES.len());
            assert!(wire::decode_fast(body.as_bytes(), &options).is_some(), "{shape} {n} takes the fast path");
            group.throughput(Throughput::Bytes(body.len() as u64));
            group.bench_with_input(BenchmarkId::new(shape, n), body.as_bytes(), |b, body| {
                b.iter(|| wire::decode(black_box(body), &options).expect("decodes"))
            });
            group.bench_with_input(BenchmarkId::new(format!("{shape}-serde"), n), body.as_bytes(), |b, body| {
                b.iter(|| wire::decode_with_serde(black_box(body), &options).expect("decodes"))
            });
            group.bench_with_input(BenchmarkId::new(format!("{shape}-skim"), n), body.as_bytes(), |b, body| {
                b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(body)).expect("skims"))
            });
        }
        // The same request as protobuf (`relish.v1.RankRequest`).
        let protobuf = {
            use prost::Message as _;
            wire::decode(rows(n).as_bytes(), &options).expect("decodes").to_protobuf().encode_to_vec()
        };
        group.throughput(Throughput::Bytes(protobuf.len() as u64));
        group.bench_with_input(BenchmarkId::new("protobuf", n), &protobuf[..], |b, body| {
            b.iter(|| wire::decode_protobuf(black_box(body), &options).expect("decodes"))
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let options = DecodeOptions::default();
    let mut request = wire::decode(rows(500).as_bytes(), &options).expect("the benchmark body decodes").request;
    request.limit = 50;
    // A realistic answer: 50 of the 500 venues, scores with full f32 precision, reason codes.
    let order: Vec<u32> = (0..50).map(|i| i * 7).collect();
    let scores: Vec<f32> = (0..50).map(|i| 3.0 - i as f32 * 0.0517).collect();
    let reasons: Vec<u32> = (0..50).map(|i| i % 3).collect();
    let reason_codes = ["affinity", "reorder", "popular"].map(str::to_owned);
    let ids = &request.candidates.ids;
    let items = Items {
        order: &order,
        scores: &scores,
        reasons: &reasons,
        reason_codes: &reason_codes,
        id_data: &ids.data,
        id_offsets: &ids.offsets,
    };
    let digest = [0x5a; 32];
    let response: Response<'_> = Response {
        request_id: &request.request_id,
        items,
        policy: Some(PolicyRef { name: "discovery", version: "0.1.0", digest: &digest }),
        arm: Some(ArmRef { index: 0, name: "discovery@0.1.0", revision: 3, bucket: 4711, sticky: true }),
        fallback: None,
        features: None,
        took_us: 85,
    };
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Bytes(response.to_json().len() as u64));
    group.bench_function("response/50", |b| b.iter(|| black_box(&response).to_json()));
    group.finish();
}

/// The decoder against the skim, interleaved (see [`interleave`]): goal 1's ratio. Prints the
/// median and quartiles of the rounds' ratios.
fn interleaved() {
    let options = DecodeOptions { now_unix_ms: 1_795_867_200_000, ..DecodeOptions::default() };
    println!(
        "\ndecoder / skim, interleaved ({} rounds of about 2 ms each way): median [quartiles]",
        interleave::ROUNDS
    );
    for n in [50, 500] {
        for (shape, body) in [("rows", rows(n)), ("columns", columns(n))] {
            let body = body.as_bytes();
            let decode = || drop(black_box(wire::decode(black_box(body), &options).expect("decodes")));
            let skim = || drop(black_box(serde_json::from_slice::<serde::de::IgnoredAny>(black_box(body))));
            println!("{shape}/{n}: {}", interleave::ratio(&decode, &skim, 2e-3));
        }
    }
}

criterion_group!(benches, decode, encode);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if interleave::wanted(std::env::args().skip(1)) {
        interleaved();
    }
}
