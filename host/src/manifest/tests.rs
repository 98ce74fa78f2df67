use std::path::Path;
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    Manifest::parse(Path::new("/p/cairn.toml"), text)
}

fn error_of(text: &str) -> (usize, String) {
    match parse(text) {
        Err(ManifestError::Invalid { line, message, path, .. }) => {
            assert_eq!(path, Path::new("/p/cairn.toml"));
            (line, message)
        }
        other => panic!("expected an invalid-manifest error, got {other:?}"),
    }
}

#[test]
fn full_manifest_parses_with_defaults() {
    let manifest = parse(
        r#"
[llm]
default = "local"

[llm.providers.local]
kind = "openai-compatible"
base_url = "http://127.0.0.1:8080/v1/"
model = "llama"
api_key_secret = "key"
retries = { count = 1, strategy = "linear", retry_on = ["llm-rate-limited"] }
fallback = ["mock"]

[environments.llm]
resources = { memory = "64MiB", timeout = "90s" }
secrets = ["a", { key = "b", as_env_var = "B" }]

[tasks.one]
component = "c/one.wasm"
environment = "llm"
build = "make one"
retries = 2

[tasks.two]
component = "two.wasm"
llm = "mock"
cache = { version = "v2" }
"#,
    )
    .unwrap();
    let one = manifest.task("one").unwrap();
    assert_eq!(one.component, Path::new("/p/c/one.wasm"));
    assert_eq!(one.component_line, 18);
    assert_eq!(one.retry, crate::policy::retry::RetryPolicy::count(2));
    assert_eq!(one.build.as_ref().unwrap().output, Path::new("/p/c/one.wasm"));
    let env = manifest.environment_of(one);
    assert_eq!(env.resources.memory, 64 << 20);
    assert_eq!(env.resources.timeout, Duration::from_secs(90));
    assert_eq!(env.resources.max_output, Resources::default().max_output);
    assert_eq!(env.secrets[1].as_env_var.as_deref(), Some("B"));
    assert_eq!(manifest.provider_of(one).name, "local");
    match &manifest.provider_of(one).kind {
        ProviderKind::OpenAiCompatible { base_url, .. } => assert_eq!(base_url, "http://127.0.0.1:8080/v1"),
        other => panic!("{other:?}"),
    }
    let local = manifest.provider_of(one);
    assert_eq!(local.fallback, ["mock"]);
    let retry = local.retry.as_ref().unwrap();
    assert_eq!((retry.count, retry.strategy), (1, crate::policy::retry::Strategy::Linear));
    let two = manifest.task("two").unwrap();
    assert_eq!(two.environment, DEFAULT_ENVIRONMENT);
    assert_eq!(manifest.provider_of(two).name, "mock");
    assert_eq!(manifest.cache_of(two), &CachePolicy::Version("v2".into()));
    assert_eq!(manifest.cache_of(one), &CachePolicy::Disable);
    assert!(manifest.task("three").unwrap_err().contains("known tasks: one, two"));
}

#[test]
fn errors_name_line_and_key() {
    let (line, message) = error_of("[tasks.a]\ncomponent = \"a.wasm\"\nretries = -1\n");
    assert_eq!(line, 3);
    assert!(message.contains("between 0 and 100"), "{message}");

    let (line, message) = error_of("\n[environments.e]\nresources = { timeout = \"soon\" }\n");
    assert_eq!(line, 3);
    assert!(message.contains("invalid duration"), "{message}");

    let (line, message) = error_of("[tasks.a]\ncomponent = \"a.wasm\"\nllm = \"gpt\"\n");
    assert_eq!(line, 3);
    assert!(message.contains("llm provider \"gpt\"") && message.contains("defined providers: mock"), "{message}");

    let (line, message) = error_of("[tasks.a]\n");
    assert_eq!(line, 1);
    assert!(message.contains("missing field `component`"), "{message}");

    let (line, message) = error_of("[environments.e]\ncache = \"sometimes\"\n");
    assert_eq!(line, 2);
    assert!(message.contains("cache must be \"auto\""), "{message}");

    let (line, message) = error_of("[environments.e]\nreuse = { replicas = 2, idle_ttl = \"5s\" }\n");
    assert_eq!(line, 2);
    assert!(message.contains("environment \"e\": reuse: idle_ttl") && message.contains("at least 30s"), "{message}");

    let (line, message) = error_of("[environments.e]\ndepends_on = [\"ghost\"]\n");
    assert_eq!(line, 2);
    assert!(message.contains("names environment \"ghost\", which is not defined"), "{message}");

    let (line, message) = error_of(
        "[environments.a]\ndepends_on = [\"b\"]\n[environments.b]\ndepends_on = [\"c\"]\n[environments.c]\ndepends_on = [\"a\"]\n",
    );
    assert_eq!(line, 1);
    assert!(message.contains("cycle (a -> b -> c -> a)"), "{message}");

    let (_, message) = error_of("[llm.providers.x]\nkind = \"smoke-signals\"\n");
    assert!(message.contains("smoke-signals"), "{message}");
}

#[test]
fn display_shows_the_offending_line() {
    let err = parse("[tasks.a]\ncomponent = \"a.wasm\"\nflavour = 1\n").unwrap_err().to_string();
    assert!(err.starts_with("/p/cairn.toml:3:1: unknown field `flavour`"), "{err}");
    assert!(err.contains("flavour = 1"), "{err}");
}

#[test]
fn environments_carry_reuse_and_their_dependencies() {
    let manifest = parse(
        r#"
[environments.llm]
reuse = { replicas = [1, 2], concurrency = 4, scaledown_ttl = "5m", idle_ttl = "30m" }

[environments.driver]
depends_on = ["llm"]

[tasks.refine]
component = "r.wasm"
environment = "llm"

[tasks.drive]
component = "d.wasm"
environment = "driver"
"#,
    )
    .unwrap();
    let llm = &manifest.environments["llm"];
    let reuse = llm.reuse.expect("reuse is parsed");
    assert_eq!((reuse.min_replicas, reuse.max_replicas, reuse.concurrency), (1, 2, 4));
    assert_eq!(reuse.idle_ttl, Duration::from_secs(1800));
    assert_eq!(manifest.environments["driver"].reuse, None);
    assert_eq!(manifest.environment_closure("driver"), ["llm", "driver"]);
    assert_eq!(manifest.tasks_in("llm").map(|t| t.name.as_str()).collect::<Vec<_>>(), ["refine"]);
}

#[test]
fn retention_has_defaults_and_refuses_ages_under_an_hour() {
    let defaults = parse("").unwrap().retention;
    assert_eq!(defaults, Retention::default());
    assert_eq!(defaults.finished, Duration::from_secs(30 * 24 * 3600));
    assert_eq!(defaults.failed, Duration::from_secs(90 * 24 * 3600));
    assert!(!defaults.keep_dirs);
    let set = parse("retention = { finished = \"2d\", keep_dirs = true }\n").unwrap().retention;
    assert_eq!(set, Retention { finished: Duration::from_secs(2 * 24 * 3600), keep_dirs: true, ..defaults });
    let (line, message) = error_of("\n\nretention = { failed = \"10m\" }\n");
    assert_eq!(line, 3);
    assert!(message.contains("retention.failed") && message.contains("1h"), "{message}");
    let (line, message) = error_of("retention = { finshed = \"2d\" }\n");
    assert_eq!(line, 1);
    assert!(message.contains("finshed"), "{message}");
}

#[test]
fn the_store_is_redb_or_a_postgres_url_without_a_password() {
    assert_eq!(parse("").unwrap().store, None);
    assert_eq!(parse("store = \"redb\"").unwrap().store, None);
    let shared = parse("store = \"postgres://cairn@db:5432/cairn\"").unwrap().store.unwrap();
    assert_eq!(shared, StoreSetting { url: "postgres://cairn@db:5432/cairn".into(), from_file: true });
    let (line, message) = error_of("\nstore = \"postgres://cairn:hunter2@db/cairn\"");
    assert_eq!(line, 2);
    assert!(message.contains("CAIRN_STORE_PASSWORD") && !message.contains("hunter2"), "{message}");
    let (_, message) = error_of("store = \"mysql://db\"");
    assert!(message.contains("postgres://"), "{message}");
    let mut manifest = parse("").unwrap();
    assert!(manifest.set_store("sqlite://x").is_err());
    manifest.set_store("postgres://cairn:pw@db/cairn").unwrap();
    assert!(!manifest.store.as_ref().unwrap().from_file, "a URL from the flag or the environment may carry one");
    manifest.set_store("redb").unwrap();
    assert_eq!(manifest.store, None);
}

#[test]
fn tenant_instance_quotas_are_read_and_zero_refused() {
    let manifest = parse(
        r#"
        [tenants."acme/prod"]
        live_instances = 8
        memory = "2GiB"
        "#,
    )
    .unwrap();
    let quotas = &manifest.quotas[&"acme/prod".parse().unwrap()];
    assert_eq!((quotas.live_instances, quotas.memory_bytes), (Some(8), Some(2 << 30)));
    for (quota, says) in [("live_instances = 0", "at least 1"), ("memory = \"lots\"", "invalid size")] {
        let error = parse(&format!("[tenants.\"acme/prod\"]\n{quota}\n")).unwrap_err().to_string();
        assert!(error.contains(says), "{quota}: {error}");
    }
}

#[test]
fn hostile_limits_parse_and_a_growth_that_is_not_a_number_is_refused() {
    let manifest = parse(
        r#"
[environments.tight]
resources = { max_handles = 64, max_open_files = 8, max_disk = "16MiB", max_files = 100 }

[tasks.t]
component = "t.wasm"
environment = "tight"
"#,
    )
    .unwrap();
    let tight = &manifest.environments["tight"].resources;
    assert_eq!((tight.max_handles, tight.max_open_files, tight.max_disk, tight.max_files), (64, 8, 16 << 20, 100));
    let defaults = &manifest.environments["default"].resources;
    assert_eq!((defaults.max_handles, defaults.max_open_files, defaults.max_files), (16_384, 256, 10_000));
    let (line, message) = error_of("[tasks.t]\ncomponent = \"t.wasm\"\non_oom = { grow = nan, max = \"1GiB\" }\n");
    assert_eq!(line, 3);
    assert!(message.contains("more than 1.0"), "{message}");
}

#[test]
fn outbound_hosts_limits_and_bound_secrets_parse_and_bad_ones_are_named() {
    let manifest = parse(
        r#"
[environments.web]
allowed_outbound_hosts = ["https://api.example.com", "http://127.0.0.1:8080"]
secrets = ["plain", { key = "bound", hosts = ["https://api.example.com"] }]
resources = { max_http_request = "1MiB", max_http_response = "2MiB", http_timeout = "5s" }

[tasks.t]
component = "t.wasm"
environment = "web"
"#,
    )
    .unwrap();
    let web = &manifest.environments["web"];
    assert_eq!(web.outbound.describe(), "https://api.example.com, http://127.0.0.1:8080");
    let r = &web.resources;
    assert_eq!((r.max_http_request, r.max_http_response, r.http_timeout), (1 << 20, 2 << 20, Duration::from_secs(5)));
    assert!(web.secrets[0].hosts.is_none());
    assert_eq!(web.secrets[1].hosts.as_ref().unwrap().describe(), "https://api.example.com");
    assert!(manifest.environments["default"].outbound.is_empty(), "off by default");
    for (setting, says) in [
        ("allowed_outbound_hosts = [\"api.example.com\"]", "no scheme"),
        ("allowed_outbound_hosts = [\"https://api.example.com/v1\"]", "never a path"),
        ("secrets = [{ key = \"k\", hosts = [\"https://a.com\"], as_env_var = \"K\" }]", "cannot also be `as_env_var`"),
        ("secrets = [{ key = \"k\", hosts = [\"a.com\"] }]", "secret \"k\": hosts"),
        ("secrets = [\"k\", { key = \"k\", hosts = [\"https://a.com\"] }]", "listed twice"),
    ] {
        let error = parse(&format!("[environments.web]\n{setting}\n")).unwrap_err().to_string();
        assert!(error.contains(says), "{setting}: {error}");
    }
}
