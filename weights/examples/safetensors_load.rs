//! Benchmark baseline for `thaw weights load --device cpu`: the `safetensors` crate loading the
//! same files from local disk the usual way (mmap, deserialize the header, copy every tensor into
//! one host buffer, as a loader that owns its tensors does).
//!
//! `cargo run --release -p thaw-weights --example safetensors_load -- FILE...` prints one JSON
//! line: `{"bytes": N, "seconds": S}`.

use std::fs::File;
use std::time::Instant;

use safetensors::SafeTensors;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        return Err("usage: safetensors_load FILE...".into());
    }
    let started = Instant::now();
    let mut maps = Vec::new();
    let mut total = 0usize;
    for path in &files {
        let file = File::open(path).map_err(|e| format!("{path}: {e}"))?;
        // SAFETY: the benchmark does not modify the files while they are mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("{path}: {e}"))?;
        let tensors = SafeTensors::deserialize(&map).map_err(|e| format!("{path}: {e}"))?;
        total += tensors
            .tensors()
            .iter()
            .map(|(_, t)| t.data().len())
            .sum::<usize>();
        maps.push(map);
    }
    let mut out = vec![0u8; total];
    let mut at = 0;
    for map in &maps {
        let tensors = SafeTensors::deserialize(map)?;
        for (_, tensor) in tensors.tensors() {
            let data = tensor.data();
            out[at..at + data.len()].copy_from_slice(data);
            at += data.len();
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    std::hint::black_box(&out);
    println!("{{\"bytes\": {total}, \"seconds\": {seconds}}}");
    Ok(())
}
