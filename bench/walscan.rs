//! What archive-push's restore-point scan costs, against what it already pays for the same
//! segment: zstd level 3 (the default compress-level). Ratios, not seconds: the machines are
//! noisy, and both are measured here, on the same bytes, in the same run.
//!
//!   WAL_SEGMENTS=/path/pg_wal/000000010000000000000005,... cargo bench --bench walscan
//!
//! Segments of a real cluster: initdb, `pgbench -i -s 5`, `pgbench -T 10`, then copy the full
//! segments out of pg_wal (bench/README.md).

fn main() {
    let Ok(list) = std::env::var("WAL_SEGMENTS") else {
        eprintln!(
            "walscan: set WAL_SEGMENTS to a comma-separated list of 16 MiB WAL segment files (see bench/README.md)"
        );
        std::process::exit(2);
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
