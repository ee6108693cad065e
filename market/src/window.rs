//! Credit windows: how many bytes this node uploads to a peer ahead of the peer's signed receipt.
//!
//! Owns the curve from standing to window size. Like Swarm's payment threshold, the window is the
//! most a peer that never signs can take from us before we stop serving it; like Swarm's growing
//! credit limit, it widens as the peer earns standing.
//!
//! The curve is geometric by default: `window(s) = floor · (ceiling / floor)^s`, so each equal
//! step of standing multiplies the window by the same factor. With the defaults (4 MiB floor,
//! 64 MiB ceiling, a factor of 16) every quarter of standing doubles the window: 4 MiB at 0,
//! 8 MiB at 0.25, 16 MiB at 0.5, 32 MiB at 0.75, approaching 64 MiB as standing approaches 1.
//! It is continuous and monotone non-decreasing in standing, `floor` at the floor (freeriders and
//! newcomers alike) and never above `ceiling`. [`WindowCurve::Linear`] interpolates linearly
//! instead.

use serde::{Deserialize, Serialize};

/// 1 MiB.
const MIB: u64 = 1 << 20;

/// The shape of the curve between the floor and the ceiling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowCurve {
    /// `floor · (ceiling / floor)^standing`: equal steps of standing multiply the window by equal
    /// factors. Falls back to linear when the floor is 0.
    #[default]
    Geometric,
    /// `floor + (ceiling − floor) · standing`.
    Linear,
}

/// The parameters of [`credit_window`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowParams {
    /// The window at standing 0, in bytes (default 4 MiB).
    pub floor_bytes: u64,
    /// The window approached as standing approaches 1, in bytes (default 64 MiB). A ceiling
    /// below the floor counts as the floor.
    pub ceiling_bytes: u64,
    /// The curve between them (default geometric).
    pub curve: WindowCurve,
}

impl Default for WindowParams {
    fn default() -> Self {
        WindowParams {
            floor_bytes: 4 * MIB,
            ceiling_bytes: 64 * MIB,
            curve: WindowCurve::Geometric,
        }
    }
}

/// The bytes this node uploads to a peer of `standing` ahead of its signed receipt.
///
/// `standing` is clamped to `[0, 1]`: NaN and negative values count as 0 (the floor), values
/// above 1 as 1. The result is in `[floor_bytes, max(floor_bytes, ceiling_bytes)]`, continuous
/// and monotone non-decreasing in `standing`. Never panics.
pub fn credit_window(standing: f64, params: WindowParams) -> u64 {
    let s = clamp_unit(standing);
    let lo = params.floor_bytes;
    let hi = params.ceiling_bytes.max(lo);
    if s <= 0.0 || lo == hi {
        return lo;
    }
    if s >= 1.0 {
        return hi;
    }
    let (lo_f, hi_f) = (lo as f64, hi as f64);
    let window = match params.curve {
        WindowCurve::Geometric if lo > 0 => lo_f * (hi_f / lo_f).powf(s),
        _ => lo_f + (hi_f - lo_f) * s,
    };
    // Rounding is monotone; `as` saturates; the clamp keeps rounding inside the bounds.
    (window.round() as u64).clamp(lo, hi)
}

/// `x` clamped to `[0, 1]`, NaN to 0.
pub(crate) fn clamp_unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_curve_doubles_every_quarter() {
        let p = WindowParams::default();
        assert_eq!(credit_window(0.0, p), 4 * MIB);
        assert_eq!(credit_window(0.25, p), 8 * MIB);
        assert_eq!(credit_window(0.5, p), 16 * MIB);
        assert_eq!(credit_window(0.75, p), 32 * MIB);
        assert_eq!(credit_window(1.0, p), 64 * MIB);
        assert!(credit_window(0.999_999, p) < 64 * MIB);
        assert!(credit_window(0.999_999, p) > 63 * MIB);
    }

    #[test]
    fn out_of_range_standing_is_clamped() {
        let p = WindowParams::default();
        assert_eq!(credit_window(f64::NAN, p), 4 * MIB);
        assert_eq!(credit_window(-3.0, p), 4 * MIB);
        assert_eq!(credit_window(f64::NEG_INFINITY, p), 4 * MIB);
        assert_eq!(credit_window(7.0, p), 64 * MIB);
        assert_eq!(credit_window(f64::INFINITY, p), 64 * MIB);
    }

    #[test]
    fn window_is_monotone_bounded_and_continuous_for_both_curves() {
        for curve in [WindowCurve::Geometric, WindowCurve::Linear] {
            for (floor_bytes, ceiling_bytes) in [(4 * MIB, 64 * MIB), (0, MIB), (1, u64::MAX)] {
                let p = WindowParams {
                    floor_bytes,
                    ceiling_bytes,
                    curve,
                };
                let mut prev = credit_window(0.0, p);
                assert_eq!(prev, floor_bytes);
                let steps = 10_000;
                // The largest jump between neighbouring steps, relative to the range.
                let mut max_jump = 0.0f64;
                for i in 1..=steps {
                    let w = credit_window(f64::from(i) / f64::from(steps), p);
                    assert!(w >= prev, "{curve:?} {p:?} not monotone at step {i}");
                    assert!(w >= floor_bytes && w <= ceiling_bytes);
                    max_jump =
                        max_jump.max((w - prev) as f64 / (ceiling_bytes - floor_bytes) as f64);
                    prev = w;
                }
                assert_eq!(prev, ceiling_bytes);
                // Continuous: no step of 1/10,000 in standing moves the window by more than a
                // small fraction of its range (geometric over 2^64 is the steepest: ≈ 0.45%).
                assert!(max_jump < 0.01, "{curve:?} {p:?} jumps by {max_jump}");
            }
        }
    }

    #[test]
    fn ceiling_below_floor_counts_as_floor() {
        let p = WindowParams {
            floor_bytes: 8 * MIB,
            ceiling_bytes: MIB,
            curve: WindowCurve::Geometric,
        };
        for s in [0.0, 0.3, 1.0] {
            assert_eq!(credit_window(s, p), 8 * MIB);
        }
    }
}
