//! The manifest parser, structure-aware: the input chooses a manifest from
//! the grammar of `cairn.toml` (every section and key the parser knows,
//! values that are valid, at the limits, or just wrong, and now and then
//! an unknown key), written out as TOML text and parsed and used as
//! `manifest` does. Gets past the TOML syntax to the validation of each
//! section and of the references between them.

#![no_main]

#[path = "common/manifest.rs"]
mod common;

use std::fmt::Write;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let text = manifest(&mut u).unwrap_or_default();
    common::parse_and_use(&text);
});

const NAMES: &[&str] = &["a", "b", "c", "mock", "default", "llm", "openai", "x-y", "é", ""];
const DURATIONS: &[&str] = &[
    "0s",
    "1ms",
    "29s",
    "30s",
    "5m",
    "59m",
    "1h",
    "1h30m",
    "1.5s",
    "250us",
    "250µs",
    "90d",
    "10",
    "",
    ".5s",
    "1.2.3s",
    "5 parsecs",
    "213503982d",
    "584942417355d",
    "18446744073709549568s",
    "18446744073709549568s1500s",
    "18446744073709551615ms",
    "99999999999999999999d",
    "0.0000000001us",
];
const SIZES: &[&str] = &[
    "256MiB",
    "1GiB",
    "2GiB",
    "0",
    "4096",
    "1.5KiB",
    "64KB",
    "18446744073709551615",
    "99999999999999999999GiB",
    "1e9",
    "-1",
    "12 bananas",
    "MiB",
];
const STRINGS: &[&str] = &[
    "",
    "auto",
    "disable",
    "redb",
    "postgres://cairn@db:5432/cairn",
    "postgres://cairn:secret@db/cairn",
    "postgresql://db/cairn?password=x",
    "mysql://db",
    "acme/prod",
    "Acme/prod",
    "acme",
    "/",
    "http://localhost:8080/v1/",
    "https://api.openai.com/v1",
    "ftp://x",
    "exponential",
    "linear",
    "fibonacci",
    "immediate",
    "full",
    "equal",
    "none",
    "trap",
    "components/x.wasm",
    "cargo build",
];

/// Appends TOML to a string.
struct Doc<'a, 'b> {
    u: &'a mut Unstructured<'b>,
    out: String,
}

impl Doc<'_, '_> {
    fn pick<T: Copy>(&mut self, from: &[T]) -> Result<T> {
        self.u.choose(from).copied()
    }

    fn maybe(&mut self) -> Result<bool> {
        Ok(self.u.ratio(2, 3)?)
    }

    /// A name: one of a few, so that references meet their targets, or any.
    fn name(&mut self) -> Result<String> {
        if self.u.ratio(7, 8)? { Ok(self.pick(NAMES)?.to_owned()) } else { self.u.arbitrary() }
    }

    fn string(&mut self, from: &[&str]) -> Result<String> {
        let text = if self.u.ratio(7, 8)? { self.pick(from)?.to_owned() } else { self.u.arbitrary()? };
        Ok(quote(&text))
    }

    fn int(&mut self) -> Result<String> {
        Ok(match self.u.int_in_range(0..=3u8)? {
            0 => self.u.arbitrary::<i64>()?.to_string(),
            _ => self
                .pick(&[0i64, 1, 2, 3, -1, 5, 100, 101, 1000, 1001, 4_294_967_295, 4_294_967_296, i64::MAX])?
                .to_string(),
        })
    }

    fn float(&mut self) -> Result<String> {
        Ok(match self.u.int_in_range(0..=3u8)? {
            0 => format!("{:?}", self.u.arbitrary::<f64>()?).replace("NaN", "nan").replace("inf", "inf"),
            _ => self
                .pick(&["0.0", "0.15", "1.0", "1.5", "2.0", "-1.0", "-0.0", "nan", "inf", "-inf", "1e308", "5"])?
                .to_owned(),
        })
    }

    fn duration(&mut self) -> Result<String> {
        if self.u.ratio(1, 8)? { self.int() } else { self.string(DURATIONS) }
    }

    fn size(&mut self) -> Result<String> {
        if self.u.ratio(1, 4)? { self.int() } else { self.string(SIZES) }
    }

    fn names(&mut self) -> Result<String> {
        let count = self.u.int_in_range(0..=3)?;
        let names = (0..count).map(|_| self.name().map(|n| quote(&n))).collect::<Result<Vec<_>>>()?;
        Ok(format!("[{}]", names.join(", ")))
    }

    /// `{ key = value, ... }` of the keys the input keeps, and sometimes one unknown.
    fn inline(&mut self, keys: &[(&str, Kind)]) -> Result<String> {
        let mut parts = Vec::new();
        for (key, kind) in keys {
            if self.maybe()? {
                let value = self.value(*kind)?;
                parts.push(format!("{key} = {value}"));
            }
        }
        if self.u.ratio(1, 16)? {
            parts.push(format!("{} = 1", quote(&self.u.arbitrary::<String>()?)));
        }
        Ok(format!("{{ {} }}", parts.join(", ")))
    }

    fn value(&mut self, kind: Kind) -> Result<String> {
        match kind {
            Kind::Str => self.string(STRINGS),
            Kind::Name => Ok(quote(&self.name()?)),
            Kind::Names => self.names(),
            Kind::Int => self.int(),
            Kind::Float => self.float(),
            Kind::Bool => Ok(self.u.arbitrary::<bool>()?.to_string()),
            Kind::Duration => self.duration(),
            Kind::Size => self.size(),
            Kind::Retries => {
                if self.u.ratio(1, 2)? {
                    self.int()
                } else {
                    self.inline(&[
                        ("count", Kind::Int),
                        ("strategy", Kind::Str),
                        ("base_delay", Kind::Duration),
                        ("max_delay", Kind::Duration),
                        ("jitter", Kind::Str),
                        ("retry_on", Kind::Names),
                    ])
                }
            }
            Kind::Breaker => self.inline(&[
                ("failure_threshold", Kind::Int),
                ("success_threshold", Kind::Int),
                ("timeout", Kind::Duration),
            ]),
            Kind::Cache => match self.u.int_in_range(0..=2u8)? {
                0 => self.string(STRINGS),
                1 => Ok(format!("{{ version = {} }}", self.string(&["1", ""])?)),
                _ => self.inline(&[("version", Kind::Str), ("other", Kind::Str)]),
            },
            Kind::Replicas => {
                if self.u.ratio(1, 2)? {
                    self.int()
                } else {
                    let count = self.u.int_in_range(0..=3)?;
                    let items = (0..count).map(|_| self.int()).collect::<Result<Vec<_>>>()?;
                    Ok(format!("[{}]", items.join(", ")))
                }
            }
            Kind::Build => {
                if self.u.ratio(1, 2)? {
                    self.string(STRINGS)
                } else {
                    self.inline(&[("command", Kind::Str), ("output", Kind::Str)])
                }
            }
            Kind::Secrets => {
                let count = self.u.int_in_range(0..=2)?;
                let mut items = Vec::new();
                for _ in 0..count {
                    items.push(if self.u.ratio(1, 2)? {
                        self.string(STRINGS)?
                    } else {
                        self.inline(&[("key", Kind::Str), ("as_env_var", Kind::Str)])?
                    });
                }
                Ok(format!("[{}]", items.join(", ")))
            }
            Kind::Rules => {
                let count = self.u.int_in_range(0..=2)?;
                let mut items = Vec::new();
                for _ in 0..count {
                    items.push(self.inline(&[
                        ("system_contains", Kind::Str),
                        ("prompt_contains", Kind::Str),
                        ("json", Kind::Bool),
                        ("reply", Kind::Str),
                    ])?);
                }
                Ok(format!("[{}]", items.join(", ")))
            }
        }
    }

    /// `key = value` lines of the keys the input keeps.
    fn lines(&mut self, keys: &[(&str, Kind)]) -> Result<()> {
        for (key, kind) in keys {
            if self.maybe()? {
                let value = self.value(*kind)?;
                let _ = writeln!(self.out, "{key} = {value}");
            }
        }
        if self.u.ratio(1, 16)? {
            let key = quote(&self.u.arbitrary::<String>()?);
            let _ = writeln!(self.out, "{key} = 1");
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Name,
    Names,
    Int,
    Float,
    Bool,
    Duration,
    Size,
    Retries,
    Breaker,
    Cache,
    Replicas,
    Build,
    Secrets,
    Rules,
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn manifest(u: &mut Unstructured) -> Result<String> {
    let mut doc = Doc { u, out: String::new() };
    doc.lines(&[("store", Kind::Str), ("tenant", Kind::Str)])?;
    if doc.maybe()? {
        let retention =
            doc.inline(&[("finished", Kind::Duration), ("failed", Kind::Duration), ("keep_dirs", Kind::Bool)])?;
        let _ = writeln!(doc.out, "retention = {retention}");
    }
    if doc.maybe()? {
        doc.out.push_str("[llm]\n");
        doc.lines(&[("default", Kind::Name)])?;
    }
    for _ in 0..doc.u.int_in_range(0..=3)? {
        let name = quote(&doc.name()?);
        let _ = writeln!(doc.out, "[llm.providers.{name}]");
        let kind = doc.string(&["mock", "openai-compatible", "anthropic"])?;
        let _ = writeln!(doc.out, "kind = {kind}");
        doc.lines(&[
            ("latency", Kind::Duration),
            ("model", Kind::Str),
            ("rules", Kind::Rules),
            ("base_url", Kind::Str),
            ("api_key_secret", Kind::Str),
            ("timeout", Kind::Duration),
            ("max_retries", Kind::Int),
            ("retries", Kind::Retries),
            ("fallback", Kind::Names),
            ("circuit_breaker", Kind::Breaker),
            ("max_tokens", Kind::Int),
        ])?;
        if doc.maybe()? {
            let price = doc.inline(&[("input", Kind::Float), ("output", Kind::Float)])?;
            let _ = writeln!(doc.out, "price = {price}");
        }
    }
    for _ in 0..doc.u.int_in_range(0..=3)? {
        let name = quote(&doc.name()?);
        let _ = writeln!(doc.out, "[environments.{name}]");
        if doc.maybe()? {
            let resources = doc.inline(&[
                ("memory", Kind::Size),
                ("timeout", Kind::Duration),
                ("max_output", Kind::Size),
                ("max_input", Kind::Size),
                ("max_report", Kind::Size),
                ("max_journal", Kind::Size),
                ("max_children", Kind::Int),
                ("max_depth", Kind::Int),
                ("max_descendants", Kind::Int),
                ("max_handles", Kind::Int),
                ("max_open_files", Kind::Int),
                ("max_disk", Kind::Size),
                ("max_files", Kind::Int),
            ])?;
            let _ = writeln!(doc.out, "resources = {resources}");
        }
        if doc.maybe()? {
            let reuse = doc.inline(&[
                ("replicas", Kind::Replicas),
                ("concurrency", Kind::Int),
                ("scaledown_ttl", Kind::Duration),
                ("idle_ttl", Kind::Duration),
                ("queue_timeout", Kind::Duration),
            ])?;
            let _ = writeln!(doc.out, "reuse = {reuse}");
        }
        doc.lines(&[
            ("secrets", Kind::Secrets),
            ("llm", Kind::Name),
            ("cache", Kind::Cache),
            ("depends_on", Kind::Names),
        ])?;
    }
    for _ in 0..doc.u.int_in_range(0..=3)? {
        let name = quote(&doc.name()?);
        let _ = writeln!(doc.out, "[tasks.{name}]");
        let component = doc.string(STRINGS)?;
        let _ = writeln!(doc.out, "component = {component}");
        doc.lines(&[
            ("build", Kind::Build),
            ("environment", Kind::Name),
            ("retries", Kind::Retries),
            ("llm", Kind::Name),
            ("cache", Kind::Cache),
            ("fallback", Kind::Names),
            ("circuit_breaker", Kind::Breaker),
        ])?;
        if doc.u.ratio(1, 16)? {
            doc.out.push_str("resources = { memory = \"1GiB\" }\n");
        }
        if doc.maybe()? {
            let oom = doc.inline(&[("grow", Kind::Float), ("max", Kind::Size)])?;
            let _ = writeln!(doc.out, "on_oom = {oom}");
        }
    }
    for _ in 0..doc.u.int_in_range(0..=2)? {
        let tenant = doc.string(&["acme/prod", "acme/dev", "Acme/prod", "acme"])?;
        let _ = writeln!(doc.out, "[tenants.{tenant}]");
        doc.lines(&[
            ("concurrent_runs", Kind::Int),
            ("tokens_per_run", Kind::Int),
            ("tokens_per_day", Kind::Int),
            ("cost_per_day", Kind::Float),
            ("cost_per_month", Kind::Float),
            ("live_instances", Kind::Int),
            ("memory", Kind::Size),
        ])?;
    }
    Ok(doc.out)
}
