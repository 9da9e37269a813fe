//! `lowprec train --distributed`: one rank of a data-parallel MPI job (cargo feature `mpi`).
//!
//! The ranks exchange gradients through [`lowprec_train::dist`]; MPI only gathers the bytes
//! (`MPI_Allgather`), and every rank reduces them in rank order itself. Rank 0 alone writes
//! metrics, progress and checkpoints.

/// Exit code of a rank whose collective call timed out (EX_TEMPFAIL).
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub const TIMEOUT_EXIT: i32 = 75;

#[cfg(not(feature = "mpi"))]
pub fn run(
    _cfg: lowprec_train::TrainConfig,
    _a: &super::TrainArgs,
    _threads: usize,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "--distributed needs MPI, which this build of lowprec leaves out: rebuild with \
         `cargo build --release --features mpi` (Open MPI on Debian: apt-get install openmpi-bin \
         libopenmpi-dev libclang-dev) and start it as `mpirun -np N lowprec train PRESET \
         --distributed`"
    )
}

#[cfg(feature = "mpi")]
pub use imp::run;

#[cfg(feature = "mpi")]
mod imp {
    use super::super::{backend, resume_path, TrainArgs};
    use super::TIMEOUT_EXIT;
    use anyhow::{bail, Context, Result};
    use lowprec_train::dist::{Exchange, ExchangeFormat, Transport, Watchdog};
    use lowprec_train::trainer::RunOptions;
    use lowprec_train::{FinalReport, TrainConfig, TrainError, Trainer};
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::traits::CommunicatorCollectives;
    use mpi::Threading;
    use std::time::Duration;

    /// `MPI_COMM_WORLD`'s allgather. The communicator handle is made at each call, so the
    /// transport can move to the thread that runs the training (MPI is initialised
    /// `MPI_THREAD_SERIALIZED`: one thread calls it at a time).
    struct MpiTransport {
        rank: usize,
        size: usize,
    }

    impl Transport for MpiTransport {
        fn rank(&self) -> usize {
            self.rank
        }

        fn size(&self) -> usize {
            self.size
        }

        fn name(&self) -> String {
            "mpi".into()
        }

        fn allgather(&mut self, mine: &[u8]) -> Result<Vec<u8>, TrainError> {
            if i32::try_from(mine.len()).is_err() {
                return Err(TrainError::Exchange(format!(
                    "a message of {} bytes is more than MPI's count limit (2^31 - 1)",
                    mine.len()
                )));
            }
            let mut all = vec![0u8; mine.len() * self.size];
            SimpleCommunicator::world().all_gather_into(mine, &mut all[..]);
            Ok(all)
        }
    }

    pub fn run(cfg: TrainConfig, a: &TrainArgs, threads: usize) -> Result<()> {
        let format: ExchangeFormat = a.exchange.parse().context("--exchange")?;
        if a.collective_timeout == 0 {
            bail!("--collective-timeout must be at least 1 second");
        }
        let Some((universe, provided)) = mpi::initialize_with_threading(Threading::Serialized)
        else {
            bail!("MPI was initialised already");
        };
        if !matches!(provided, Threading::Serialized | Threading::Multiple) {
            bail!("the MPI library offers threading level {provided:?}; lowprec needs Serialized");
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        // ranks on one machine share its cores unless --threads says otherwise
        let local = world.split_shared(0).size().max(1) as usize;
        let threads = if a.threads.is_some() {
            threads
        } else {
            (crate::util::cores() / local).max(1)
        };
        match run_rank(cfg, a, format, rank, size, threads) {
            Ok(r) => {
                if rank == 0 {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                }
                drop(universe); // MPI_Finalize
                Ok(())
            }
            Err(e) => {
                eprintln!("error: rank {rank}: {}", crate::error_text(&e));
                // the other ranks may be waiting in a collective: end the whole job
                world.abort(1)
            }
        }
    }

    fn run_rank(
        cfg: TrainConfig,
        a: &TrainArgs,
        format: ExchangeFormat,
        rank: usize,
        size: usize,
        threads: usize,
    ) -> Result<FinalReport> {
        let resume_from = resume_path(a, a.out.as_deref())?;
        let opts = RunOptions {
            out_dir: if rank == 0 { a.out.clone() } else { None },
            resume_from,
            data_dir: a.data_dir.clone(),
            backend: backend(&a.backend)?,
            threads,
            progress: rank == 0 && !a.quiet,
            stop_after: a.stop_after,
            verbose: rank == 0,
            overwrite: a.overwrite,
            allow_config_change: a.allow_config_change,
        };
        let timeout = Duration::from_secs(a.collective_timeout);
        let stall = a.test_stall_rank == Some(rank);
        crate::util::with_threads(threads, move || -> Result<FinalReport> {
            let mut t = Trainer::new(cfg, opts)?;
            if rank == 0 {
                eprintln!(
                    "{}: {}\nprecision {}\n{}\ndistributed: {size} ranks x {threads} threads, \
                     {format} gradient exchange over MPI",
                    t.cfg.name,
                    t.cfg.description,
                    t.cfg.precision,
                    t.model.summary()
                );
            }
            if stall {
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            let dog = Watchdog::start(timeout, move |what, limit| {
                eprintln!(
                    "error: rank {rank}: {what} did not complete within {} s \
                     (--collective-timeout): another rank has died or hangs; this rank exits \
                     with code {TIMEOUT_EXIT}",
                    limit.as_secs()
                );
                // SAFETY: `_exit` ends the process at once, without running atexit handlers
                // (MPI's could wait on the stuck collective); stderr is unbuffered.
                unsafe { libc::_exit(TIMEOUT_EXIT) }
            });
            let seed = t.cfg.seed;
            let ex = Exchange::new(Box::new(MpiTransport { rank, size }), format, seed)
                .with_watchdog(dog);
            t.set_exchange(ex)?;
            Ok(t.run()?)
        })?
    }
}
