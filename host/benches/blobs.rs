//! The local blob store against the filesystem operations it is made of, in
//! the same rounds: storing a 128 MiB file by copy (copied and hashed in
//! 1 MiB pieces, then synced) against `std::fs::copy` plus `fsync`; storing
//! it by move (renamed, then read once to hash) against a rename; staging a
//! blob (a hard link) against `std::fs::hard_link`. Then growth: the cost
//! per small blob stored as the store holds 1,000, then 10,000 of them, as a
//! ratio of the first thousand's (a flat cost stays near 1).
//!
//! This is what chose a directory, shared by every host of a deployment,
//! over blobs in PostgreSQL: a file moves into it with a rename and out with
//! a link, and its bytes never pass through any process's memory.
//!
//! Run with `./x bench` (or `cargo bench -p cairn --bench blobs`).

use std::time::Instant;

use cairn::blobs::local::LocalBlobs;
use cairn::blobs::{BlobStore, Put};
use cairn::model::Tenant;
use cap_std::ambient_authority;
use cap_std::fs::Dir;

#[path = "support/measure.rs"]
mod measure;
use measure::{Plan, Series, us_per};

const BIG: usize = 128 << 20;

fn main() {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let root = scratch.path();
    let work_path = root.join("work");
    std::fs::create_dir_all(&work_path).unwrap();
    let work = Dir::open_ambient_dir(&work_path, ambient_authority()).unwrap();
    let blobs = LocalBlobs::open(&root.join("blobs")).unwrap();
    let tenant = Tenant::default();
    let plan = Plan::new(1, 5);
    println!("blobs: {}", plan.describe());

    let (mut copy, mut put_copy, mut rename, mut put_move) =
        (Series::new(), Series::new(), Series::new(), Series::new());
    let (mut link, mut stage) = (Series::new(), Series::new());
    let staged = Dir::open_ambient_dir(root, ambient_authority()).unwrap();
    for (n, round) in plan.rounds().enumerate() {
        // Different bytes each round, so no blob is a duplicate of the last.
        let bytes: Vec<u8> = (0..BIG).map(|i| (i as u64 ^ n as u64).wrapping_mul(31) as u8).collect();
        std::fs::write(work_path.join("big.bin"), &bytes).unwrap();

        let started = Instant::now();
        std::fs::copy(work_path.join("big.bin"), root.join("copy.bin")).unwrap();
        std::fs::File::open(root.join("copy.bin")).unwrap().sync_all().unwrap();
        copy.add(round, us_per(started.elapsed(), 1));
        std::fs::remove_file(root.join("copy.bin")).unwrap();

        let started = Instant::now();
        let stored = blobs.put(&tenant, &work, "big.bin", Put::Copy, u64::MAX).unwrap();
        put_copy.add(round, us_per(started.elapsed(), 1));
        blobs.remove(&tenant, &stored.digest).unwrap();

        let started = Instant::now();
        std::fs::rename(work_path.join("big.bin"), work_path.join("renamed.bin")).unwrap();
        rename.add(round, us_per(started.elapsed(), 1));
        std::fs::rename(work_path.join("renamed.bin"), work_path.join("big.bin")).unwrap();

        let started = Instant::now();
        let stored = blobs.put(&tenant, &work, "big.bin", Put::Move, u64::MAX).unwrap();
        put_move.add(round, us_per(started.elapsed(), 1));

        let started = Instant::now();
        std::fs::hard_link(
            root.join("blobs/default/development/sha256").join(&stored.digest.hex()[..2]).join(stored.digest.hex()),
            root.join("linked.bin"),
        )
        .unwrap();
        link.add(round, us_per(started.elapsed(), 1));
        std::fs::remove_file(root.join("linked.bin")).unwrap();

        let started = Instant::now();
        blobs.stage(&tenant, &stored.digest, &staged, "in/staged.bin").unwrap();
        stage.add(round, us_per(started.elapsed(), 1));
        std::fs::remove_file(root.join("in/staged.bin")).unwrap();
        blobs.remove(&tenant, &stored.digest).unwrap();
    }
    println!(
        "   store 128 MiB by copy     {}  = {} std::fs::copy + fsync ({})",
        put_copy.show_us(),
        put_copy.ratio(&copy),
        copy.show_us()
    );
    println!(
        "   store 128 MiB by move     {}  (a rename: {}; the rest is reading it once to hash it)",
        put_move.show_us(),
        rename.show_us()
    );
    println!(
        "   stage a blob              {}  = {} std::fs::hard_link ({})",
        stage.show_us(),
        stage.ratio(&link),
        link.show_us()
    );

    // Growth: per small blob, as the store fills.
    let mut first: Option<Series> = None;
    let mut held = 0usize;
    let put_small = |label: &str| {
        work.write("small.txt", label).unwrap();
        blobs.put(&tenant, &work, "small.txt", Put::Move, u64::MAX).unwrap();
    };
    for target in [1_000usize, 10_000] {
        while held < target {
            put_small(&format!("fill-{held}"));
            held += 1;
        }
        let mut series = Series::new();
        for (n, round) in Plan::new(0, 3).rounds().enumerate() {
            let batch = 200;
            let started = Instant::now();
            for i in 0..batch {
                put_small(&format!("timed-{target}-{n}-{i}"));
            }
            series.add(round, us_per(started.elapsed(), batch as u64));
            held += batch;
        }
        match &first {
            None => println!("   store a small blob, {target:>6} held  {}", series.show_us()),
            Some(base) => {
                println!("   store a small blob, {target:>6} held  {}  = {}", series.show_us(), series.ratio(base))
            }
        }
        first.get_or_insert(series);
    }
}
