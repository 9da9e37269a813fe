//! Helpers shared by the fuzz targets and the corpus generator (`examples/make_corpus.rs`).
//!
//! Targets that read several inputs at once (a SigMF recording's metadata and data, the four
//! files of an IDX set) take them as [`split`] parts of one fuzz input, so that one corpus file
//! is one test case.

/// libFuzzer's RSS and single-allocation limit in MiB (scripts/fuzz.sh passes it): a header that
/// claims more must be an error, not an allocation.
pub const ALLOC_LIMIT_MB: u64 = 2048;

/// The memory budget (MiB) of network descriptions in the targets that build networks
/// (`LOWPREC_MEMORY_LIMIT_MB`, see lowprec_nn::limits): well below [`ALLOC_LIMIT_MB`], so that
/// a network the checks let through is built without reaching libFuzzer's limit, and quickly.
pub const NETWORK_BUDGET_MB: u64 = 256;

/// Lowers lowprec_nn's memory budget to [`NETWORK_BUDGET_MB`]; call once, before any build.
pub fn limit_network_memory() {
    // Set before any thread of the target runs (libfuzzer-sys's `init`).
    std::env::set_var(
        lowprec_nn::limits::MEMORY_LIMIT_ENV,
        NETWORK_BUDGET_MB.to_string(),
    );
}

/// Splits `data` into `n` parts: each of the first `n - 1` is a little-endian u32 length and
/// that many bytes (fewer where the input ends first), the last part is the rest.
pub fn split(mut data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    for _ in 1..n {
        // fewer than 4 bytes left: they are this part
        let len = match data {
            [a, b, c, d, rest @ ..] => {
                data = rest;
                u32::from_le_bytes([*a, *b, *c, *d]) as usize
            }
            _ => data.len(),
        };
        let (part, rest) = data.split_at(len.min(data.len()));
        parts.push(part);
        data = rest;
    }
    parts.push(data);
    parts
}

/// The inverse of [`split`].
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 < parts.len() {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(p);
    }
    out
}

/// f32 values from little-endian bytes (a trailing partial value is dropped).
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_inverts_join() {
        let parts: [&[u8]; 3] = [b"meta", b"", b"data bytes"];
        assert_eq!(split(&join(&parts), 3), parts.to_vec());
        // short inputs still give n parts
        assert_eq!(split(&[1, 0], 3), vec![&[1u8, 0][..], &[][..], &[][..]]);
    }
}

/// The exchange fuzz target's transport and the calls it makes, shared with the corpus
/// generator (which records what rank 0 really sends, to replay it as the other ranks').
pub mod exchange {
    use std::sync::{Arc, Mutex};

    use lowprec_train::dist::{Exchange, ExchangeFormat, Transport};
    use lowprec_train::TrainError;

    /// Rank 0 of a job of 2 to 4 ranks, whose peers send bytes cut from a stream: each call
    /// gives every other rank as many bytes as rank 0 sends (zeros once the stream runs out),
    /// so that messages reach the decoder instead of failing the length check.
    pub struct Peers {
        size: usize,
        stream: Vec<u8>,
        at: usize,
        /// What rank 0 sent, call by call.
        sent: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl Peers {
        pub fn new(ranks: u8, stream: &[u8]) -> Peers {
            Peers {
                size: 2 + usize::from(ranks % 3),
                stream: stream.to_vec(),
                at: 0,
                sent: Arc::default(),
            }
        }
    }

    impl Transport for Peers {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            self.size
        }
        fn allgather(&mut self, mine: &[u8]) -> Result<Vec<u8>, TrainError> {
            self.sent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(mine.to_vec());
            let mut all = mine.to_vec();
            for _ in 1..self.size {
                for _ in 0..mine.len() {
                    all.push(self.stream.get(self.at).copied().unwrap_or(0));
                    self.at += 1;
                }
            }
            Ok(all)
        }
        fn name(&self) -> String {
            "fuzz".into()
        }
    }

    /// The exchange format byte `b` selects.
    pub fn format(b: u8) -> ExchangeFormat {
        match b % 4 {
            0 => ExchangeFormat::Fp32,
            1 => ExchangeFormat::Bfp8 { tile: Some(32) },
            2 => ExchangeFormat::Bfp8 { tile: None },
            _ => ExchangeFormat::Bfp8 { tile: Some(3) },
        }
    }

    /// A training run's start and first two steps, on rank 0: the configuration check, a
    /// batch-norm average and two gradient all-reduces. Returns what rank 0 sent, call by call,
    /// and the first error.
    pub fn run(peers: Peers, format_byte: u8) -> (Vec<Vec<u8>>, Result<(), TrainError>) {
        let sent = peers.sent.clone();
        let mut ex = Exchange::new(Box::new(peers), format(format_byte), 7);
        let result = (|| {
            ex.check_same("name = \"fuzz\"", &[1, 2, 3])?;
            let mut running_mean = vec![0.5f32; 3];
            let mut running_var = vec![1.0f32; 3];
            ex.average(&mut [&mut running_mean, &mut running_var])?;
            let mut w = vec![0.25f32, -1.5, 3.0e-3, 0.0, 7.0];
            let mut b: Vec<f32> = (0..40).map(|i| (i as f32 - 20.0) * 1.0e-2).collect();
            for step in 0..2 {
                ex.all_reduce(
                    step,
                    &["fc1.weight", "fc1.bias"],
                    &mut [&mut w, &mut b],
                    [1.0, 2.0],
                )?;
            }
            Ok(())
        })();
        drop(ex);
        let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|e| e.into_inner()));
        (sent, result)
    }
}
