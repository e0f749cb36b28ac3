//! Transcendental functions with one implementation on every target.
//!
//! `f32::exp` and friends call the platform's libm natively (glibc) but a Rust port of musl's libm
//! in wasm; the two can differ in the last bit. A policy that uses these functions instead gives
//! bit-identical scores natively and in the component, which is what lets its native tests stand
//! for the component. Arithmetic and `sqrt` are exact IEEE operations everywhere and need no wrapper.

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
