//! Chooses FastCDC sizes by measurement: for each candidate (min/avg/max) it reports, on
//! data that does not deduplicate, the expected bytes a 4 KiB random read must fetch
//! (the size-biased mean chunk length: a random offset lands in a chunk with probability
//! proportional to its length) and its amplification, extents per GiB, and on an
//! edited-file workload (a copy of a file with small edits at random places) the share of
//! the copy's bytes that deduplicate against the original. Uses the engine's own chunker.

use gateway::engine::chunker::{ChunkerParams, chunk_and_hash};
use rand::{Rng, RngCore, SeedableRng};
use std::collections::HashSet;

#[derive(clap::Args)]
pub struct Args {
    /// MiB of random data per candidate.
    #[arg(long, default_value_t = 256)]
    mib: usize,
    /// Edits applied to the copy in the edited-file workload.
    #[arg(long, default_value_t = 200)]
    edits: usize,
}

const CANDIDATES: [(u32, u32, u32); 3] =
    [(16 << 10, 64 << 10, 256 << 10), (32 << 10, 128 << 10, 512 << 10), (64 << 10, 256 << 10, 1 << 20)];

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut data = vec![0u8; args.mib << 20];
    rng.fill_bytes(&mut data);
    // The edited copy: small overwrites, inserts and deletes at random places.
    let mut edited = data.clone();
    for _ in 0..args.edits {
        let at = rng.random_range(0..edited.len().saturating_sub(64));
        match rng.random_range(0..3) {
            0 => edited[at..at + 16].copy_from_slice(&[0xAB; 16]),
            1 => {
                edited.splice(at..at, [0xCD; 100]);
            }
            _ => {
                edited.drain(at..at + 50);
            }
        }
    }
    println!("chunking: {} MiB of random data; edited copy with {} small edits", args.mib, args.edits);
    println!("| min / avg / max KiB | mean chunk KiB | bytes fetched by a 4 KiB random read (KiB) | amplification | extents per GiB | dedup of the edited copy |");
    println!("|---|---|---|---|---|---|");
    for (min, avg, max) in CANDIDATES {
        let params = ChunkerParams::new(min, avg, max)?;
        let chunks = chunk_and_hash(&data, params);
        let total = data.len() as f64;
        let sum_sq: f64 = chunks.iter().map(|c| (c.len as f64) * (c.len as f64)).sum();
        let biased = sum_sq / total;
        let mean = total / chunks.len() as f64;
        let per_gib = chunks.len() as f64 * (1u64 << 30) as f64 / total;
        let known: HashSet<_> = chunks.iter().map(|c| c.hash).collect();
        let copy = chunk_and_hash(&edited, params);
        let shared: usize = copy.iter().filter(|c| known.contains(&c.hash)).map(|c| c.len).sum();
        println!(
            "| {} / {} / {} | {:.0} | {:.0} | {:.0}x | {:.0} | {:.2}% |",
            min >> 10,
            avg >> 10,
            max >> 10,
            mean / 1024.0,
            biased / 1024.0,
            biased / 4096.0,
            per_gib,
            100.0 * shared as f64 / edited.len() as f64
        );
    }
    Ok(())
}
