//! The `weir` command: parses arguments, sets up logging and the runtime, maps outcomes to exit
//! codes (0 ok, 64 usage, 78 bad config, 1 anything else). Holds no logic.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EX_USAGE: u8 = 64;
const EX_CONFIG: u8 = 78;

/// The process's allocator, with the `jemalloc` feature (Cargo.toml says why).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, which it reads once at start-up from its `malloc_conf` symbol (named
/// with the prefix tikv-jemalloc-sys builds it with): freed pages go back to the kernel at once
/// rather than after jemalloc's decay, which left ~35 MiB of a 10,000-endpoint fleet's
/// start-up garbage resident for good, for no CPU cost measured (bench/RESULTS.md, issue 13).
/// The query path does not allocate. `_RJEM_MALLOC_CONF` in the environment overrides it.
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: JemallocConf = JemallocConf(c"dirty_decay_ms:0,muzzy_decay_ms:0".as_ptr());

/// A C string pointer jemalloc can read from a static.
#[cfg(feature = "jemalloc")]
#[repr(transparent)]
struct JemallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a 'static C string literal, never written.
#[cfg(feature = "jemalloc")]
unsafe impl Sync for JemallocConf {}

/// `weir --version`: the version and which allocator the build uses.
#[cfg(feature = "jemalloc")]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (allocator: jemalloc)");
#[cfg(not(feature = "jemalloc"))]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (allocator: system)");

/// weir: an authoritative DNS server for zone files and weighted, health-checked names.
#[derive(Debug, Parser)]
#[command(name = "weir", version = VERSION, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve DNS for the configured zones until SIGTERM or SIGINT (SIGHUP reloads config and zones).
    Serve {
        /// The config file (TOML). Zone file paths in it are relative to its folder.
        #[arg(long, short, env = "WEIR_CONFIG", default_value = "config/weir.toml")]
        config: PathBuf,
        /// Move the state store aside (to <path>.reset-<time>) and start with no stored
        /// overrides: the way out of a corrupt store.
        #[arg(long)]
        reset_state: bool,
    },
    /// Talk to a running weir's admin API: pools, weights, drains, overrides, rollouts, audit, reload.
    Ctl(weir::ctl::Args),
    /// DNSSEC key files: make a key (keygen), print the DS for the parent zone (ds).
    Dnssec(weir::dnssec::cli::Args),
    /// Validate the config and every zone file, list every problem, and exit (78 if any).
    Check {
        /// The config file (TOML).
        #[arg(long, short, env = "WEIR_CONFIG", default_value = "config/weir.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Check { config } => match weir::app::check(&config) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprint!("{problems}");
                ExitCode::from(EX_CONFIG)
            }
        },
        Command::Serve {
            config,
            reset_state,
        } => serve(&config, reset_state),
        Command::Ctl(args) => weir::ctl::run(args),
        Command::Dnssec(args) => weir::dnssec::cli::run(args),
    }
}

fn serve(path: &std::path::Path, reset_state: bool) -> ExitCode {
    let loaded = match weir::state::load(path) {
        Ok(loaded) => loaded,
        Err(problems) => {
            eprint!("weir: not starting, the configuration has {problems}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    init_tracing(&loaded.config.log);
    let store = match weir::app::open_store(&loaded, reset_state) {
        Ok(store) => store,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "weir not starting");
            eprintln!("weir: not starting: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(weir::app::serve(loaded, store));
    // Dropping a runtime waits for every blocking task; a commit stuck on a failing disk
    // must not keep a stopped weir alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "weir stopped");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(log: &weir::config::LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}
