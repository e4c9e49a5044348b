//! Element-wise math for the kernels, written so that the compiler
//! vectorises it: the exponential by range reduction and a polynomial
//! (Cephes' `expf`, about 1 ulp), and erf by Abramowitz & Stegun 7.1.26
//! (absolute error 1.5e-7 in exact arithmetic, below 4e-7 in f32), instead of libm's scalar calls.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 · 2²³: adding and subtracting it rounds to the nearest integer
/// with plain float adds (no `round` instruction needed).
const ROUND: f32 = 12_582_912.0;

/// eˣ for finite `x`; inputs are clamped to [-87.3, 88.3], where the result
/// stays a normal f32.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    // n as an integer, read from the low bits of `shifted` rather than by
    // `as i32`, whose saturation checks keep the loop from vectorising.
    let n_int = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n_int + 127) << 23) as u32)
}

/// The error function (A&S 7.1.26).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_7) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let tail = 1.0 - poly * exp(-a * a);
    // Near 0, 1 - poly·e^(-x²) cancels: there the Maclaurin series (to x¹³,
    // error below 4e-9 for |x| < 0.5) keeps the relative precision.
    let z = a * a;
    let series = a
        * (std::f32::consts::FRAC_2_SQRT_PI
            + z * (-0.376_126_4
                + z * (0.112_837_92
                    + z * (-0.026_866_17
                        + z * (5.223_977_6e-3 + z * (-8.548_327e-4 + z * 1.205_533e-4))))));
    let y = if a < 0.5 { series } else { tail };
    y.copysign(x)
}

/// Exact GELU, `0.5 x (1 + erf(x / √2))`, as torch's default.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `x · sigmoid(x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// Independent accumulators in a reduction: a plain `iter().sum()` is one
/// dependency chain (floats do not reassociate), 4 cycles an element.
const LANES: usize = 16;

/// `Σ f(x)` with [`LANES`] partial sums, which the compiler vectorises.
#[inline(always)]
pub fn sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for chunk in chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a += f(x);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The largest value (-∞ for none), with [`LANES`] partial maxima.
#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for chunk in chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a = a.max(x);
        }
    }
    acc.iter().fold(tail, |m, &x| m.max(x))
}

/// The x86-64 levels the element-wise kernels are also compiled for
/// (`#[multiversion]`): the release build targets plain x86-64 (SSE2).
macro_rules! simd_targets {
    ($($item:tt)*) => {
        #[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
        $($item)*
    };
}
pub(crate) use simd_targets;

/// The sum of `f(x)` in f64, added up in f32 blocks.
#[inline(always)]
pub fn sum_f64(xs: &[f32], f: impl Fn(f32) -> f32 + Copy) -> f64 {
    xs.chunks(1024).map(|block| sum(block, f) as f64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm_to_a_few_ulp() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, exact) = (exp(x), x.exp());
            worst = worst.max(((ours - exact) / exact).abs());
            x += 0.0137;
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37 && exp(1000.0).is_finite());
    }

    #[test]
    fn erf_and_gelu_within_a_and_s_bound() {
        let mut x = -6.0f64;
        while x < 6.0 {
            let exact = libm_erf(x);
            // A&S: 1.5e-7, plus f32 rounding of the coefficients and steps.
            assert!(
                (erf(x as f32) as f64 - exact).abs() < 4e-7,
                "erf({x}): {}",
                erf(x as f32) as f64 - exact
            );
            let gelu_exact = 0.5 * x * (1.0 + libm_erf(x / std::f64::consts::SQRT_2));
            assert!(
                (gelu(x as f32) as f64 - gelu_exact).abs() < 1e-6,
                "gelu({x})"
            );
            x += 0.001;
        }
        assert!((silu(2.0) - 2.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-7);
    }

    #[test]
    fn lane_reductions_equal_plain_ones() {
        for n in [0, 1, 15, 16, 17, 1000] {
            let xs: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 8.0)
                .collect();
            let plain: f64 = xs.iter().map(|&x| x as f64).sum();
            assert!((sum(&xs, |x| x) as f64 - plain).abs() < 1e-3, "sum of {n}");
            assert!((sum_f64(&xs, |x| x) - plain).abs() < 1e-3, "sum_f64 of {n}");
            let m = xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&xs), m, "max of {n}");
        }
    }

    /// erf by its Taylor series (|x| < 3) or continued fraction, in f64.
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let y = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc continued fraction, evaluated from the tail.
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        y.copysign(x)
    }
}
