//! Command-line parsing and dispatch. `anyhow` lives here only.

mod author;
mod backend;
mod blobs;
mod client;
mod dlq;
mod follow;
mod from_view;
mod output;
mod progress;
mod runs;
mod safe;
mod secret;
mod status;
mod store;
mod tasks;
mod tokens;
mod usage;
mod worker;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use cairn::manifest::Manifest;
use cairn::model::Tenant;
use cairn::runner::Host;

use self::backend::Backend;

/// Cairn runs tasks compiled to WebAssembly components, durably.
#[derive(Parser)]
#[command(name = "cairn", version, about)]
struct Cli {
    /// The project's manifest (default: cairn.toml in this directory or a parent).
    #[arg(long, global = true, env = "CAIRN_MANIFEST")]
    manifest: Option<PathBuf>,
    /// Send commands to this cairn server (default: the project's own, when
    /// `cairn serve` runs for it; else the CLI opens the store itself).
    #[arg(long, global = true, env = client::SERVER_ENV, value_name = "URL")]
    server: Option<String>,
    /// The store: `redb` (the embedded file in .cairn/, the default) or a
    /// PostgreSQL URL, postgres://USER@HOST:PORT/DATABASE, with the password
    /// in CAIRN_STORE_PASSWORD or PGPASSWORD. Overrides the manifest's `store`.
    #[arg(long, global = true, env = "CAIRN_STORE", value_name = "URL")]
    store: Option<String>,
    /// The project to act in (a tenant is a project and a domain); default:
    /// the manifest's `tenant`, else `default` (or, through a server, the
    /// token's own).
    #[arg(long, global = true, env = "CAIRN_PROJECT")]
    project: Option<String>,
    /// The domain to act in, e.g. `production`; default: the manifest's, else `development`.
    #[arg(long, global = true, env = "CAIRN_DOMAIN")]
    domain: Option<String>,
    /// Outbound HTTP destinations any guest of this host may reach
    /// (comma-separated `allowed_outbound_hosts` patterns): every
    /// environment's list is cut down to these. Default: no cut.
    #[arg(long, global = true, env = "CAIRN_OUTBOUND_HOSTS", value_name = "PATTERNS", value_delimiter = ',')]
    outbound_hosts: Option<Vec<String>>,
    /// More logging (-v info, -vv debug). RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make this folder (or DIR) a Cairn project: a cairn.toml on the embedded defaults.
    Init(author::InitArgs),
    /// Add a task to the project: its source with the SDK wired up, its build
    /// command, its manifest entry and its cassette folder.
    New(author::NewArgs),
    /// Replay each task's recorded runs (cassettes) offline and check their outputs.
    Test(author::TestArgs),
    /// Run each task's build command and turn core modules into components.
    Build {
        /// Build only this task.
        task: Option<String>,
    },
    /// Run a task to completion and print its output.
    Run {
        /// The task's name in the manifest.
        task: String,
        /// The input, a JSON document.
        #[arg(long, conflicts_with = "input_file")]
        input: Option<String>,
        /// Read the input from this file (`-` for stdin).
        #[arg(long)]
        input_file: Option<PathBuf>,
        /// Print one JSON object (run id, status, output, attempts, timings, LLM usage).
        #[arg(long)]
        json: bool,
        /// Replay this run's journal (a cassette): recorded answers only, live LLM calls and
        /// requests are an error. Without --input, the run's own input.
        #[arg(long, value_name = "RUN")]
        replay: Option<String>,
        /// Show no progress for a run with children (progress goes to stderr:
        /// a live line on a terminal, plain lines otherwise).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Inspect runs.
    Runs {
        #[command(subcommand)]
        command: runs::RunsCommand,
    },
    /// Print or save a run's HTML report.
    Report {
        /// The run id.
        run: String,
        /// Write the HTML to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// The manifest's tasks and their interfaces (input and output schemas).
    Tasks {
        #[command(subcommand)]
        command: tasks::TasksCommand,
    },
    /// Files runs pass by reference: list, read and store blobs.
    Blobs {
        #[command(subcommand)]
        command: blobs::BlobsCommand,
    },
    /// The dead-letter queue: runs whose retries and fallbacks were all spent.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Circuit breakers, the dead-letter queue, and retry counts per task.
    Status {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Manage the result cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Delete finished runs older than a cutoff (journal, logs, report, directory).
    Gc {
        /// Age cutoff, e.g. 30d, 12h.
        #[arg(long, value_name = "AGE")]
        older_than: String,
        /// Only list what would go.
        #[arg(long)]
        dry_run: bool,
    },
    /// Tools for testing and measuring the host itself.
    #[command(hide = true)]
    Debug {
        #[command(subcommand)]
        command: DebugCommand,
    },
    /// Manage secrets (values are never printed).
    Secret {
        #[command(subcommand)]
        command: secret::SecretCommand,
    },
    /// What the tenant's LLM calls used and cost (calls under a price or a quota).
    Usage {
        /// How far back, e.g. 7d, 24h.
        #[arg(long, default_value = "7d", value_name = "AGE")]
        since: String,
        /// Group by task, provider, model or day (default: one total).
        #[arg(long)]
        by: Option<String>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The tenant's quotas: concurrent runs, LLM tokens and cost.
    Quota {
        #[command(subcommand)]
        command: usage::QuotaCommand,
    },
    /// API tokens of a tenant: each acts as its tenant with one role.
    Tokens {
        #[command(subcommand)]
        command: tokens::TokensCommand,
    },
    /// Serve the project: one long-running host with an HTTP API, live event
    /// streams, metrics and a dashboard. Other commands go through it.
    Serve {
        /// Where to listen (loopback by default; 127.0.0.1:0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: std::net::SocketAddr,
        /// How long runs under way may go on after SIGTERM or SIGINT before
        /// they are stopped (saved to resume later).
        #[arg(long, default_value = "30s", value_name = "DURATION")]
        grace: String,
        /// Send spans (a span per run, attempt and host import) to this
        /// OpenTelemetry collector, over OTLP/HTTP with JSON (http://HOST:PORT).
        #[arg(long, value_name = "URL")]
        otlp: Option<String>,
        /// Only serve: queue submitted runs for `cairn worker`s to claim,
        /// and work on none here.
        #[arg(long)]
        no_work: bool,
        #[command(flatten)]
        work: WorkArgs,
    },
    /// Work on the store's runs with no API: claim runnable runs (new,
    /// released, or left by a host whose lease expired) and run them. Start
    /// any number, on any number of machines sharing a PostgreSQL store.
    Worker {
        #[command(flatten)]
        work: WorkArgs,
        /// How long runs under way may go on after SIGTERM or SIGINT before
        /// they are stopped (saved, and released to the other workers).
        #[arg(long, default_value = "30s", value_name = "DURATION")]
        grace: String,
    },
    /// Maintain the store: `repair` a damaged journal log.
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
}

/// How a host works on the store's runs.
#[derive(clap::Args)]
struct WorkArgs {
    /// Most runs worked on at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long this host's leases last without a heartbeat (renewed every
    /// third of it): how soon other hosts take over its runs if it dies.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    lease: String,
}

impl WorkArgs {
    fn options(&self, kind: &'static str) -> Result<(cairn::runner::worker::WorkOptions, std::time::Duration)> {
        let lease = cairn::manifest::units::parse_duration(&self.lease).map_err(anyhow::Error::msg)?;
        if lease < std::time::Duration::from_secs(1) {
            bail!("--lease must be at least 1s (it is renewed every third of it)");
        }
        if self.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        let options = cairn::runner::worker::WorkOptions { concurrency: self.concurrency, kind, ..Default::default() };
        Ok((options, lease))
    }
}

#[derive(Subcommand)]
enum DebugCommand {
    /// Journal records from many concurrent runs into a store file, printing
    /// `ack RUN OCCURRENCE` as each becomes durable.
    JournalLoad {
        /// The redb file.
        #[arg(long = "db", value_name = "FILE")]
        db: PathBuf,
        /// Concurrent runs.
        #[arg(long, default_value_t = 1000)]
        runs: usize,
        /// Records per run.
        #[arg(long, default_value_t = 10)]
        calls: usize,
        /// Bytes per record's output.
        #[arg(long, default_value_t = 256)]
        payload: usize,
        /// Print an ack line per durable record.
        #[arg(long)]
        print_acks: bool,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Drop cached results, of one task or all.
    Clear {
        /// Only this task's results.
        task: Option<String>,
    },
}

/// Raises the process's soft limit on open descriptors to its hard limit
/// (at most the kernel's `fs.nr_open`): every instance may hold its
/// environment's `resources.max_open_files`, and the host needs its own
/// besides (README: Sandbox and limits).
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let kernel = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|n| n.trim().parse().ok());
    let wanted = kernel.map_or(limit.rlim_max, |most: libc::rlim_t| limit.rlim_max.min(most));
    if limit.rlim_cur >= wanted {
        return;
    }
    let raised = libc::rlimit { rlim_cur: wanted, rlim_max: limit.rlim_max };
    // SAFETY: setrlimit only reads the struct passed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        tracing::warn!(
            "cannot raise the open-descriptor limit from {} to {wanted}: {}; guests' open files count against the lower one",
            limit.rlim_cur,
            std::io::Error::last_os_error()
        );
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let otlp = match &cli.command {
        Command::Serve { otlp: Some(url), .. } => match cairn::otlp::layer(url) {
            Ok(layer) => Some(layer),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let flusher = otlp.as_ref().map(cairn::otlp::OtlpLayer::flusher);
    init_logging(cli.verbose, otlp);
    raise_descriptor_limit();
    let outcome = dispatch(cli);
    if let Some(flusher) = flusher {
        flusher.flush(std::time::Duration::from_secs(5));
    }
    match outcome {
        Ok(code) => code,
        Err(err) => {
            if let Some(detached) = err.downcast_ref::<follow::Detached>() {
                eprintln!("\n{detached}");
                return ExitCode::from(130);
            }
            eprintln!("error: {}", safe::text(&format!("{err:#}")));
            ExitCode::from(2)
        }
    }
}

/// Logs to stderr at the level `-v` asks for; with `otlp`, the host's spans
/// (run, attempt, host import, request) also go to the collector, whatever
/// the log level.
fn init_logging(verbose: u8, otlp: Option<cairn::otlp::OtlpLayer>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},cranelift=warn,wasmtime=warn")));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter);
    let spans = otlp.map(|layer| layer.with_filter(tracing_subscriber::filter::LevelFilter::INFO));
    tracing_subscriber::registry().with(logs).with(spans).init();
}

/// What the command line says about the tenant: `--project` and `--domain`.
#[derive(Clone, Copy)]
struct TenantFlags<'a> {
    project: Option<&'a str>,
    domain: Option<&'a str>,
}

impl TenantFlags<'_> {
    /// The tenant named by the flags over `named` (the manifest's), if either names one.
    fn over(&self, named: Option<&Tenant>) -> Result<Option<Tenant>> {
        if self.project.is_none() && self.domain.is_none() {
            return Ok(named.cloned());
        }
        let fallback = named.cloned().unwrap_or_default();
        let project = self.project.unwrap_or(&fallback.project);
        let domain = self.domain.unwrap_or(&fallback.domain);
        Tenant::new(project, domain).context("--project/--domain (or CAIRN_PROJECT/CAIRN_DOMAIN)").map(Some)
    }
}

/// What the command line sets on the manifest: its store, the tenant and
/// the operator's outbound destinations.
#[derive(Clone, Copy)]
struct Overrides<'a> {
    store: Option<&'a str>,
    tenant: TenantFlags<'a>,
    outbound: Option<&'a [String]>,
}

fn load_manifest(path: Option<PathBuf>, overrides: Overrides<'_>) -> Result<Manifest> {
    let Overrides { store, tenant, outbound } = overrides;
    let path = match path {
        Some(path) => path,
        None => Manifest::discover(&std::env::current_dir()?)?,
    };
    let mut manifest = Manifest::load(&path)?;
    if let Some(url) = store {
        manifest.set_store(url).map_err(anyhow::Error::msg)?;
    }
    manifest.tenant = tenant.over(manifest.tenant.as_ref())?;
    if let Some(patterns) = outbound {
        let list = cairn::sandbox::outbound::AllowList::parse(patterns)
            .context("--outbound-hosts (or CAIRN_OUTBOUND_HOSTS)")?;
        manifest.operator_outbound = Some(std::sync::Arc::new(list));
    }
    Ok(manifest)
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    // These work on the project's files themselves, server or not.
    let store = cli.store.as_deref();
    let flags = TenantFlags { project: cli.project.as_deref(), domain: cli.domain.as_deref() };
    let overrides = Overrides { store, tenant: flags, outbound: cli.outbound_hosts.as_deref() };
    let command = match cli.command {
        Command::Debug { command } => return debug(command),
        Command::Init(args) => return author::init(&args),
        Command::New(args) => return author::new(cli.manifest, &args),
        Command::Test(args) if args.add.is_none() => {
            return author::test(&load_manifest(cli.manifest, overrides)?, args.task.as_deref());
        }
        Command::Build { task } => return author::build(&load_manifest(cli.manifest, overrides)?, task.as_deref()),
        Command::Serve { listen, grace, no_work, work, .. } => {
            return serve(load_manifest(cli.manifest, overrides)?, listen, &grace, (!no_work).then_some(&work));
        }
        Command::Worker { work, grace } => {
            return worker::run(load_manifest(cli.manifest, overrides)?, &work, &grace);
        }
        Command::Store { command } => return store::dispatch(&load_manifest(cli.manifest, overrides)?, command),
        command => command,
    };
    let manifest = load_manifest(cli.manifest, overrides);
    let tenant = match &manifest {
        Ok(manifest) => manifest.tenant.clone(),
        Err(_) => flags.over(None)?,
    };
    let project = matches!(command, Command::Test(_)).then(|| manifest.as_ref().ok().cloned()).flatten();
    let backend = Backend::open(manifest, cli.server.as_deref(), tenant)?;
    match command {
        Command::Run { task, input, input_file, json, replay, quiet } => {
            let input = match (input, input_file) {
                (Some(input), _) => input,
                (None, Some(path)) if path.as_os_str() == "-" => {
                    let mut text = String::new();
                    std::io::stdin().read_to_string(&mut text)?;
                    text
                }
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read input file {}", path.display()))?,
                // A replay runs on the recorded run's input unless told otherwise.
                (None, None) => match &replay {
                    Some(source) => backend.run(source)?.record.input,
                    None => bail!("give the task's input with --input JSON or --input-file PATH"),
                },
            };
            let style = progress::Style::detect(quiet || json);
            backend
                .start_run(&task, &input, replay, style, &|run, children| output::print_finished(run, children, json))
        }
        Command::Runs { command } => runs::dispatch(&backend, command),
        Command::Report { run, output } => {
            let report = backend.report(&run)?;
            let html = output::report_html(&run, &report);
            match output {
                Some(path) => {
                    std::fs::write(&path, html).with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{html}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache { command: CacheCommand::Clear { task } } => {
            let removed = backend.clear_cache(task.as_deref())?;
            eprintln!("removed {removed} cached result(s)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc { older_than, dry_run } => {
            let age = cairn::manifest::units::parse_duration(&older_than).map_err(anyhow::Error::msg)?;
            let report = backend.gc(&older_than, age, dry_run)?;
            for id in &report.removed {
                println!("{id}");
            }
            eprintln!(
                "{} {} finished run(s) older than {older_than}; kept {} newer one(s)",
                if dry_run { "would remove" } else { "removed" },
                report.removed.len(),
                report.kept
            );
            for failed in &report.failed {
                eprintln!("kept run {failed}");
            }
            let blobs = &report.blobs;
            eprintln!(
                "{} {} blob(s) no remaining run refers to ({}); kept {}",
                if dry_run { "would remove" } else { "removed" },
                blobs.removed,
                cairn::config::units::show_size(blobs.bytes),
                blobs.kept
            );
            Ok(if report.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Secret { command } => secret::dispatch(&backend, command),
        Command::Tokens { command } => tokens::dispatch(&backend, command),
        Command::Usage { since, by, json } => usage::usage(&backend, &since, by.as_deref(), json),
        Command::Quota { command } => usage::quota(&backend, command),
        Command::Dlq { command } => dlq::dispatch(&backend, command),
        Command::Blobs { command } => blobs::dispatch(&backend, command),
        Command::Tasks { command } => tasks::dispatch(&backend, command),
        Command::Status { json } => status::show(&backend, json),
        Command::Test(args) => author::add(&backend, project.as_ref(), args.add.as_deref().unwrap_or_default()),
        Command::Debug { .. }
        | Command::Init(_)
        | Command::New(_)
        | Command::Build { .. }
        | Command::Serve { .. }
        | Command::Worker { .. }
        | Command::Store { .. } => {
            unreachable!("handled before a server is looked for")
        }
    }
}

fn serve(manifest: Manifest, listen: std::net::SocketAddr, grace: &str, work: Option<&WorkArgs>) -> Result<ExitCode> {
    let grace = cairn::manifest::units::parse_duration(grace).map_err(anyhow::Error::msg)?;
    let work = work.map(|w| w.options("serve")).transpose()?;
    runtime()?.block_on(async {
        let host = Host::open(manifest)?;
        let work = match work {
            Some((options, lease)) => {
                host.set_lease(lease);
                Some(options)
            }
            None => {
                host.set_queue_only(true);
                None
            }
        };
        let options = cairn::server::ServeOptions { listen, grace, work };
        cairn::server::serve(host, options, |info| {
            eprintln!("cairn serve: listening on {}", info.url);
            eprintln!("the API's bearer token is in {} (readable by you only)", info.token_file.display());
            eprintln!("dashboard: {}/ (it asks for the token)", info.url);
        })
        .await?;
        eprintln!("cairn serve: stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn debug(command: DebugCommand) -> Result<ExitCode> {
    match command {
        DebugCommand::JournalLoad { db, runs, calls, payload, print_acks } => {
            let redb = std::sync::Arc::new(cairn::store::redb::RedbStore::open(&db)?);
            let on_ack: Option<cairn::journal::load::AckFn> = print_acks.then(|| {
                let ack: cairn::journal::load::AckFn = std::sync::Arc::new(|key: &cairn::model::ReplayKey| {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ack {} {}", key.run_id, key.input_hash);
                    let _ = out.flush();
                });
                ack
            });
            let report =
                runtime()?.block_on(cairn::journal::load::journal_load(redb.clone(), runs, calls, payload, on_ack))?;
            let (commits, writes, largest) = redb.commit_stats().snapshot();
            eprintln!(
                "{} records in {:.3}s: {:.0} records/s, {commits} commits (fsyncs), {:.1} writes per commit, largest batch {largest}",
                report.records,
                report.elapsed.as_secs_f64(),
                report.records as f64 / report.elapsed.as_secs_f64(),
                writes as f64 / commits.max(1) as f64
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
