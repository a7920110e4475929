//! `weir dnssec`: key files on this machine, no server involved. `keygen` writes a new key
//! in BIND's format (the `.private` file mode 0600, created exclusively), `ds` prints what the
//! parent zone needs (DS, and the DNSKEY for registrars that take that).

use std::path::PathBuf;

use clap::{Args as ClapArgs, Subcommand};

use super::{
    Algorithm, FLAGS_KSK, FLAGS_ZSK, SigningKey, dnskey_text, ds_lines, read_keys, write_key,
};
use crate::model::Name;

#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a signing key for ZONE: a CSK (signs everything) unless --zsk or --ksk says otherwise.
    Keygen {
        /// The zone, e.g. example.com.
        zone: String,
        /// The key directory ([dnssec] key_dir of the config).
        #[arg(long, default_value = "keys")]
        dir: PathBuf,
        /// 13 / ecdsap256sha256 (the default) or 15 / ed25519.
        #[arg(long, short, default_value = "ecdsap256sha256")]
        algorithm: String,
        /// A zone-signing key (DNSKEY flags 256): signs everything but the DNSKEY set.
        #[arg(long, conflicts_with = "ksk")]
        zsk: bool,
        /// A key-signing key (flags 257) beside ZSKs: signs the DNSKEY set only.
        #[arg(long)]
        ksk: bool,
        /// Published but not signing until a rollover activates it (`weir ctl dnssec rollover`).
        #[arg(long)]
        standby: bool,
        /// The TTL written in the .key file (weir serves the DNSKEY set with the SOA's TTL).
        #[arg(long, default_value_t = 3600)]
        ttl: u32,
    },
    /// Print the DS records of ZONE's key-signing keys (and their DNSKEYs) for the parent zone.
    Ds {
        zone: String,
        #[arg(long, default_value = "keys")]
        dir: PathBuf,
    },
}

/// Runs `weir dnssec`; the exit code (0, 1 failed, 64 usage).
pub fn run(args: Args) -> std::process::ExitCode {
    match execute(args.command) {
        Ok(text) => {
            print!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("weir dnssec: {message}");
            std::process::ExitCode::from(code)
        }
    }
}

fn zone_name(text: &str) -> Result<Name, (u8, String)> {
    Name::parse(text).map_err(|e| (64, format!("`{text}` is not a zone name: {e}")))
}

fn execute(command: Command) -> Result<String, (u8, String)> {
    match command {
        Command::Keygen {
            zone,
            dir,
            algorithm,
            zsk,
            ksk: _,
            standby,
            ttl,
        } => {
            let zone = zone_name(&zone)?;
            let algorithm = Algorithm::parse(&algorithm).ok_or_else(|| {
                (
                    64,
                    format!("algorithm `{algorithm}`: use ecdsap256sha256 (13) or ed25519 (15)"),
                )
            })?;
            let flags = if zsk { FLAGS_ZSK } else { FLAGS_KSK };
            let key = SigningKey::generate(algorithm, flags).map_err(|e| (1, e))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| (1, format!("cannot create {}: {e}", dir.display())))?;
            let created = super::format_time(crate::clock::wall_secs());
            let stem = write_key(&dir, &zone, &key, ttl, &created, standby).map_err(|e| {
                (
                    1,
                    format!("cannot write the key into {}: {e}", dir.display()),
                )
            })?;
            Ok(format!("{}\n", stem.display()))
        }
        Command::Ds { zone, dir } => {
            let zone = zone_name(&zone)?;
            let keys = read_keys(&dir, &zone).map_err(|problems| (1, problems.join("\n")))?;
            if !keys.iter().any(|k| k.key.is_sep()) {
                return Err((
                    1,
                    format!("no key-signing key of {zone} in {}", dir.display()),
                ));
            }
            let mut out = ds_lines(&zone, keys.iter().map(|k| &*k.key));
            for k in keys.iter().filter(|k| k.key.is_sep()) {
                out.push_str(&format!(
                    "{zone} IN DNSKEY {}\n",
                    dnskey_text(k.key.dnskey())
                ));
            }
            Ok(out)
        }
    }
}
