//! The one way every benchmark times things: untimed warm-up rounds, then
//! timed rounds, each path measured once per round (paths interleaved, so the
//! drift of a shared, noisy machine falls on all of them alike), reported as
//! the median of the timed rounds with their spread. Ratios are ratios of
//! medians measured in the same run.
//!
//! `CAIRN_BENCH_WARMUP` and `CAIRN_BENCH_REPS` override every plan's counts.

#![allow(dead_code)] // each bench uses its own part of this

use std::time::Duration;

/// How many rounds a figure is measured over.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Untimed rounds first: code paged in, caches, pools and allocators warm.
    pub warmup: u32,
    /// Timed rounds: the figure is their median.
    pub reps: u32,
}

/// One round of a [`Plan`]: a warm-up round's samples are dropped.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    timed: bool,
}

fn env_count(name: &str) -> Option<u32> {
    std::env::var(name).ok()?.trim().parse().ok()
}

impl Plan {
    /// `warmup` untimed and `reps` timed rounds (at least one), unless the
    /// environment says otherwise.
    pub fn new(warmup: u32, reps: u32) -> Plan {
        Plan {
            warmup: env_count("CAIRN_BENCH_WARMUP").unwrap_or(warmup),
            reps: env_count("CAIRN_BENCH_REPS").unwrap_or(reps).max(1),
        }
    }

    /// The warm-up rounds, then the timed ones.
    pub fn rounds(self) -> impl Iterator<Item = Round> {
        (0..self.warmup + self.reps).map(move |i| Round { timed: i >= self.warmup })
    }

    /// What a figure of this plan is, for a bench's header.
    pub fn describe(self) -> String {
        let spread = if self.reps >= P10_P90_FROM { "p10–p90" } else { "min–max" };
        format!("median of {} timed rounds after {} warm-up, [{spread}]", self.reps, self.warmup)
    }
}

/// From this many samples on, the spread is p10–p90 rather than min–max.
const P10_P90_FROM: u32 = 10;

/// The samples of one figure, one per timed round.
#[derive(Debug, Clone, Default)]
pub struct Series {
    values: Vec<f64>,
}

impl Series {
    /// No samples yet.
    pub fn new() -> Series {
        Series::default()
    }

    /// Keeps `value` if `round` is timed.
    pub fn add(&mut self, round: Round, value: f64) {
        if round.timed {
            self.values.push(value);
        }
    }

    /// Timed samples so far.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    fn sorted(&self) -> Vec<f64> {
        assert!(!self.values.is_empty(), "a figure without timed rounds");
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        sorted
    }

    /// The median of the timed rounds.
    pub fn median(&self) -> f64 {
        quantile(&self.sorted(), 0.5)
    }

    /// (low, high): min–max below ten samples, p10–p90 from ten.
    pub fn spread(&self) -> (f64, f64) {
        let sorted = self.sorted();
        if sorted.len() >= P10_P90_FROM as usize {
            (quantile(&sorted, 0.1), quantile(&sorted, 0.9))
        } else {
            (sorted[0], sorted[sorted.len() - 1])
        }
    }

    /// `median unit [low–high]`.
    pub fn show(&self, unit: &str) -> String {
        let (low, high) = self.spread();
        let sep = if unit.is_empty() { "" } else { " " };
        format!("{}{sep}{unit} [{}–{}]", num(self.median()), num(low), num(high))
    }

    /// The samples as a duration in a readable unit (the samples are µs):
    /// `median unit [low–high]`.
    pub fn show_us(&self) -> String {
        let (low, high) = self.spread();
        let (scale, unit) = match self.median() {
            m if m >= 1e6 => (1e-6, "s"),
            m if m >= 1e3 => (1e-3, "ms"),
            _ => (1.0, "µs"),
        };
        format!("{} {unit} [{}–{}]", num(self.median() * scale), num(low * scale), num(high * scale))
    }

    /// `self / base`, round by round (both measured in the same rounds).
    pub fn per_round(&self, base: &Series, f: impl Fn(f64, f64) -> f64) -> Series {
        assert_eq!(self.values.len(), base.values.len(), "figures of different rounds");
        Series { values: self.values.iter().zip(&base.values).map(|(a, b)| f(*a, *b)).collect() }
    }

    /// The ratio of the medians, `self / base`, with the spread of the
    /// per-round ratios when both were measured in the same rounds:
    /// `1.23 x [1.20–1.31 per round]`.
    pub fn ratio(&self, base: &Series) -> String {
        if self.values.len() != base.values.len() {
            return format!("{} x", num(self.median() / base.median()));
        }
        let per_round = self.per_round(base, |a, b| a / b);
        let (low, high) = per_round.spread();
        format!("{} x [{}–{} per round]", num(self.median() / base.median()), num(low), num(high))
    }
}

/// The `q` quantile of sorted samples, interpolated.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let at = q * (sorted.len() - 1) as f64;
    let (low, high) = (at.floor() as usize, at.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (at - low as f64)
}

/// A figure with three or so significant digits.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 || (v.fract() == 0.0 && a < 1e15) {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// µs per operation of `n` operations that took `elapsed`.
pub fn us_per(elapsed: Duration, n: u64) -> f64 {
    elapsed.as_secs_f64() * 1e6 / n as f64
}

/// Operations per second of `n` operations that took `elapsed`.
pub fn per_second(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// `f` over `plan`'s rounds, one sample per round (a single path; interleave
/// several paths with [`Plan::rounds`] and a [`Series`] each).
pub fn repeat(plan: Plan, mut f: impl FnMut() -> f64) -> Series {
    let mut series = Series::new();
    for round in plan.rounds() {
        series.add(round, f());
    }
    series
}

/// [`repeat`] for async work.
pub async fn repeat_async(plan: Plan, mut f: impl AsyncFnMut() -> f64) -> Series {
    let mut series = Series::new();
    for round in plan.rounds() {
        series.add(round, f().await);
    }
    series
}
