//! Two routines timed in alternation, for a ratio that the drift of a shared machine cannot
//! skew. Shared, through `#[path]`, by the decode benchmark (decoder / skim, goal 1 of the speed
//! work) and the call benchmark (wasm / native, goal 4), which live in crates that cannot depend
//! on each other.
//!
//! On a shared machine the load drifts over the seconds between two criterion cases, so a ratio
//! of two cases measured apart can be off by a third either way. Here each round times a batch
//! of one routine and a batch of the other back to back (which goes first alternates), and the
//! ratio of each round's pair is kept: drift slower than a round cancels out.

use std::fmt;
use std::time::Instant;

/// The rounds of [`ratio`]: odd, so that the median is one of them.
pub const ROUNDS: usize = 101;

/// The median and quartiles of the rounds' ratios.
pub struct Ratio {
    median: f64,
    lower: f64,
    upper: f64,
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} [{:.3} {:.3}]", self.median, self.lower, self.upper)
    }
}

/// `a`'s time over `b`'s, from [`ROUNDS`] rounds of batches of about `batch_seconds` of `b`
/// each, after a warm-up of both.
pub fn ratio(a: &dyn Fn(), b: &dyn Fn(), batch_seconds: f64) -> Ratio {
    let batch = |f: &dyn Fn(), k: usize| {
        let started = Instant::now();
        for _ in 0..k {
            f();
        }
        started.elapsed().as_secs_f64()
    };
    let k = ((batch_seconds / (batch(b, 50) / 50.0)) as usize).max(1);
    batch(a, k);
    let mut ratios: Vec<f64> = (0..ROUNDS)
        .map(|round| {
            if round % 2 == 0 {
                let a = batch(a, k);
                a / batch(b, k)
            } else {
                let b = batch(b, k);
                batch(a, k) / b
            }
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    Ratio { median: ratios[ROUNDS / 2], lower: ratios[ROUNDS / 4], upper: ratios[3 * ROUNDS / 4] }
}

/// Whether the command line asks for the interleaved ratios too: not when it only lists the
/// cases (`--list`), and with a filter only if the filter is part of the name `interleaved` (as
/// criterion matches a case), so that `-- rows/50` runs that case alone and `-- interleaved` runs
/// only the interleaved ratios.
pub fn wanted(args: impl Iterator<Item = String>) -> bool {
    // Criterion's options that take a value: what follows them is not a filter.
    const VALUED: [&str; 16] = [
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--color",
        "--format",
        "--plotting-backend",
        "--output-format",
    ];
    let mut args = args;
    let mut filter = None;
    while let Some(arg) = args.next() {
        if arg == "--list" {
            return false;
        }
        if VALUED.contains(&arg.as_str()) || arg == "-c" {
            args.next();
        } else if !arg.starts_with('-') {
            filter = Some(arg);
        }
    }
    filter.is_none_or(|filter| "interleaved".contains(filter.as_str()))
}
