//! A small mutation fuzzer for the parsers of untrusted bytes (behind the `fuzz` feature, for
//! tests and `benches/fuzz.sh`). It runs on the stable toolchain: cargo-fuzz needs nightly, so
//! instead of coverage guidance it starts from valid objects of each format and mutates them the
//! ways that break parsers (bit flips, truncation, splices, and length or count fields set to
//! 0, 1, 2^31, 2^32-1 and 2^40-ish values), which reaches the checks a random input never would.
//! Every case is deterministic from its seed: a failure prints the seed and the input to replay.

/// Deterministic pseudo-random numbers (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Values that break length and count fields.
const INTERESTING: [u64; 8] = [
    0,
    1,
    0x7f,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 40,
    u64::MAX,
];

/// One to four mutations of `seed_bytes`.
pub fn mutate(rng: &mut Rng, seed_bytes: &[u8]) -> Vec<u8> {
    let mut out = seed_bytes.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(7) {
            0 if len > 0 => {
                let at = rng.below(len);
                out[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                out[at] = rng.next_u64() as u8;
            }
            2 => out.truncate(rng.below(len + 1)),
            3 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let junk: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                out.splice(at..at, junk);
            }
            4 | 5 if len >= 4 => {
                // A length or count field: little-endian u32 or u64 at an aligned offset.
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let width = if rng.below(2) == 0 || len < 8 { 4 } else { 8 };
                let at = rng.below((len - width) / 4 + 1) * 4;
                out[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
            }
            6 if len > 1 => {
                // Copy one slice over another (repeated records, overlapping tables).
                let (a, b) = (rng.below(len), rng.below(len));
                let n = rng.below(len - a.max(b)).min(64);
                let slice = out[a..a + n].to_vec();
                out[b..b + n].copy_from_slice(&slice);
            }
            _ => {}
        }
    }
    out
}

/// Cases per target: `THAW_FUZZ_CASES`, else `default`.
pub fn cases(default: u64) -> u64 {
    std::env::var("THAW_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `cases` mutants of each seed through `target`, which must return (Ok or Err) without
/// panicking. A panic is reported with the target, seed number and input (hex) and re-raised.
/// Returns the number of cases run.
pub fn run(name: &str, seeds: &[Vec<u8>], cases: u64, target: impl Fn(&[u8])) -> u64 {
    let mut run = 0;
    for case in 0..cases {
        let seed = &seeds[case as usize % seeds.len()];
        let mut rng = Rng::new(case ^ name.len() as u64);
        let input = mutate(&mut rng, seed);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input)));
        if let Err(panic) = outcome {
            eprintln!(
                "fuzz target {name}: case {case} panicked; input ({} bytes): {}",
                input.len(),
                hex::encode(&input)
            );
            std::panic::resume_unwind(panic);
        }
        run += 1;
    }
    eprintln!("fuzz target {name}: {run} cases, no crash");
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutants_are_deterministic_and_varied() {
        let seed = vec![7u8; 64];
        let a: Vec<Vec<u8>> = (0..50).map(|i| mutate(&mut Rng::new(i), &seed)).collect();
        let b: Vec<Vec<u8>> = (0..50).map(|i| mutate(&mut Rng::new(i), &seed)).collect();
        assert_eq!(a, b);
        let distinct: std::collections::HashSet<&Vec<u8>> = a.iter().collect();
        assert!(distinct.len() > 40, "{}", distinct.len());
        assert!(a.iter().any(|m| m.len() < seed.len()) && a.iter().any(|m| m.len() > seed.len()));
    }
}
