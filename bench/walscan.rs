//! What archive-push's restore-point scan costs, against what it already pays for the same
//! segment: zstd level 3 (the default compress-level). Ratios, not seconds: the machines are
//! noisy, and both are measured here, on the same bytes, in the same run.
//!
//!   WAL_SEGMENTS=/path/pg_wal/000000010000000000000005,... cargo bench --bench walscan
//!
//! Segments of a real cluster: initdb, `pgbench -i -s 5`, `pgbench -T 10`, then copy the full
//! segments out of pg_wal (bench/README.md).

fn main() {
    // `cargo bench` passes --bench. Without it `cargo test --all-targets` started us, in an
    // unoptimised build, usually with no WAL at hand: scan a synthetic segment so the code path
    // still runs and a scan that finds nothing fails, but measure nothing.
    let benching = std::env::args().any(|a| a == "--bench");
    let list = match std::env::var("WAL_SEGMENTS") {
        Ok(l) => l,
        Err(_) if !benching => return smoke(),
        Err(_) => {
            eprintln!(
                "walscan: set WAL_SEGMENTS to a comma-separated list of 16 MiB WAL segment files (see bench/README.md)"
            );
            std::process::exit(2);
        }
    };
    println!("segment                   records  scan ms  zstd-3 ms  scan/zstd");
    for f in list.split(',') {
        let b = std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        let name = std::path::Path::new(f)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        let file = pgfrost::pg::wal::WalFile::parse(name)
            .unwrap_or_else(|| panic!("{name} is not a segment name"));
        let start = file.segno(b.len() as u64).unwrap() * b.len() as u64;
        let rounds = 50;
        let t = std::time::Instant::now();
        let mut scan = Default::default();
        for _ in 0..rounds {
            scan = std::hint::black_box(pgfrost::pg::walrec::scan_segment(&b, start, None));
        }
        let s = t.elapsed().as_secs_f64() / rounds as f64;
        let t = std::time::Instant::now();
        for _ in 0..5 {
            std::hint::black_box(zstd::bulk::compress(&b, 3).unwrap());
        }
        let z = t.elapsed().as_secs_f64() / 5.0;
        let scan: pgfrost::pg::walrec::Scan = scan;
        println!(
            "{name}  {:>7}  {:>7.3}  {:>9.1}  {:>9.4}",
            scan.records,
            s * 1e3,
            z * 1e3,
            s / z
        );
    }
}

fn smoke() {
    use pgfrost::pg::walrec::synthetic::{Writer, other_record, point_record};
    let size = 16u64 << 20;
    let start = 7 * size;
    let mut w = Writer::sized(start, 0, size);
    let mut named = 0;
    for i in 0.. {
        if w.record(&other_record(24 + (i * 53) % 400, 10)).is_none() {
            break;
        }
        if i % 1000 == 0 {
            if w.record(&point_record(&format!("p{i}"), i as i64))
                .is_none()
            {
                break;
            }
            named += 1;
        }
    }
    let seg = w.finish();
    let scan = pgfrost::pg::walrec::scan_segment(&seg, start, None);
    println!(
        "smoke run (not started by `cargo bench`, no WAL_SEGMENTS): synthetic 16 MiB segment, {} records, {} of {named} points found; no figures",
        scan.records,
        scan.points.len()
    );
    // The last point may have been cut by the segment's end.
    assert!(
        scan.points.len() + 1 >= named && scan.points.len() > 10,
        "the scan found {} of {named} points",
        scan.points.len()
    );
}
