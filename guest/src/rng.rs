//! The seeded random number generator: the only randomness a policy may use.

use rand_core::{Rng as _, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::math;

/// A deterministic random number generator (xoshiro256++, seeded through SplitMix64).
///
/// Made from the request seed ([`crate::Request::rng`]), so the same request draws the same numbers
/// natively and in wasm. The sampling methods (`normal`, `gamma`, `beta`) use [`crate::math`], so
/// they are bit-identical across targets too.
#[derive(Debug, Clone)]
pub struct Rng {
    inner: Xoshiro256PlusPlus,
}

impl Rng {
    /// A generator seeded from `seed`.
    pub fn from_seed(seed: u64) -> Self {
        Rng { inner: Xoshiro256PlusPlus::seed_from_u64(seed) }
    }

    /// An independent stream for `(seed, stream)`: different streams of one seed do not overlap in
    /// practice (SplitMix64 scrambles the combined seed).
    pub fn from_seed_and_stream(seed: u64, stream: u64) -> Self {
        Rng::from_seed(seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// A uniformly random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A uniform `f64` in `[0, 1)` (53 random bits).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform `f32` in `[0, 1)` (24 random bits).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// A uniform integer in `0..n` without modulo bias (Lemire's method). `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below needs a positive bound");
        let threshold = n.wrapping_neg() % n;
        loop {
            let product = (self.next_u64() as u128) * (n as u128);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64(); // (0, 1]: keeps ln finite
        let u2 = self.f64();
        (-2.0 * math::ln64(u1)).sqrt() * math::cos64(std::f64::consts::TAU * u2)
    }

    /// A Gamma(`shape`, 1) sample (Marsaglia and Tsang, with the `shape < 1` boost).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        assert!(shape > 0.0, "Rng::gamma needs a positive shape, got {shape}");
        if shape < 1.0 {
            let u = 1.0 - self.f64();
            return self.gamma(shape + 1.0) * math::pow64(u, 1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = 1.0 - self.f64();
            if math::ln64(u) < 0.5 * x * x + d - d * v + d * math::ln64(v) {
                return d * v;
            }
        }
    }

    /// A Beta(`alpha`, `beta`) sample, the posterior draw of Thompson sampling.
    pub fn beta(&mut self, alpha: f64, beta: f64) -> f64 {
        let x = self.gamma(alpha);
        let y = self.gamma(beta);
        if x + y == 0.0 { 0.5 } else { x / (x + y) }
    }

    /// Shuffles a slice in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_numbers() {
        let a: Vec<u64> = (0..8).scan(Rng::from_seed(7), |rng, _| Some(rng.next_u64())).collect();
        let b: Vec<u64> = (0..8).scan(Rng::from_seed(7), |rng, _| Some(rng.next_u64())).collect();
        let c: Vec<u64> = (0..8).scan(Rng::from_seed(8), |rng, _| Some(rng.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn streams_of_one_seed_differ() {
        assert_ne!(Rng::from_seed_and_stream(1, 0).next_u64(), Rng::from_seed_and_stream(1, 1).next_u64());
    }

    #[test]
    fn uniform_draws_stay_in_range() {
        let mut rng = Rng::from_seed(1);
        for _ in 0..10_000 {
            let x = rng.f32();
            assert!((0.0..1.0).contains(&x));
            assert!(rng.below(7) < 7);
        }
    }

    #[test]
    fn beta_samples_have_the_right_mean() {
        let mut rng = Rng::from_seed(42);
        let (alpha, beta) = (3.0, 7.0);
        let n = 20_000;
        let mean = (0..n).map(|_| rng.beta(alpha, beta)).sum::<f64>() / n as f64;
        assert!((mean - 0.3).abs() < 0.01, "mean {mean}");
        let small = (0..n).map(|_| rng.beta(0.5, 0.5)).sum::<f64>() / n as f64;
        assert!((small - 0.5).abs() < 0.02, "mean {small}");
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut items: Vec<u32> = (0..50).collect();
        Rng::from_seed(3).shuffle(&mut items);
        let mut sorted = items.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(items, sorted);
    }
}
