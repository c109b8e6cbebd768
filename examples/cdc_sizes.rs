//! How big should content-defined chunks be? Measures FastCDC (the chunker of files and
//! streams, `ops::backup`) at several sizes on a dump-like text stream, the kind a database
//! dump or a large config file is: how many chunks (index entries, one per chunk) and how
//! many new bytes (zstd -3, as stored) a second version costs after (a) 1% of the lines
//! changed at random, (b) a contiguous 1% changed and 1% appended, (c) one line inserted near
//! the start.
//!
//! `cargo run --release --example cdc_sizes [MIB]` (default 256 MiB of dump).

use std::collections::HashSet;
use std::time::Instant;

fn line(i: u64, salt: u64) -> String {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt;
    x ^= x >> 29;
    format!(
        "INSERT INTO events VALUES ({i}, 'user_{}', '{}', {}, 'payload {:016x} {:08x}');\n",
        x % 100_000,
        ["view", "click", "buy", "search", "login"][(x % 5) as usize],
        1_700_000_000 + i * 7,
        x,
        x >> 20
    )
}

fn dump(lines: u64, changed: &dyn Fn(u64) -> bool, extra: u64, insert_at: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity((lines as usize + 1) * 100);
    for i in 0..lines + extra {
        if insert_at == Some(i) {
            out.extend_from_slice(b"-- a comment added by hand\n");
        }
        let salt = if changed(i) { 0xdead_beef } else { 0 };
        out.extend_from_slice(line(i, salt).as_bytes());
    }
    out
}

fn chunks(data: &[u8], min: u32, avg: u32, max: u32) -> Vec<(blake3::Hash, usize, usize)> {
    fastcdc::v2020::FastCDC::new(data, min, avg, max)
        .map(|c| {
            (
                blake3::hash(&data[c.offset..c.offset + c.length]),
                c.offset,
                c.length,
            )
        })
        .collect()
}

fn main() {
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let lines = mib * (1 << 20) / 100;
    let base = dump(lines, &|_| false, 0, None);
    let versions: [(&str, Vec<u8>); 3] = [
        (
            "(a) 1% of lines at random",
            dump(
                lines,
                &|i| i.wrapping_mul(2_654_435_761) % 100 == 0,
                0,
                None,
            ),
        ),
        (
            "(b) contiguous 1% + 1% appended",
            dump(
                lines,
                &|i| (lines / 2..lines / 2 + lines / 100).contains(&i),
                lines / 100,
                None,
            ),
        ),
        (
            "(c) one line inserted",
            dump(lines, &|_| false, 0, Some(1000)),
        ),
    ];
    println!(
        "dump of {} MiB ({} lines); new bytes are zstd -3 of the chunks a version adds",
        base.len() >> 20,
        lines
    );
    println!(
        "{:<22} {:>9} {:>10}  {:<32} {:>12} {:>8}",
        "min/avg/max", "chunks", "chunk/s", "change", "new (zstd)", "vs full"
    );
    let full = zstd::bulk::compress(&base, 3).expect("zstd").len();
    for (min, avg, max) in [
        (4u32 << 10, 16u32 << 10, 64u32 << 10),
        (16 << 10, 64 << 10, 256 << 10),
        (64 << 10, 256 << 10, 1 << 20),
        (256 << 10, 1 << 20, 4 << 20),
        (512 << 10, 2 << 20, 8 << 20),
    ] {
        let started = Instant::now();
        let old = chunks(&base, min, avg, max);
        let rate = base.len() as f64 / started.elapsed().as_secs_f64() / 1e6;
        let known: HashSet<blake3::Hash> = old.iter().map(|c| c.0).collect();
        for (name, data) in &versions {
            let mut new = Vec::new();
            for (h, off, len) in chunks(data, min, avg, max) {
                if !known.contains(&h) {
                    new.extend_from_slice(&data[off..off + len]);
                }
            }
            let stored = zstd::bulk::compress(&new, 3).expect("zstd").len();
            println!(
                "{:<22} {:>9} {:>7.0} MB  {:<32} {:>9} KiB {:>7.3}x",
                format!("{}K/{}K/{}K", min >> 10, avg >> 10, max >> 10),
                old.len(),
                rate,
                name,
                stored >> 10,
                stored as f64 / full as f64
            );
        }
    }
}
