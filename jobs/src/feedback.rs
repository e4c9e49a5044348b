//! Human feedback: Good/Same/Bad verdicts on pairs of outputs, expert
//! ratings, and the GSB statistics the paper reports.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The candidate compared with the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The candidate is better.
    Good,
    Same,
    /// The candidate is worse.
    Bad,
}

/// What a vote judges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Aspect {
    #[default]
    Overall,
    Coherence,
    Structure,
    Aesthetics,
}

macro_rules! names {
    ($t:ty, $what:literal, [$($v:ident => $s:literal),+]) => {
        impl $t {
            pub const ALL: &'static [$t] = &[$(<$t>::$v),+];
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),+ }
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    format!("`{}` must be one of {}; got {}", $what, names.join(", "), byteedit_edit::quote(s))
                })
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names!(Verdict, "verdict", [Good => "good", Same => "same", Bad => "bad"]);
names!(Aspect, "aspect", [Overall => "overall", Coherence => "coherence", Structure => "structure", Aesthetics => "aesthetics"]);

/// An estimate with its 95 % confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// Good / Same / Bad counts and what the paper derives from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GsbStats {
    pub good: u64,
    pub same: u64,
    pub bad: u64,
    /// (G+S)/(S+B): above 1 means the candidate is preferred. `null` without votes.
    pub superiority: Option<Estimate>,
    /// (G+S)/((G+S)+(S+B)). `null` without votes.
    pub win_rate: Option<Estimate>,
}

impl GsbStats {
    /// The statistics of these counts. Intervals are normal (delta-method)
    /// 95 % intervals over the multinomial distribution of the votes.
    pub fn new(good: u64, same: u64, bad: u64) -> Self {
        let n = (good + same + bad) as f64;
        let p = [good as f64 / n, same as f64 / n, bad as f64 / n];
        // Each function with its gradient in (pg, ps, pb).
        let superiority = |[g, s, b]: [f64; 3]| {
            let (a, d) = (g + s, s + b);
            (a / d, [1.0 / d, (d - a) / (d * d), -a / (d * d)])
        };
        let win_rate = |[g, s, b]: [f64; 3]| {
            let (a, d) = (g + s, s + b);
            let t = (a + d) * (a + d);
            (a / (a + d), [d / t, (d - a) / t, -a / t])
        };
        let estimate = |(value, grad): (f64, [f64; 3])| {
            if n == 0.0 || !value.is_finite() {
                return None;
            }
            // Var f = (sum g_i^2 p_i - (sum g_i p_i)^2) / n.
            let mean: f64 = grad.iter().zip(p).map(|(g, p)| g * p).sum();
            let second: f64 = grad.iter().zip(p).map(|(g, p)| g * g * p).sum();
            let half = 1.959964 * ((second - mean * mean).max(0.0) / n).sqrt();
            Some(Estimate {
                value,
                low: (value - half).max(0.0),
                high: value + half,
            })
        };
        Self {
            good,
            same,
            bad,
            superiority: estimate(superiority(p)),
            win_rate: estimate(win_rate(p)).map(|e| Estimate {
                high: e.high.min(1.0),
                ..e
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_example() {
        let s = GsbStats::new(4766, 2679, 4355);
        let sup = s.superiority.unwrap();
        let win = s.win_rate.unwrap();
        assert_eq!(format!("{:.1}", sup.value * 100.0), "105.8");
        assert_eq!(format!("{:.1}", win.value * 100.0), "51.4");
        assert!(sup.low < sup.value && sup.value < sup.high);
        // 11,800 votes: the superiority is known to about +-3 points.
        assert!(
            sup.high - sup.low < 0.07 && sup.high - sup.low > 0.03,
            "{sup:?}"
        );
        assert!(win.high - win.low < 0.02, "{win:?}");
    }

    #[test]
    fn intervals_shrink_with_votes_and_vanish_without() {
        let few = GsbStats::new(4, 2, 3).superiority.unwrap();
        let many = GsbStats::new(400, 200, 300).superiority.unwrap();
        assert!((few.value - many.value).abs() < 1e-12);
        assert!(few.high - few.low > 5.0 * (many.high - many.low));
        assert_eq!(GsbStats::new(0, 0, 0).superiority, None);
        // Only Good votes: superiority is infinite, so no estimate.
        assert_eq!(GsbStats::new(3, 0, 0).superiority, None);
        assert_eq!(GsbStats::new(3, 0, 0).win_rate.unwrap().value, 1.0);
    }

    #[test]
    fn names_parse_and_say_what_is_allowed() {
        assert_eq!("same".parse::<Verdict>(), Ok(Verdict::Same));
        assert!(
            "meh"
                .parse::<Verdict>()
                .unwrap_err()
                .contains("good, same, bad")
        );
        assert_eq!("aesthetics".parse::<Aspect>(), Ok(Aspect::Aesthetics));
    }
}
