//! How reading a manifest grows with its tasks: `Manifest::parse` of 2,500,
//! 10,000 and 40,000 tasks (each with a component and its default
//! environment), per task, and each size's cost per task as a ratio of the
//! smallest's from the same run. Linear parsing keeps the ratio near 1;
//! quadratic parsing (as placing each task's line by rescanning the text
//! once was) multiplies it by the growth in tasks.
//!
//! Run with `./x bench` (or `cargo bench -p cairn --bench manifest`).

use std::path::Path;
use std::time::Instant;

use cairn::manifest::Manifest;

#[path = "support/measure.rs"]
mod measure;
use measure::{Plan, Series, us_per};

fn manifest(tasks: usize) -> String {
    let mut text = String::from("[environments.default]\n");
    for i in 0..tasks {
        text.push_str(&format!("\n[tasks.task-{i}]\ncomponent = \"task.wasm\"\nretries = 2\n"));
    }
    text
}

fn main() {
    let plan = Plan::new(1, 7);
    println!("manifest: {}", plan.describe());
    let mut smallest: Option<Series> = None;
    for tasks in [2_500usize, 10_000, 40_000] {
        let text = manifest(tasks);
        let mut series = Series::new();
        for round in plan.rounds() {
            let started = Instant::now();
            let parsed = Manifest::parse(Path::new("/bench/cairn.toml"), &text).expect("a valid manifest");
            series.add(round, us_per(started.elapsed(), tasks as u64));
            assert_eq!(parsed.tasks.len(), tasks);
        }
        match &smallest {
            None => println!("   {tasks:>6} tasks, per task  {}", series.show_us()),
            Some(base) => println!("   {tasks:>6} tasks, per task  {}  = {}", series.show_us(), series.ratio(base)),
        }
        smallest.get_or_insert(series);
    }
}
