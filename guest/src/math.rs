//! Transcendental functions with one implementation on every target.
//!
//! `f32::exp` and friends call the platform's libm natively (glibc) but a Rust port of musl's libm
//! in wasm; the two can differ in the last bit. A policy that uses these functions instead gives
//! bit-identical scores natively and in the component, which is what lets its native tests stand
//! for the component. Arithmetic and `sqrt` are exact IEEE operations everywhere and need no wrapper.
//!
//! [`max`] and [`min`] are here for speed, not exactness: `f32::max` has to ignore a NaN operand,
//! which WebAssembly's `f32.max` does not, so in wasm it becomes a call into compiler-builtins.
//! Measured here, those calls were 15 % of the popularity policy's time. These versions compile to
//! a compare and a select and give the same answers as `f32::max`/`min` for non-NaN inputs.

/// `e^x` for `f32`.
#[inline]
pub fn exp(x: f32) -> f32 {
    libm::expf(x)
}

/// Natural logarithm for `f32`.
#[inline]
pub fn ln(x: f32) -> f32 {
    libm::logf(x)
}

/// `ln(1 + x)` for `f32`, accurate near zero.
#[inline]
pub fn ln_1p(x: f32) -> f32 {
    libm::log1pf(x)
}

/// `x^y` for `f32`.
#[inline]
pub fn pow(x: f32, y: f32) -> f32 {
    libm::powf(x, y)
}

/// Hyperbolic tangent for `f32`.
#[inline]
pub fn tanh(x: f32) -> f32 {
    libm::tanhf(x)
}

/// The logistic function `1 / (1 + e^-x)` for `f32`.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-x))
}

/// `e^x` for `f64`.
#[inline]
pub fn exp64(x: f64) -> f64 {
    libm::exp(x)
}

/// Natural logarithm for `f64`.
#[inline]
pub fn ln64(x: f64) -> f64 {
    libm::log(x)
}

/// `x^y` for `f64`.
#[inline]
pub fn pow64(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

/// Cosine for `f64`.
#[inline]
pub fn cos64(x: f64) -> f64 {
    libm::cos(x)
}

/// The larger of two values: `f32::max` for non-NaN inputs, as one compare and select in wasm.
/// (With a NaN operand it returns `b` if `a` is NaN and `a` if `b` is NaN, like `f32::max`.)
#[inline]
pub fn max(a: f32, b: f32) -> f32 {
    if a > b || b.is_nan() { a } else { b }
}

/// The smaller of two values: `f32::min` for non-NaN inputs, as one compare and select in wasm.
#[inline]
pub fn min(a: f32, b: f32) -> f32 {
    if a < b || b.is_nan() { a } else { b }
}

/// `value` limited to `lo..=hi` (NaN stays NaN).
#[inline]
pub fn clamp(value: f32, lo: f32, hi: f32) -> f32 {
    if value < lo {
        lo
    } else if value > hi {
        hi
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_and_min_match_the_standard_library() {
        let values = [-1.5, 0.0, 2.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        for &a in &values {
            for &b in &values {
                let same = |x: f32, y: f32| x == y || (x.is_nan() && y.is_nan());
                assert!(same(max(a, b), a.max(b)), "max({a}, {b})");
                assert!(same(min(a, b), a.min(b)), "min({a}, {b})");
            }
        }
    }
}
