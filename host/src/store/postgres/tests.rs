//! The store on a real PostgreSQL server: the conformance suite, the schema's
//! migrations, and the URL rules.

use super::testing::{fresh_database, fresh_store};
use super::{PgStore, schema};
use crate::store::StoreError;

mod conformance {
    crate::store::conformance::conformance_suite!({
        let store = super::fresh_store();
        crate::store::conformance::Subject { store: std::sync::Arc::new(store), _keep: Box::new(()) }
    });
}

#[test]
fn migrations_apply_once_and_a_newer_schema_is_refused() {
    let url = fresh_database();
    let first = PgStore::connect(&url, true).unwrap();
    drop(first);
    // Opening again applies nothing and works.
    let again = PgStore::connect(&url, true).unwrap();
    let version = again
        .read("schema version", |client| async move {
            let row = client.query_one("SELECT max(version), count(*) FROM cairn_schema", &[]).await?;
            Ok((row.get::<_, Option<i32>>(0), row.get::<_, i64>(1)))
        })
        .unwrap();
    assert_eq!(version, (Some(schema::current_version()), schema::MIGRATIONS.len() as i64));
    again
        .read("fake a newer schema", |client| async move {
            client.execute("INSERT INTO cairn_schema VALUES (999, 'future', 0)", &[]).await?;
            Ok(())
        })
        .unwrap();
    drop(again);
    let err = PgStore::connect(&url, true).err().expect("a newer schema is refused");
    assert!(matches!(err, StoreError::NewerSchema { found: 999, .. }), "{err}");
}

#[test]
fn hosts_opening_a_new_database_together_migrate_it_once() {
    let url = fresh_database();
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgStore::connect(&url, true).map(drop))
        })
        .collect();
    for open in opened {
        open.join().unwrap().unwrap();
    }
}

#[test]
fn a_password_in_the_manifest_url_is_refused_and_never_shown() {
    let err = PgStore::connect("postgres://cairn:hunter2@127.0.0.1:1/db", false).err().unwrap();
    let text = err.to_string();
    assert!(text.contains("CAIRN_STORE_PASSWORD"), "{text}");
    assert!(!text.contains("hunter2"), "the password leaked: {text}");
    let err = PgStore::connect("mysql://x", true).err().unwrap();
    assert!(err.to_string().contains("postgres://USER@HOST:PORT/DATABASE"), "{err}");
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    // Nothing listens on port 1. The open fails after the retries, naming the server.
    let started = std::time::Instant::now();
    let err =
        PgStore::connect_with_patience("postgres://cairn@127.0.0.1:1/db", true, std::time::Duration::from_secs(1))
            .err()
            .unwrap();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("127.0.0.1:1/db"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}
