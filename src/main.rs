//! The `lifeboat` command: parse arguments, call the library, print results.

// Output goes through these instead of std's macros, which panic when the reader has gone
// (`lifeboat list | head -1`). A closed pipe only stops the printing: the command still
// finishes its work (a `forget` piped into `head` must not stop half-way) and exits as usual.
macro_rules! println {
    () => { $crate::write_out(&mut std::io::stdout(), format_args!("\n")) };
    ($($arg:tt)*) => { $crate::write_out(&mut std::io::stdout(), format_args!("{}\n", format_args!($($arg)*))) };
}
macro_rules! eprintln {
    () => { $crate::write_out(&mut std::io::stderr(), format_args!("\n")) };
    ($($arg:tt)*) => { $crate::write_out(&mut std::io::stderr(), format_args!("{}\n", format_args!($($arg)*))) };
}
macro_rules! eprint {
    ($($arg:tt)*) => { $crate::write_out(&mut std::io::stderr(), format_args!($($arg)*)) };
}

mod cli;

/// The first failure to write the output other than a closed pipe (a full disk under
/// `lifeboat list --json > out.json`): the command then does not exit 0.
static OUTPUT_FAILED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Write to stdout or stderr, ignoring a reader that went away.
fn write_out(to: &mut dyn std::io::Write, args: std::fmt::Arguments) {
    if let Err(e) = to.write_fmt(args) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let _ = OUTPUT_FAILED.set(e.to_string());
        }
    }
}

use clap::{Args, Parser, Subcommand};
use lifeboat::config::{self, FileConfig};
use lifeboat::error::{Error, ErrorKind, Result};
use lifeboat::ops::backup::{backup, BackupOptions};
use lifeboat::ops::restore::Destination;
use lifeboat::ops::verify::{verify_backups, Progressed, VerifyReport};
use lifeboat::ops::{check, restore, sync, VerifyLevel};
use lifeboat::progress::Progress;
use lifeboat::repo::compress::Compression;
use lifeboat::repo::crypto::{parse_recipient, recipient_string, Identity, KdfParams};
use lifeboat::repo::manifest::{Content, Manifest};
use lifeboat::repo::{keys, NewRepo, Repository};
use lifeboat::secret::PassphraseSource;
use lifeboat::source::source_key;
use lifeboat::storage::Storage;
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "lifeboat",
    version,
    about = "Consistent, deduplicated, verified backups of live databases",
    after_help = exit_codes_help()
)]
struct Cli {
    /// Repository: a path, file://PATH, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or
    /// az://CONTAINER/PREFIX. Default: ~/.local/share/lifeboat/repo (the only location created
    /// without `repo init` or `backup --init`)
    #[arg(
        help_heading = "Global options",
        long,
        global = true,
        env = "LIFEBOAT_REPO"
    )]
    repo: Option<String>,
    /// Config file. Default: ./lifeboat.toml, then ~/.config/lifeboat/lifeboat.toml
    #[arg(
        help_heading = "Global options",
        long,
        global = true,
        env = "LIFEBOAT_CONFIG"
    )]
    config: Option<PathBuf>,
    /// Print machine-readable JSON on stdout.
    #[arg(help_heading = "Global options", long, global = true)]
    json: bool,
    /// More logging on stderr (-v, -vv).
    #[arg(help_heading = "Global options", short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Encrypted repositories: read the passphrase from the first line of this file.
    /// (Or set LIFEBOAT_PASSWORD, or use --password-command; on a terminal it is asked.)
    #[arg(
        help_heading = "Global options",
        long,
        global = true,
        env = "LIFEBOAT_PASSWORD_FILE",
        hide_env_values = true
    )]
    password_file: Option<PathBuf>,
    /// Encrypted repositories: run this command and use the first line it prints.
    #[arg(
        help_heading = "Global options",
        long,
        global = true,
        env = "LIFEBOAT_PASSWORD_COMMAND",
        hide_env_values = true
    )]
    password_command: Option<String>,
    /// Write-only repositories: the private identity file (`key generate`) that reads them.
    #[arg(
        help_heading = "Global options",
        long,
        global = true,
        env = "LIFEBOAT_IDENTITY",
        hide_env_values = true
    )]
    identity: Option<PathBuf>,
    /// Accept a repository that changed since this machine last used it (another id, keys
    /// replaced, encryption or format lowered, newest backup or replica list gone back).
    /// Each change is printed; without this flag such a command stops with exit code 9.
    #[arg(help_heading = "Global options", long, global = true)]
    accept_change: bool,
    #[command(subcommand)]
    command: Command,
}

/// Argon2id costs for a new key (defaults: 64 MiB, 3 passes, 4 lanes; at most 1 GiB, 16
/// passes, 16 lanes, and memory × passes at most 2 GiB).
#[derive(Args, Clone, Copy)]
#[command(next_help_heading = "Key derivation (Argon2id; defaults: 64 MiB, 3 passes, 4 lanes)")]
struct KdfArgs {
    /// Argon2id memory in KiB (default 65536).
    #[arg(long)]
    argon2_memory: Option<u32>,
    /// Argon2id passes (default 3).
    #[arg(long)]
    argon2_iterations: Option<u32>,
    /// Argon2id lanes (default 4).
    #[arg(long)]
    argon2_parallelism: Option<u32>,
}

impl KdfArgs {
    fn params(self) -> KdfParams {
        let d = KdfParams::default();
        KdfParams {
            memory_kib: self.argon2_memory.unwrap_or(d.memory_kib),
            iterations: self.argon2_iterations.unwrap_or(d.iterations),
            parallelism: self.argon2_parallelism.unwrap_or(d.parallelism),
        }
    }
}

#[derive(Subcommand)]
enum ReplicaCommand {
    /// Add a replica (a path, file://, s3://, gs://, az://) and copy everything to it.
    Add {
        /// Where the copy goes: an empty location, or one holding a copy of this repository.
        url: String,
    },
    /// Stop replicating to a target (its copy is left as it is).
    Remove {
        /// The replica, as `replica list` shows it.
        url: String,
    },
    /// The replicas of this repository.
    List,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// The key files (one per passphrase) and data key generations.
    List,
    /// Make a private identity for write-only repositories; prints its public key.
    Generate {
        /// Where to write the identity (created 0600; keep it off the backup host).
        #[arg(long)]
        output: PathBuf,
    },
    /// Add a passphrase (from --new-password-file, LIFEBOAT_NEW_PASSWORD, or asked twice).
    Add {
        /// Read the new passphrase from the first line of this file.
        #[arg(long, env = "LIFEBOAT_NEW_PASSWORD_FILE", hide_env_values = true)]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Remove a passphrase's key file (not the one in use, not the last).
    Remove {
        /// Key id or unambiguous prefix (see `key list`).
        id: String,
    },
    /// Change the passphrase in use.
    Passwd {
        /// Read the new passphrase from the first line of this file (else
        /// LIFEBOAT_NEW_PASSWORD, or asked twice).
        #[arg(long, env = "LIFEBOAT_NEW_PASSWORD_FILE", hide_env_values = true)]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Start a new data key: everything written from now on uses it; old data stays readable.
    /// With --full, replace the root keys too, for when a passphrase or key file may be in
    /// the wrong hands: the new keys get a new passphrase (one no current key file opens),
    /// every other key file is removed (add them again with `key add`), manifests, index
    /// files and records are re-sealed, and the next backup of each database is stored in
    /// full once (new blob ids).
    Rotate {
        /// Replace the root keys, not only the data key.
        #[arg(long)]
        full: bool,
        /// Do not ask before removing the other key files.
        #[arg(long, short)]
        yes: bool,
        /// --full: the new passphrase, from this file (else LIFEBOAT_NEW_PASSWORD, or asked
        /// twice).
        #[arg(long, env = "LIFEBOAT_NEW_PASSWORD_FILE", hide_env_values = true)]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Back up a live SQLite database.
    Backup(BackupArgs),
    /// List backups, oldest first.
    List {
        /// Only backups of this database.
        #[arg(long)]
        source: Option<PathBuf>,
        /// Only backups with this tag.
        #[arg(long)]
        tag: Option<String>,
    },
    /// Show everything recorded about one backup.
    Show {
        /// Backup id, unambiguous prefix, or `latest` (the newest backup of --source that is
        /// not a pre-restore safety backup).
        id: String,
        /// Only backups of this database (needed for `latest` when the repository holds
        /// several).
        #[arg(long)]
        source: Option<PathBuf>,
    },
    /// Prove backups restore: rebuild, integrity_check, compare checksums, schema, row counts.
    Verify {
        /// Backup id, unambiguous prefix, or `latest`. Default: the newest backup of each
        /// database (of --source only, if given).
        id: Option<String>,
        /// Only backups of this database.
        #[arg(long)]
        source: Option<PathBuf>,
        /// Verify every backup (of --source only, if given).
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Ship every commit of live SQLite databases continuously (runs until stopped).
    #[command(
        after_help = "Each committed transaction reaches the repository within --interval, then         the replicas; bases (ordinary backups) are taken at the start and every --base-every.         SIGTERM or SIGINT ships what is pending, then stops. A restart resumes the stream where         it stopped. `lifeboat timeline DB` shows the restorable window, `lifeboat restore         --source DB --at TIME` restores a moment."
    )]
    Replicate {
        /// SQLite databases in WAL mode.
        #[arg(required = true)]
        databases: Vec<PathBuf>,
        /// The longest a commit waits before it is shipped (e.g. 1s, 500ms). Default: the
        /// config file's `[replicate.source."PATH"]` or `[replicate]` interval, else 1s.
        #[arg(long, value_parser = config::parse_duration)]
        interval: Option<std::time::Duration>,
        /// Take a new base after this long (bounds restore time; e.g. 1h, 30m). Default: as
        /// for --interval (`base_every`), else 1h.
        #[arg(long, value_parser = config::parse_duration)]
        base_every: Option<std::time::Duration>,
        /// Create the repository if it does not exist.
        #[arg(long, env = "LIFEBOAT_INIT", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
        init: bool,
    },
    /// The moments a replicated database can be restored to: window, gaps, last commit;
    /// for a PostgreSQL cluster (postgres://USER@HOST:PORT/), its archived WAL and the window
    /// of each base backup.
    Timeline {
        /// The database (as given to `replicate`), or a PostgreSQL cluster's URI.
        database: PathBuf,
    },
    /// PostgreSQL's archive_command: store a WAL file durably (archive_command = 'lifeboat
    /// --repo REPO wal-push %p').
    #[command(
        after_help = "Exit 0 only once the file is durable in the repository. The same file pushed         twice succeeds; other bytes under a name already archived fail (exit 4) and nothing is         overwritten. Segments PostgreSQL has marked ready are pushed ahead in the same call         (LIFEBOAT_WAL_PUSH_BATCH, LIFEBOAT_WAL_PUSH_PARALLEL)."
    )]
    WalPush {
        /// The file, as PostgreSQL's %p gives it (relative to the data directory).
        path: PathBuf,
        /// The cluster's data directory (default: the current directory, where PostgreSQL
        /// runs the command).
        #[arg(long)]
        pgdata: Option<PathBuf>,
    },
    /// PostgreSQL's restore_command: write an archived WAL file (restore_command = 'lifeboat
    /// --repo REPO wal-fetch %f %p').
    #[command(
        after_help = "Exit 0 when written, 1 when the archive does not hold the file (PostgreSQL         asks for files that may not exist), 128 + the usual code on any other failure (a damaged         file, an unreachable repository), which makes PostgreSQL stop recovery rather than end         it early. The next segments are fetched ahead (LIFEBOAT_WAL_PREFETCH, default 16)."
    )]
    WalFetch {
        /// The file's name (%f).
        file: String,
        /// Where to write it (%p).
        dest: PathBuf,
        /// The data directory being recovered (default: the current directory).
        #[arg(long)]
        pgdata: Option<PathBuf>,
    },
    /// Restore a backup to a new file (--output) or over a database (--db).
    #[command(
        after_help = "`latest` with --db means the newest backup of that database that is \
        not a pre-restore safety backup. Restoring a backup of another database over --db asks \
        first, naming both (without a terminal it needs --force as well as --yes)."
    )]
    Restore {
        /// Backup id, unambiguous prefix, or `latest`.
        #[arg(required_unless_present_any = ["run", "at", "pgdata"])]
        id: Option<String>,
        /// Restore a replicated database as it was at this moment (RFC 3339, e.g.
        /// 2026-11-11T14:29:59Z) or `latest`: a base, then every commit up to it.
        /// With --pgdata: recover to this moment (RFC 3339) or `latest` (all archived WAL).
        #[arg(long, conflicts_with_all = ["run"])]
        at: Option<String>,
        /// Restore a physical PostgreSQL base backup into this new (or empty) data directory,
        /// with recovery.signal and the settings that replay the archived WAL.
        #[arg(long, conflicts_with_all = ["output", "db", "to", "run"])]
        pgdata: Option<PathBuf>,
        /// With --pgdata: recover to this WAL position (e.g. 0/16B3740).
        #[arg(long, requires = "pgdata", conflicts_with_all = ["at", "xid", "immediate"])]
        lsn: Option<String>,
        /// With --pgdata: recover to this transaction id (it included).
        #[arg(long, requires = "pgdata", conflicts_with_all = ["at", "lsn", "immediate"])]
        xid: Option<String>,
        /// With --pgdata: stop as soon as the backup is consistent.
        #[arg(long, requires = "pgdata", conflicts_with_all = ["at", "lsn", "xid"])]
        immediate: bool,
        /// With --pgdata: start the server and wait until recovery has ended.
        #[arg(long, requires = "pgdata")]
        start: bool,
        /// With --pgdata: the port the restored server listens on.
        #[arg(long, requires = "pgdata")]
        port: Option<u16>,
        /// With --pgdata: the timeline to recover along (recovery_target_timeline): latest
        /// (default), current (the backup's) or a number.
        #[arg(long, requires = "pgdata")]
        timeline: Option<String>,
        /// With --pgdata: keep WAL archiving on in the restored server (it replaces the
        /// original). Without it the copy gets archive_mode = off: it must not archive into
        /// the original's repository.
        #[arg(long, requires = "pgdata")]
        archive: bool,
        /// Write a new database file (a files backup: a new folder; a PostgreSQL backup: a
        /// tar archive that `pg_restore -d DB FILE` reads without Lifeboat) here.
        #[arg(long, conflicts_with = "db", required_unless_present_any = ["db", "run", "to", "pgdata"])]
        output: Option<PathBuf>,
        /// Restore a PostgreSQL backup into this database (postgres://USER@HOST:PORT/DB).
        #[arg(long, conflicts_with_all = ["db", "output", "run", "at"])]
        to: Option<String>,
        /// With --to: create the database first (it must not exist yet).
        #[arg(long, requires = "to")]
        create: bool,
        /// With --to: drop the objects the backup holds from the database before restoring
        /// them (with --yes).
        #[arg(long, requires = "to")]
        clean: bool,
        /// With --to: tables restored at once (pg_restore --jobs).
        #[arg(long, requires = "to", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
        jobs: u16,
        /// With --to: leave ownership and privileges out (a server without the same roles).
        #[arg(long, requires = "to")]
        no_owner: bool,
        /// Restore every backup of this run (`lifeboat list` shows runs) into --output-dir.
        #[arg(long, conflicts_with_all = ["id", "output", "db", "source"], requires = "output_dir")]
        run: Option<String>,
        /// With --run: the folder to restore into, one file or folder per source.
        #[arg(long, requires = "run")]
        output_dir: Option<PathBuf>,
        /// Replace this database in place (a safety backup of it is taken first).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Pick the backup among those of this database (default with --db: that database).
        #[arg(long)]
        source: Option<PathBuf>,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
        /// With --db: restore a backup taken of another database over it.
        #[arg(long)]
        force: bool,
    },
    /// Prove a backup restores: a SQLite/DuckDB image or a file tree into a throwaway folder
    /// (every object checked; SQLite's integrity_check), a PostgreSQL dump into a throwaway
    /// database (tables and row counts compared), then the check query; the restore time is
    /// recorded beside the backup.
    #[command(
        after_help = "Without --drill-server a PostgreSQL drill starts a throwaway cluster of the \
        backup's major version (initdb and pg_ctl must be installed). The check query is \
        `drill.query` in lifeboat.toml (SQLite and PostgreSQL); it passes when it runs and its \
        first value is not false, 0 or empty."
    )]
    Drill {
        /// Backup id, unambiguous prefix, or `latest`.
        id: String,
        /// Pick the backup among those of this database.
        #[arg(long)]
        source: Option<PathBuf>,
        /// A server where the drill may create and drop a database (postgres://USER@HOST/).
        /// Default: `drill.server` in lifeboat.toml, else a throwaway local cluster.
        #[arg(long, env = "LIFEBOAT_DRILL_SERVER", hide_env_values = true)]
        drill_server: Option<String>,
        /// Tables restored at once (pg_restore --jobs).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
        jobs: u16,
        /// The backup must be a physical base backup (restored into a throwaway server's
        /// data directory, the archived WAL replayed to its end); drilled that way anyway.
        #[arg(long, conflicts_with = "drill_server")]
        physical: bool,
    },
    /// Create, check or measure the repository.
    Repo {
        #[command(subcommand)]
        command: RepoCommand,
    },
    /// Copies of this repository on other targets.
    Replica {
        #[command(subcommand)]
        command: ReplicaCommand,
    },
    /// Bring replicas up to date (all of them, or --target URL).
    Sync {
        /// Only this replica (as `replica list` shows it).
        #[arg(long)]
        target: Option<String>,
    },
    /// Per target: how far behind, newest backup there, last success, last error.
    Status,
    /// Apply a retention policy: remove the backups it does not keep (then `prune`).
    Forget(Box<cli::retention::ForgetArgs>),
    /// Garbage collection: delete and repack data no backup needs.
    Prune(cli::retention::PruneArgs),
    /// Pin a backup: no retention policy ever removes it.
    Pin {
        /// Backup id, unambiguous prefix, or `latest`.
        id: String,
        /// Pick the backup among those of this database.
        #[arg(long)]
        source: Option<PathBuf>,
    },
    /// Unpin a backup.
    Unpin {
        /// Backup id, unambiguous prefix, or `latest`.
        id: String,
        /// Pick the backup among those of this database.
        #[arg(long)]
        source: Option<PathBuf>,
    },
    /// Passphrases and data keys of an encrypted repository.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Run the schedules of lifeboat.toml's [[source]] tables (backups, replication, verify,
    /// drills, health checks, retention), the HTTP API, /metrics and webhooks, in the
    /// foreground until SIGTERM (SIGHUP reloads the config). See docs/DAEMON.md.
    Daemon {
        /// Check the config (schedules, tokens, webhooks, secrets) and print what would run.
        #[arg(long)]
        check_config: bool,
    },
    /// Create a sample database and back it up, to see Lifeboat work end to end.
    Demo {
        /// Where to create the sample database. Default: ~/.local/share/lifeboat/demo.db
        #[arg(long)]
        db: Option<PathBuf>,
        /// Rows to add to it.
        #[arg(long, default_value_t = 50_000)]
        rows: u64,
    },
}

#[derive(Subcommand)]
enum RepoCommand {
    /// Create an empty repository (encrypted with --encrypt).
    Init {
        /// Encrypt every object; the passphrase comes from LIFEBOAT_PASSWORD,
        /// --password-file, --password-command, or is asked twice.
        #[arg(long)]
        encrypt: bool,
        /// Write-only: seal backups to this public key (from `key generate`). This host can
        /// back up and deduplicate, but only the identity can list, verify or restore.
        #[arg(long)]
        recipient: Option<String>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// What kind of repository this is: format, encryption, keys.
    Show,
    /// Check that every backup's objects are present and consistent.
    Check {
        /// Also read every pack and check every blob (reads the whole repository).
        #[arg(long)]
        read_data: bool,
    },
    /// Sizes, counts and ratios.
    Stats,
    /// How a stored object is sealed: envelope, kind, key generation and epoch (for
    /// diagnosing an encrypted repository; nothing is decrypted).
    Inspect {
        /// Object name, e.g. backups/01m8… or data/ab/ab12… (with --offset for a frame).
        object: String,
        /// Byte offset of the sealed object inside it (a frame in a pack).
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Move a repository made by an older Lifeboat to the current format (crash-safe; a
    /// write-only repository needs --identity). Older versions cannot open it afterwards.
    Upgrade,
    /// Put right damaged or missing packs, index files and manifests of this repository
    /// from its replicas, and index again from the packs what no index file locates.
    Repair {
        /// Read and report what would be repaired; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args)]
struct BackupArgs {
    /// What to back up: SQLite or DuckDB database files (known by their header), folders
    /// and files of configuration, or PostgreSQL databases (postgres://USER@HOST:PORT/DB).
    /// Several share one run id and one time.
    #[arg(required = true, value_name = "SOURCE")]
    sources: Vec<PathBuf>,
    /// The kind of every source (sqlite, duckdb, files) instead of finding it from the file.
    #[arg(long)]
    kind: Option<String>,
    /// Files backups: leave out paths matching this glob, relative to the folder (repeatable).
    #[arg(long = "exclude", value_name = "GLOB")]
    exclude: Vec<String>,
    /// Files backups: also redact the values of keys matching this pattern, besides the
    /// secret-looking keys redacted by default (repeatable; case-insensitive glob over key
    /// names, e.g. '*_dsn').
    #[arg(
        long = "redact",
        value_name = "KEY_PATTERN",
        conflicts_with = "no_redact"
    )]
    redact: Vec<String>,
    /// Files backups: store every file as it is, secrets included.
    #[arg(long)]
    no_redact: bool,
    /// PostgreSQL: dump only this schema (repeatable; pg_dump patterns).
    #[arg(long, value_name = "SCHEMA")]
    schema: Vec<String>,
    /// PostgreSQL: leave out this table (repeatable; pg_dump patterns such as 'audit.*').
    #[arg(long, value_name = "TABLE")]
    exclude_table: Vec<String>,
    /// PostgreSQL: tables dumped at once (pg_dump --jobs; each takes a connection).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// PostgreSQL: back up every database of the server the URI names (one backup each),
    /// plus its roles and tablespaces (pg_dumpall --globals-only).
    #[arg(long)]
    all_databases: bool,
    /// PostgreSQL: a physical base backup of the whole cluster (pg_basebackup; needs WAL
    /// archiving into this repository: archive_command = 'lifeboat wal-push %p').
    #[arg(long, conflicts_with_all = ["all_databases", "schema", "exclude_table"])]
    physical: bool,
    /// A note stored with the backup (shown by `list` and `show`).
    #[arg(long)]
    description: Option<String>,
    /// Tag the backup (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Why this backup is taken (pre-migration, pre-deploy, …): recorded in it, shown by
    /// list and the API, and a filter of both.
    #[arg(long, default_value = "manual")]
    trigger: String,
    /// zstd (default), gzip, lz4 or none.
    #[arg(long, env = "LIFEBOAT_COMPRESSION")]
    compression: Option<String>,
    /// Compression level (zstd 1-22, default 3; gzip 0-9, default 6). Without it: `level`
    /// from lifeboat.toml if the codec is the file's `compression`, else the codec's default.
    #[arg(long, env = "LIFEBOAT_LEVEL")]
    level: Option<i32>,
    /// Run the full verify before committing the backup.
    #[arg(long, conflicts_with = "no_verify")]
    verify: bool,
    /// Do not read back what was written.
    #[arg(long)]
    no_verify: bool,
    /// Record this time (RFC 3339) instead of now, e.g. when importing older history.
    #[arg(long, value_parser = parse_timestamp)]
    time: Option<jiff::Timestamp>,
    /// Create the repository if there is none at --repo yet (encrypted when a passphrase is
    /// configured). Only the default location is created without it.
    #[arg(long, env = "LIFEBOAT_INIT", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    init: bool,
}

fn parse_timestamp(s: &str) -> std::result::Result<jiff::Timestamp, String> {
    s.parse::<jiff::Timestamp>()
        .map_err(|e| format!("not an RFC 3339 time such as 2026-11-26T02:00:00Z: {e}"))
}

/// "Exit codes: 0 ok, 1 internal error, …", from the one list the code uses.
fn exit_codes_help() -> String {
    let codes: Vec<String> = lifeboat::error::EXIT_CODES
        .iter()
        .map(|(code, what)| format!("{code} {what}"))
        .collect();
    format!("Exit codes: {}", codes.join(", "))
}

pub(crate) struct Ctx {
    json: bool,
    /// `--config` as given (the restore_command of a restored data directory repeats it).
    config_path: Option<PathBuf>,
    pub(crate) file: FileConfig,
    /// Opens the repository (unlock, trust check, replicas) and records it afterwards.
    opener: lifeboat::engine::Opener,
}

impl Ctx {
    fn open_repo(&self) -> Result<Repository> {
        self.opener.open()
    }

    /// Open the repository in `storage` (a replica) with this command's keys and checks.
    pub(crate) fn open_at(&self, storage: Box<dyn Storage>) -> Result<Repository> {
        self.opener.open_at(storage)
    }

    /// Remember the repository as this command left it (new backups, keys, replicas).
    pub(crate) fn record(&self, repo: &Repository) {
        self.opener.record(repo)
    }

    /// Open the repository, creating it at the default location or with `--init`, and say
    /// when one was created.
    fn open_or_init_repo(&self, init: bool) -> Result<Repository> {
        let (repo, created) = self.opener.open_or_init(init)?;
        if let (Some(c), false) = (created, self.json) {
            eprintln!(
                "created {} repository at {}{}",
                if c.encrypted {
                    "an encrypted"
                } else {
                    "an unencrypted"
                },
                repo.location(),
                if c.default_location {
                    " (the default; set --repo or LIFEBOAT_REPO to choose)"
                } else {
                    ""
                }
            );
        }
        Ok(repo)
    }

    /// `LIFEBOAT_TRANSFERS`, else `transfers` in the file, else the default.
    fn transfers(&self) -> Result<usize> {
        lifeboat::engine::transfers(&self.file)
    }

    fn progress(&self) -> Progress {
        Progress::new(!self.json)
    }
}

/// Parse arguments; in `--json` mode a usage error is reported in the JSON error shape too.
fn parse_args() -> Cli {
    use clap::error::ErrorKind as K;
    let e = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    let wants_json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    if !wants_json
        || matches!(
            e.kind(),
            K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
        )
    {
        e.exit();
    }
    let text = e.render().to_string();
    let message = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string();
    let e = Error::usage(message).hint("run `lifeboat --help` for the usage");
    println!("{}", json!({ "error": error_json(&e) }));
    eprint!("{text}");
    std::process::exit(e.exit_code());
}

/// Whether the raw arguments are a `wal-fetch` call (PostgreSQL's restore_command), for an
/// error before they could be parsed: its first word that is not an option.
fn argv_is_wal_fetch() -> bool {
    const WITH_VALUE: [&str; 5] = [
        "--repo",
        "--config",
        "--password-file",
        "--password-command",
        "--identity",
    ];
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let a = a.to_string_lossy().into_owned();
        if WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            return a == "wal-fetch";
        }
    }
    false
}

/// wal-fetch's exit status for a failure: 128 + its code, above 125 whatever the code, which
/// PostgreSQL takes as fatal (on 1..=125 it would end recovery early and promote).
fn wal_fetch_failure(code: i32) -> i32 {
    if (126..=255).contains(&code) {
        code
    } else {
        128 + code.clamp(1, 127)
    }
}

fn main() {
    lifeboat::interrupt::install();
    let cli = match Cli::try_parse() {
        // (--help and --version are not failures.)
        Err(e) if e.use_stderr() && argv_is_wal_fetch() => {
            let _ = e.print();
            std::process::exit(wal_fetch_failure(e.exit_code()));
        }
        _ => parse_args(),
    };
    let wal_fetch = matches!(cli.command, Command::WalFetch { .. });
    if wal_fetch {
        std::panic::set_hook(Box::new(|info| {
            eprintln!("error: lifeboat wal-fetch failed: {info}");
            std::process::exit(wal_fetch_failure(ErrorKind::Internal.exit_code()));
        }));
    }
    cli::argv::hide_uri_passwords();
    let daemon = matches!(
        cli.command,
        Command::Daemon {
            check_config: false
        }
    );
    let filter = match cli.verbose {
        0 if daemon => "info",
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let json = cli.json;
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if json {
                println!("{}", json!({ "error": error_json(&e) }));
            }
            print_error(&e);
            if wal_fetch {
                wal_fetch_failure(e.exit_code())
            } else {
                e.exit_code()
            }
        }
    };
    // A command a signal stopped reports it the shell's way, whatever part of it failed.
    let code = match lifeboat::interrupt::received() {
        Some(_) if code != 0 => lifeboat::interrupt::exit_code(),
        _ => code,
    };
    // Work done but its report lost (say, stdout redirected to a full disk): not a success.
    let code = match OUTPUT_FAILED.get() {
        Some(e) if code == 0 => {
            let _ = writeln!(std::io::stderr(), "error: could not write the output: {e}");
            ErrorKind::Storage.exit_code()
        }
        _ => code,
    };
    // (wal-fetch's own answers are 0, 1 or already above 125; a lost output is a failure.)
    let code = if wal_fetch && code > 1 && code <= 125 {
        wal_fetch_failure(code)
    } else {
        code
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> Result<i32> {
    let (file, _) = config::load(cli.config.as_deref())?;
    let config_path = cli.config.clone();
    config::register_targets(&file.target);
    if let Some(t) = &file.temp_dir {
        if std::env::var_os("LIFEBOAT_TEMP_DIR").is_none() {
            std::env::set_var("LIFEBOAT_TEMP_DIR", t);
        }
    }
    let (location, origin) = config::repo_location(cli.repo.as_deref(), &file);
    let opener = lifeboat::engine::Opener {
        location,
        origin,
        passphrase: PassphraseSource {
            file: cli.password_file,
            command: cli.password_command,
            env_var: "LIFEBOAT_PASSWORD",
        },
        identity: cli.identity,
        accept_change: cli.accept_change,
        configured_replicas: file.replicas.clone(),
        configured_repo: file.repo.clone(),
        warn: Box::new(|notice| eprintln!("warning: {notice}")),
    };
    let ctx = Ctx {
        json: cli.json,
        config_path,
        file,
        opener,
    };
    match cli.command {
        Command::Backup(args) => cmd_backup(&ctx, args),
        Command::List { source, tag } => cmd_list(&ctx, source, tag),
        Command::Show { id, source } => cmd_show(&ctx, &id, source),
        Command::Verify { id, source, all } => cmd_verify(&ctx, id, source, all),
        Command::Replicate {
            databases,
            interval,
            base_every,
            init,
        } => cmd_replicate(&ctx, databases, interval, base_every, init),
        Command::Timeline { database } => match database.to_str() {
            Some(uri) if lifeboat::source::postgres::is_postgres_uri(uri) => {
                cli::pg_physical::cmd_pg_timeline(&ctx, uri)
            }
            _ => cmd_timeline(&ctx, &database),
        },
        Command::WalPush { path, pgdata } => cli::pg_physical::cmd_wal_push(&ctx, &path, pgdata),
        Command::WalFetch { file, dest, pgdata } => {
            cli::pg_physical::cmd_wal_fetch(&ctx, &file, &dest, pgdata)
        }
        Command::Restore {
            id,
            pgdata: Some(pgdata),
            at,
            lsn,
            xid,
            immediate,
            start,
            port,
            timeline,
            archive,
            source,
            ..
        } => cli::pg_physical::cmd_restore_pgdata(
            &ctx,
            cli::pg_physical::PgdataArgs {
                id,
                source: source.map(|s| s.display().to_string()),
                pgdata,
                at,
                lsn,
                xid,
                immediate,
                start,
                port,
                timeline,
                archive,
            },
        ),
        Command::Restore {
            id: Some(id),
            to: Some(to),
            source,
            create,
            clean,
            jobs,
            no_owner,
            yes,
            ..
        } => cmd_restore_pg(
            &ctx,
            &id,
            source,
            lifeboat::ops::pg::PgRestoreOptions {
                to,
                create,
                clean,
                jobs: jobs as usize,
                no_owner,
            },
            yes,
        ),
        Command::Drill {
            id,
            source,
            drill_server,
            jobs,
            physical,
        } => cmd_drill(&ctx, &id, source, drill_server, jobs as usize, physical),
        Command::Restore {
            id: Some(_),
            at: Some(_),
            ..
        } => Err(Error::usage(
            "--at picks the moment of a replicated SQLite database itself: give it without a backup id",
        )
        .hint("lifeboat restore --source DB --at TIME --output FILE; a PostgreSQL base backup with --at needs --pgdata DIR")),
        Command::Restore {
            at,
            output,
            db,
            source,
            yes,
            id: None,
            ..
        } if at.is_some() => cmd_restore_at(
            &ctx,
            at.as_deref().unwrap_or("latest"),
            RestoreTo { output, db },
            source,
            yes,
        ),
        Command::Restore {
            id,
            output,
            run,
            output_dir,
            db,
            source,
            yes,
            force,
            ..
        } => match (run, output_dir, id) {
            (Some(run), Some(dir), _) => cmd_restore_run(&ctx, &run, &dir, yes),
            (_, _, Some(id)) => cmd_restore(
                &ctx,
                &id,
                RestoreTo { output, db },
                source,
                Confirmation { yes, force },
            ),
            _ => Err(Error::usage(
                "restore needs a backup id, or --run ID --output-dir DIR",
            )),
        },
        Command::Repo { command } => match command {
            RepoCommand::Init {
                encrypt,
                recipient,
                kdf,
            } => cmd_init(&ctx, encrypt, recipient, kdf.params()),
            RepoCommand::Show => cmd_repo_show(&ctx),
            RepoCommand::Check { read_data } => cmd_check(&ctx, read_data),
            RepoCommand::Stats => cmd_stats(&ctx),
            RepoCommand::Upgrade => cmd_upgrade(&ctx),
            RepoCommand::Inspect { object, offset } => cmd_inspect(&ctx, &object, offset),
            RepoCommand::Repair { dry_run } => cli::repair::cmd_repair(&ctx, dry_run),
        },
        Command::Demo { db, rows } => cmd_demo(&ctx, db, rows),
        Command::Daemon { check_config } => cmd_daemon(&ctx, check_config),
        Command::Key { command } => cmd_key(&ctx, command),
        Command::Replica { command } => cmd_replica(&ctx, command),
        Command::Sync { target } => cmd_sync(&ctx, target),
        Command::Status => cmd_status(&ctx),
        Command::Forget(a) => cli::retention::cmd_forget(&ctx, *a),
        Command::Prune(a) => cli::retention::cmd_prune(&ctx, a),
        Command::Pin { id, source } => cli::retention::cmd_pin(&ctx, &id, source, true),
        Command::Unpin { id, source } => cli::retention::cmd_pin(&ctx, &id, source, false),
    }
}

fn cmd_daemon(ctx: &Ctx, check_config: bool) -> Result<i32> {
    let opts = lifeboat::daemon::Options {
        config_path: ctx.config_path.clone(),
        repo: (ctx.opener.origin == config::Origin::FlagOrEnv).then(|| ctx.opener.location.clone()),
        passphrase: ctx.opener.passphrase.clone(),
        identity: ctx.opener.identity.clone(),
        accept_change: ctx.opener.accept_change,
    };
    if check_config {
        print!("{}", lifeboat::daemon::check_config(&opts)?);
        println!("config OK");
        return Ok(0);
    }
    lifeboat::daemon::run(opts)?;
    Ok(0)
}

fn compression(ctx: &Ctx, codec: Option<String>, level: Option<i32>) -> Result<Compression> {
    lifeboat::engine::compression(&ctx.file, codec.as_deref(), level)
}

fn verify_level(ctx: &Ctx, verify: bool, no_verify: bool) -> Result<VerifyLevel> {
    lifeboat::engine::verify_level(&ctx.file, verify, no_verify)
}

fn cmd_backup(ctx: &Ctx, a: BackupArgs) -> Result<i32> {
    let kind = a
        .kind
        .as_deref()
        .map(lifeboat::source::Kind::parse)
        .transpose()?;
    let files = lifeboat::source::files::FilesOptions {
        exclude: a.exclude,
        redact: a.redact,
        no_redact: a.no_redact,
    };
    let source_options = lifeboat::source::SourceOptions {
        files,
        postgres: lifeboat::source::postgres::PgOptions {
            schemas: a.schema,
            exclude_tables: a.exclude_table,
            jobs: a.jobs as usize,
        },
        postgres_globals: false,
        postgres_physical: a.physical,
    };
    if a.physical {
        let uris = a.sources.iter().all(|s| {
            s.to_str()
                .is_some_and(lifeboat::source::postgres::is_postgres_uri)
        });
        if !uris {
            return Err(lifeboat::error::Error::usage(
                "--physical backs up a PostgreSQL cluster, given as postgres://USER@HOST:PORT/",
            ));
        }
    }
    // --all-databases: each database of the server, then its globals.
    let mut sources: Vec<(PathBuf, bool)> = Vec::new();
    for source in a.sources {
        if a.all_databases {
            let uri = source
                .to_str()
                .filter(|s| lifeboat::source::postgres::is_postgres_uri(s));
            let Some(uri) = uri else {
                return Err(lifeboat::error::Error::usage(format!(
                    "--all-databases needs a PostgreSQL server's URI, not {}",
                    source.display()
                ))
                .hint("write it as postgres://USER@HOST:PORT/"));
            };
            for db in lifeboat::source::postgres::list_databases(uri)? {
                sources.push((PathBuf::from(db), false));
            }
            sources.push((source.clone(), true));
        } else {
            sources.push((source, false));
        }
    }
    // Several sources are one run: one id and one time for all of them.
    let several = sources.len() > 1;
    let time = match (a.time, several) {
        (Some(t), _) => Some(t),
        (None, true) => Some(jiff::Timestamp::now()),
        (None, false) => None,
    };
    let run = several
        .then(|| lifeboat::id::new_backup_id(time.map_or(0, |t| t.as_millisecond().max(0) as u64)));
    let level = verify_level(ctx, a.verify, a.no_verify)?;
    lifeboat::ops::backup::check_label("--trigger", &a.trigger)?;
    let mut runs = Vec::new();
    for (source, globals) in sources {
        // Check each source before creating a repository for it.
        let found = match kind {
            Some(k) => k,
            None => lifeboat::source::detect(&source)?,
        };
        if found == lifeboat::source::Kind::Sqlite {
            lifeboat::source::sqlite::check_is_sqlite(&source)?;
        }
        runs.push(BackupOptions {
            database: source,
            kind: Some(found),
            source: lifeboat::source::SourceOptions {
                postgres_globals: globals,
                ..source_options.clone()
            },
            run: run.clone(),
            description: a.description.clone(),
            tags: a.tags.clone(),
            trigger: a.trigger.clone(),
            compression: compression(ctx, a.compression.clone(), a.level)?,
            verify: level,
            progress: ctx.progress(),
            transfers: ctx.transfers()?,
            time,
        });
    }
    let repo = ctx.open_or_init_repo(a.init)?;
    let done = lifeboat::engine::backup_then_replicate(&ctx.opener, &repo, &runs)?;
    print_backups(ctx, &repo, &done, level, run.as_deref());
    finish(ctx, done.failure)
}

/// Print a run's backups: one object (or block) for one source, a run of several as
/// `{"run": ID, "backups": [...]}`.
fn print_backups(
    ctx: &Ctx,
    repo: &Repository,
    done: &lifeboat::engine::BackedUp,
    level: VerifyLevel,
    run: Option<&str>,
) {
    let Some(run) = run else {
        for out in &done.outcomes {
            print_backup(
                ctx,
                repo,
                out,
                level,
                &done.replication,
                done.took,
                &done.failure,
            );
        }
        return;
    };
    if ctx.json {
        let backups: Vec<serde_json::Value> = done
            .outcomes
            .iter()
            .map(|out| backup_json(repo, out, level))
            .collect();
        let replication_ms: u64 = done.replication.iter().map(|r| r.duration_ms).sum();
        println!(
            "{}",
            json!({
                "run": run, "repository": repo.location(), "backups": backups,
                "duration_ms": done.took.as_millis() as u64,
                "replication_duration_ms": replication_ms,
                "replication": done.replication,
                "error": done.failure.as_ref().map(error_json),
            })
        );
        return;
    }
    println!(
        "run {run}: {}",
        count(done.outcomes.len(), "backup", "backups")
    );
    for out in &done.outcomes {
        // Each its own time; the run's whole time is the last line.
        let took = std::time::Duration::from_millis(out.manifest.duration_ms);
        print_backup(ctx, repo, out, level, &[], took, &None);
    }
    print_replication(&done.replication);
    println!("run took {:.2} s", done.took.as_secs_f64());
}

/// One line per replica brought up to date after a backup.
fn print_replication(replication: &[sync::SyncReport]) {
    for r in replication {
        match &r.error {
            None => println!(
                "  replica      {}: {} objects, {} copied{}",
                r.target,
                r.copied_objects,
                bytes(r.copied_bytes),
                if r.key_files_removed.is_empty() {
                    String::new()
                } else {
                    format!("; removed key files {}", r.key_files_removed.join(", "))
                }
            ),
            Some(e) => println!("  replica      {}: FAILED ({e})", r.target),
        }
    }
}

fn print_backup(
    ctx: &Ctx,
    repo: &Repository,
    out: &lifeboat::ops::backup::BackupOutcome,
    level: VerifyLevel,
    replication: &[sync::SyncReport],
    took: std::time::Duration,
    failure: &Option<Error>,
) {
    let m = &out.manifest;
    let s = &m.stored;
    for w in &out.warnings {
        eprintln!("warning: {w}");
    }
    // Pages in the database per page stored; raw bytes written per byte stored (new data
    // plus this backup's page lists and index). Both are None (null) when nothing new was
    // stored: there is no ratio to give.
    let dedup = ratio(s.new_blobs + s.reused_blobs, s.new_blobs);
    let comp = ratio(s.new_raw_bytes, s.new_stored_bytes);
    let replication_ms: u64 = replication.iter().map(|r| r.duration_ms).sum();
    if ctx.json {
        let mut v = backup_json(repo, out, level);
        if let Some(o) = v.as_object_mut() {
            o.insert("duration_ms".into(), json!(took.as_millis() as u64));
            o.insert("replication_duration_ms".into(), json!(replication_ms));
            o.insert("replication".into(), json!(replication));
            o.insert("error".into(), json!(failure.as_ref().map(error_json)));
        }
        println!("{v}");
        return;
    }
    println!("backup {} of {} ({})", m.id, m.source.path, m.source.kind);
    println!("  repository   {}", repo.location());
    println!("  {:<12} {}", m.source.kind, describe_content(m));
    if let Some(f) = &m.files {
        for r in &f.redacted {
            println!("  redacted     {}", redacted_line(r));
        }
    }
    println!(
        "  new data     {} blobs new, {} reused; {} stored",
        s.new_blobs,
        s.reused_blobs,
        bytes(s.new_stored_bytes)
    );
    if s.new_blobs == 0 {
        println!("  ratios       nothing new to store: everything was already in the repository");
    } else {
        println!(
            "  ratios       dedup {}, compression {} ({})",
            times(dedup),
            times(comp),
            s.compression
        );
    }
    println!("  repository   {} in total", bytes(out.repo_stored_bytes));
    if let Some(r) = &out.verify {
        print_verify(r);
    } else {
        println!(
            "  checked      {}",
            match level {
                VerifyLevel::None => "nothing (--no-verify)",
                _ => "every new object read back, hashes match",
            }
        );
    }
    print_replication(replication);
    if replication.is_empty() {
        println!("  took         {:.2} s", took.as_secs_f64());
    } else {
        println!(
            "  took         {:.2} s (backup {:.2} s, replication {:.2} s)",
            took.as_secs_f64(),
            m.duration_ms as f64 / 1000.0,
            replication_ms as f64 / 1000.0
        );
    }
}

fn verify_name(level: VerifyLevel) -> &'static str {
    match level {
        VerifyLevel::None => "none",
        VerifyLevel::Written => "written",
        VerifyLevel::Full => "full",
    }
}

fn cmd_list(ctx: &Ctx, source: Option<PathBuf>, tag: Option<String>) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let source = source.map(|s| source_key(&s));
    let backups: Vec<Manifest> = repo
        .list_backups()?
        .into_iter()
        .filter(|m| source.as_ref().is_none_or(|s| &m.source.path == s))
        .filter(|m| tag.as_ref().is_none_or(|t| m.tags.contains(t)))
        .collect();
    let pinned = lifeboat::ops::forget::pinned_ids(&repo)?;
    let verified = lifeboat::ops::forget::verification_records(&repo)?;
    ctx.record(&repo);
    if ctx.json {
        let rows: Vec<_> = backups
            .iter()
            .map(|m| {
                let mut row = summary_json(m);
                row["pinned"] = json!(pinned.contains(&m.id));
                row["verified"] = verified.get(&m.id).cloned().unwrap_or(json!(null));
                row
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(0);
    }
    // The RUN column only when some backups were taken together; theirs sort together, as
    // their ids share the run's time.
    let runs = backups.iter().any(|m| m.run.is_some());
    // The VERIFIED column only when some backup was verified or drilled.
    let any_verified = backups.iter().any(|m| verified.contains_key(&m.id));
    let rows: Vec<Vec<String>> = backups
        .iter()
        .map(|m| {
            let mut tags = m.tags.clone();
            if pinned.contains(&m.id) {
                tags.insert(0, "pinned".into());
            }
            let mut row = vec![
                m.id.clone(),
                m.time.get(..19).unwrap_or(&m.time).replace('T', " "),
            ];
            if runs {
                row.push(m.run.clone().unwrap_or_default());
            }
            row.extend([
                m.source.kind.clone(),
                bytes(m.logical_bytes()),
                bytes(m.stored.new_stored_bytes),
            ]);
            if any_verified {
                row.push(verified.get(&m.id).map(verified_cell).unwrap_or_default());
            }
            row.extend([
                printable(&tags.join(",")),
                printable(&m.source.path),
                printable(m.description.as_deref().unwrap_or_default()),
            ]);
            row
        })
        .collect();
    let mut header: Vec<String> = vec!["ID".into(), "TIME (UTC)".into()];
    if runs {
        header.push("RUN".into());
    }
    header.extend(["KIND", "SIZE", "STORED"].map(String::from));
    if any_verified {
        header.push("VERIFIED".into());
    }
    header.extend(["TAGS", "SOURCE", "DESCRIPTION"].map(String::from));
    let right_aligned: Vec<bool> = header
        .iter()
        .map(|h| h == "SIZE" || h == "STORED")
        .collect();
    // Columns as wide as their widest cell: long paths must not push the others out of line.
    let mut widths = vec![0usize; header.len()];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                line.push_str("  ");
            }
            if right_aligned[i] {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.push_str(&" ".repeat(pad));
                }
            }
        }
        println!("{}", line.trim_end());
    }
    println!(
        "{} in {}",
        count(backups.len(), "backup", "backups"),
        repo.location()
    );
    Ok(0)
}

/// A text from the repository or from file names as a terminal shows it: control
/// characters (a newline in a file name, an escape sequence planted in a repository) are
/// written as escapes, never acted on.
fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// "config.toml: database.password, database.dsn".
fn redacted_line(r: &lifeboat::repo::manifest::RedactedFile) -> String {
    let keys: Vec<String> = r.keys.iter().map(|k| printable(k)).collect();
    format!("{}: {}", printable(&r.path), keys.join(", "))
}

/// "1 backup", "2 backups".
pub(crate) fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn summary_json(m: &Manifest) -> serde_json::Value {
    json!({
        "id": m.id, "time": m.time, "source": m.source.path, "kind": m.source.kind,
        "host": m.source.host, "run": m.run, "tags": m.tags, "description": m.description,
        "trigger": m.trigger, "logical_bytes": m.logical_bytes(),
        "new_stored_bytes": m.stored.new_stored_bytes, "sha256": m.image_sha256(),
    })
}

/// One backup as `backup --json` prints it.
fn backup_json(
    repo: &Repository,
    out: &lifeboat::ops::backup::BackupOutcome,
    level: VerifyLevel,
) -> serde_json::Value {
    let m = &out.manifest;
    let s = &m.stored;
    let (page_size, page_count) = match &m.sqlite {
        Some(d) => (Some(d.page_size), Some(d.page_count)),
        None => (None, None),
    };
    json!({
        "id": m.id, "repository": repo.location(), "source": m.source.path,
        "kind": m.source.kind, "run": m.run,
        "time": m.time, "logical_bytes": m.logical_bytes(),
        "page_size": page_size, "page_count": page_count,
        "content": m.content.kind(),
        "new_blobs": s.new_blobs, "reused_blobs": s.reused_blobs,
        "new_raw_bytes": s.new_raw_bytes, "new_stored_bytes": s.new_stored_bytes,
        "repo_stored_bytes": out.repo_stored_bytes,
        "dedup_ratio": ratio(s.new_blobs + s.reused_blobs, s.new_blobs),
        "compression_ratio": ratio(s.new_raw_bytes, s.new_stored_bytes),
        "backup_duration_ms": m.duration_ms,
        "sha256": m.image_sha256(), "verify": verify_name(level),
        "verify_report": out.verify, "warnings": out.warnings,
        "redacted": m.files.as_ref().map(|f| &f.redacted),
    })
}

/// "48.0 MiB (12288 pages of 4096 B, 3 tables)", by kind.
fn describe_content(m: &Manifest) -> String {
    if let Some(d) = &m.sqlite {
        return format!(
            "{} ({} pages of {} B, {} tables)",
            bytes(d.logical_bytes),
            d.page_count,
            d.page_size,
            d.tables.len()
        );
    }
    if let Some(d) = &m.duckdb {
        return format!(
            "{} ({} blocks of {} B, {} tables, storage version {})",
            bytes(d.logical_bytes),
            m.content.items(),
            d.block_size,
            d.tables.len(),
            d.storage_version
        );
    }
    if let Some(f) = &m.files {
        return format!(
            "{} in {} ({} folders, {} links{})",
            bytes(f.bytes),
            count(f.files as usize, "file", "files"),
            f.dirs,
            f.symlinks,
            if f.redacted.is_empty() {
                String::new()
            } else {
                format!(
                    "; secrets redacted in {}",
                    count(f.redacted.len(), "file", "files")
                )
            }
        );
    }
    format!(
        "{} of '{}' content",
        bytes(m.logical_bytes()),
        m.content.kind()
    )
}

/// A verification record in a word or two: the day it passed, and a drill's restore time.
fn verified_cell(record: &serde_json::Value) -> String {
    let day = record["verified"]
        .as_str()
        .and_then(|t| t.get(..10))
        .unwrap_or("yes")
        .to_string();
    match record["rto_ms"].as_u64() {
        Some(ms) => format!("{day} drill {:.1}s", ms as f64 / 1000.0),
        None => day,
    }
}

fn cmd_show(ctx: &Ctx, id: &str, source: Option<PathBuf>) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let source = source.as_deref().map(source_key);
    let m = repo.resolve(id, source.as_deref())?;
    let verified = lifeboat::ops::forget::verification_records(&repo)?.remove(&m.id);
    ctx.record(&repo);
    if ctx.json {
        let mut value = serde_json::to_value(&m).map_err(|e| Error::internal(e.to_string()))?;
        if let (Some(v), Some(obj)) = (&verified, value.as_object_mut()) {
            obj.insert("verified".into(), v.clone());
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&value).map_err(|e| Error::internal(e.to_string()))?
        );
        return Ok(0);
    }
    println!("backup       {}", m.id);
    println!("time         {}", m.time);
    println!(
        "source       {} ({}) on {}",
        m.source.path, m.source.kind, m.source.host
    );
    println!("trigger      {}", m.trigger);
    if lifeboat::ops::forget::is_pinned(&repo, &m.id)? {
        println!("pinned       yes (no retention policy removes it)");
    }
    if let Some(v) = &m.verification {
        println!("checked      {v} (at backup time)");
    }
    if let Some(v) = &verified {
        let mut line = format!("verified     {}", v["verified"].as_str().unwrap_or("?"));
        if let Some(ms) = v["rto_ms"].as_u64() {
            line.push_str(&format!(
                " by a drill: restored in {:.1} s into {}",
                ms as f64 / 1000.0,
                v["restored_into"].as_str().unwrap_or("?")
            ));
        }
        println!("{line}");
    }
    if let Some(d) = &m.description {
        println!("description  {}", printable(d));
    }
    if !m.tags.is_empty() {
        println!("tags         {}", printable(&m.tags.join(", ")));
    }
    if let Some(run) = &m.run {
        println!("run          {run}");
    }
    println!("{:<12} {}", m.source.kind, describe_content(&m));
    if let Some(d) = &m.sqlite {
        println!(
            "journal      {} (SQLite {})",
            d.journal_mode, d.sqlite_version
        );
        println!("schema hash  {}", d.schema_hash);
    }
    if let Some(d) = &m.duckdb {
        println!("duckdb       {}", d.duckdb_version);
    }
    if let Some(p) = &m.postgres {
        println!(
            "server       PostgreSQL {} at {}",
            p.server_version, p.server
        );
        if let Some(ph) = &p.physical {
            println!(
                "base backup  pg_basebackup {}, {} files ({})",
                p.client_version,
                ph.files,
                bytes(ph.data_bytes)
            );
            println!("system id    {}", ph.system_id);
            println!(
                "WAL          timeline {}, {} .. {} ({} .. {}), checkpoint {}",
                ph.timeline,
                ph.start_lsn,
                ph.stop_lsn,
                ph.start_wal,
                ph.stop_wal,
                ph.checkpoint_lsn
            );
            println!(
                "restorable   from {} (the backup's end); `lifeboat timeline {}` shows until when",
                ph.stop_time, m.source.path
            );
            for t in &ph.tablespaces {
                println!("tablespace   {} at {}", t.oid, t.location);
            }
        } else if p.dump_format == "globals" {
            println!(
                "dumped by    pg_dumpall {} (roles and tablespaces)",
                p.client_version
            );
        } else {
            println!(
                "dumped by    pg_dump {} ({} format)",
                p.client_version, p.dump_format
            );
            println!(
                "database     {} ({} on the server)",
                p.database,
                bytes(p.database_bytes)
            );
            println!("schema hash  {}", p.schema_sha256);
            println!("large objs   {}", p.large_objects);
        }
        if !p.schemas.is_empty() {
            println!("schemas      {}", p.schemas.join(", "));
        }
        if !p.excluded_tables.is_empty() {
            println!("excluded     {}", p.excluded_tables.join(", "));
        }
    }
    if let Some(sha) = m.image_sha256() {
        println!("sha256       {sha}");
    }
    if let Some(tables) = m.tables().filter(|t| !t.is_empty() || m.postgres.is_none()) {
        println!("tables");
        for (t, n) in tables {
            println!("  {t:<30} {n:>12} rows");
        }
    }
    if let Some(f) = &m.files {
        match &f.redaction {
            Some(patterns) => println!("redaction    keys like {}", patterns.join(", ")),
            None => println!("redaction    off (--no-redact): stored as they were"),
        }
        if !f.excluded.is_empty() {
            println!("excluded     {}", f.excluded.join(", "));
        }
        for r in &f.redacted {
            println!("  redacted   {}", redacted_line(r));
        }
    }
    let s = &m.stored;
    println!(
        "stored       {} new ({} new blobs, {} reused), {} level {}",
        bytes(s.new_stored_bytes),
        s.new_blobs,
        s.reused_blobs,
        s.compression,
        s.level
    );
    println!(
        "took         {:.2} s with lifeboat {}",
        m.duration_ms as f64 / 1000.0,
        m.tool_version
    );
    Ok(0)
}

fn print_verify(r: &VerifyReport) {
    for s in &r.steps {
        println!(
            "  {} {:<28} {}",
            if s.ok { "✓" } else { "✗" },
            s.name,
            s.detail
        );
    }
}

fn cmd_verify(ctx: &Ctx, id: Option<String>, source: Option<PathBuf>, all: bool) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let source = source.as_deref().map(source_key);
    let of_source = |m: &Manifest| source.as_ref().is_none_or(|s| &m.source.path == s);
    let targets: Vec<Manifest> = match (&id, all) {
        (Some(id), _) => vec![repo.resolve(id, source.as_deref())?],
        (None, true) => repo.list_backups()?.into_iter().filter(of_source).collect(),
        // The newest backup of every database, not just the newest of all.
        (None, false) => repo
            .latest_per_source()?
            .into_iter()
            .filter(of_source)
            .collect(),
    };
    if targets.is_empty() {
        return Err(Error::not_found(match &source {
            Some(s) => format!("no backup of {s} in {}", repo.location()),
            None => format!("the repository at {} has no backups", repo.location()),
        })
        .hint("`lifeboat list` shows the backups in this repository"));
    }
    let several = targets.len() > 1;
    ctx.record(&repo);
    let progress = ctx.progress();
    let reports = verify_backups(&repo, &targets, &progress, &mut |event| {
        if ctx.json {
            return;
        }
        match event {
            Progressed::Starting(m) => {
                println!("verify {} of {} ({})", m.id, m.source.path, m.time)
            }
            Progressed::Verified(r) => {
                print_verify(r);
                println!(
                    "  {}",
                    if r.ok {
                        "OK: this backup restores"
                    } else {
                        "FAILED"
                    }
                );
            }
        }
    })?;
    let failed = reports.iter().filter(|r| !r.ok).count();
    if ctx.json {
        println!("{}", json!({"ok": failed == 0, "backups": reports}));
    } else if several {
        println!(
            "{} of {} backups verified",
            reports.len() - failed,
            reports.len()
        );
    }
    Ok(if failed == 0 {
        0
    } else {
        ErrorKind::Integrity.exit_code()
    })
}

/// Ask on the terminal; without one, fail with `refusal` and `hint` (the flag that agrees).
fn confirm(question: &str, refusal: &str, hint: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::usage(refusal.to_string()).hint(hint.to_string()));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| Error::internal(e.to_string()))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Aborted,
            "cancelled; nothing was changed",
        ))
    }
}

/// Where `restore` writes: a new file, or over a database.
struct RestoreTo {
    output: Option<PathBuf>,
    db: Option<PathBuf>,
}

/// What the user agreed to in advance: `--yes` (replace the database), `--force` (even with
/// a backup of another database).
struct Confirmation {
    yes: bool,
    force: bool,
}

fn cmd_restore(
    ctx: &Ctx,
    id: &str,
    to: RestoreTo,
    source: Option<PathBuf>,
    agreed: Confirmation,
) -> Result<i32> {
    // What is wrong with the target is said first, whatever the backup.
    if let Some(db) = &to.db {
        restore::check_in_place_target(db)?;
        if db.exists() {
            restore::ensure_not_in_use(db)?;
        }
    }
    let repo = ctx.open_repo()?;
    // `latest --db app.db` means the newest backup of app.db, not of whatever came last.
    let source = source
        .as_deref()
        .or(to.db.as_deref().filter(|_| id == "latest"))
        .map(source_key);
    let m = repo.resolve(id, source.as_deref())?;
    ctx.record(&repo);
    if !ctx.json && !is_full_id(id, &m) {
        eprintln!(
            "using backup {} of {}, taken {} ({} ago), {}",
            m.id,
            source_and_host(&m),
            m.time,
            human_age(age_of(&m.time)),
            bytes(m.logical_bytes())
        );
    }
    let progress = ctx.progress();
    if lifeboat::ops::pg_physical::physical_info(&m).is_ok() {
        return Err(Error::usage(format!(
            "backup {} is a physical base backup of the PostgreSQL cluster {}: it is restored as a data directory",
            m.id, m.source.path
        ))
        .hint("give --pgdata DIR (a new or empty folder), with --at TIME, --lsn, --xid or --at latest"));
    }
    if m.postgres.is_some() {
        return restore_pg_archive(ctx, &repo, &m, to, agreed.yes, &progress);
    }
    let to = match (to.output, to.db) {
        (Some(path), _) => Destination::New {
            path,
            overwrite: agreed.yes,
        },
        (None, Some(db)) if matches!(m.content, Content::Tree { .. }) => {
            return Err(Error::usage(format!(
                "backup {} is of files ({}), which are restored to a folder, not over {}",
                m.id,
                m.source.path,
                db.display()
            ))
            .hint("give --output DIR (a new folder; with --yes an existing one, whose files of the same names are replaced)"))
        }
        (None, Some(db)) => {
            let target = source_key(&db);
            // A new file holds nothing to lose; an existing one may be another database.
            if db.exists() && m.source.path != target && !agreed.force {
                // Putting one database's backup over another is almost always a slip.
                confirm(
                    &format!(
                        "Backup {} is of {}, not of {target}. Replace {target} with it anyway?",
                        m.id, m.source.path
                    ),
                    &format!("backup {} is of {}, not of {target}", m.id, m.source.path),
                    "add --force (with --yes) to restore it over another database without being asked; \
                     or pick a backup of this one: `lifeboat list --source PATH`",
                )?;
            } else if !agreed.yes {
                confirm(
                    &format!(
                        "Replace {} with backup {} of {} taken {} ({} ago, {})? A safety backup \
                         is taken first.",
                        restore::describe_target(&db),
                        m.id,
                        source_and_host(&m),
                        m.time,
                        human_age(age_of(&m.time)),
                        bytes(m.logical_bytes())
                    ),
                    "an in-place restore replaces the database: it needs confirmation",
                    "add --yes to go on without asking",
                )?;
            }
            Destination::InPlace {
                db,
                compression: compression(ctx, None, None)?,
            }
        }
        (None, None) => {
            return Err(Error::usage("restore needs a place to write the backup to")
                .hint("give --output FILE (a new file) or --db FILE (replace that database)"))
        }
    };
    let out = lifeboat::engine::restore(&repo, &m, to, &progress)?;
    ctx.record(&repo);
    if ctx.json {
        println!("{}", restored_json(&m, &out));
    } else {
        print_restored(&m, &out);
    }
    Ok(0)
}

/// A PostgreSQL backup with --output: a tar archive pg_restore reads (or, for globals, their
/// SQL script).
fn restore_pg_archive(
    ctx: &Ctx,
    repo: &Repository,
    m: &Manifest,
    to: RestoreTo,
    yes: bool,
    progress: &lifeboat::progress::Progress,
) -> Result<i32> {
    let Some(output) = to.output else {
        return Err(Error::usage(format!(
            "backup {} is of the PostgreSQL database {}, which is restored into a database, not over a file",
            m.id, m.source.path
        ))
        .hint("give --to postgres://USER@HOST:PORT/DB (with --create for a new database), or --output FILE for an archive pg_restore reads"));
    };
    let started = std::time::Instant::now();
    let written = lifeboat::ops::pg::write_archive(repo, m, &output, yes, progress)?;
    ctx.record(repo);
    let globals = m
        .postgres
        .as_ref()
        .is_some_and(|p| p.dump_format == "globals");
    if ctx.json {
        println!(
            "{}",
            json!({
                "id": m.id, "source": m.source.path, "output": output,
                "format": if globals { "sql" } else { "tar" },
                "bytes": written, "duration_ms": started.elapsed().as_millis() as u64,
            })
        );
    } else if globals {
        println!(
            "wrote the roles and tablespaces of backup {} to {} ({}; apply with psql -f)",
            m.id,
            output.display(),
            bytes(written)
        );
    } else {
        println!(
            "wrote backup {} of {} to {} ({}, a pg_dump tar archive; restore it with pg_restore -d DB {})",
            m.id,
            m.source.path,
            output.display(),
            bytes(written),
            output.display()
        );
    }
    Ok(0)
}

fn cmd_restore_pg(
    ctx: &Ctx,
    id: &str,
    source: Option<PathBuf>,
    opts: lifeboat::ops::pg::PgRestoreOptions,
    yes: bool,
) -> Result<i32> {
    if opts.clean && !yes {
        confirm(
            &format!(
                "Drop the objects the backup holds from {} and restore them?",
                lifeboat::source::postgres::conn::redact_uri_text(&opts.to)
            ),
            "--clean drops tables from the target database: it needs confirmation",
            "add --yes to go on without asking",
        )?;
    }
    let repo = ctx.open_repo()?;
    let source = source.as_deref().map(source_key);
    let m = repo.resolve(id, source.as_deref())?;
    ctx.record(&repo);
    let globals = m
        .postgres
        .as_ref()
        .is_some_and(|p| p.dump_format == "globals");
    if globals && !yes {
        // It sets every role's attributes and password back to what they were then.
        confirm(
            &format!(
                "Set the roles and tablespaces of {} back to backup {} (taken {}), passwords included?",
                lifeboat::source::postgres::conn::redact_uri_text(&opts.to),
                m.id,
                m.time
            ),
            "restoring roles puts their old passwords back: it needs confirmation",
            "add --yes to go on without asking",
        )?;
    }
    let out = lifeboat::ops::pg::restore_to_database(&repo, &m, &opts, &ctx.progress())?;
    if ctx.json {
        println!(
            "{}",
            json!({
                "id": m.id, "source": m.source.path, "restored": out,
            })
        );
    } else {
        println!(
            "restored backup {} of {} into {}{} ({} tables, {} rows, every chunk checked) in {:.1} s",
            m.id,
            m.source.path,
            out.target,
            if out.created { " (created)" } else { "" },
            out.tables,
            out.rows,
            out.restore_ms as f64 / 1000.0
        );
        for w in &out.warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(0)
}

fn cmd_drill(
    ctx: &Ctx,
    id: &str,
    source: Option<PathBuf>,
    server: Option<String>,
    jobs: usize,
    physical: bool,
) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let source = source.as_deref().map(source_key);
    let m = repo.resolve(id, source.as_deref())?;
    let drill = ctx.file.drill.clone().unwrap_or_default();
    let is_physical = lifeboat::ops::pg_physical::physical_info(&m).is_ok();
    if physical && !is_physical {
        lifeboat::ops::pg_physical::physical_info(&m)?;
    }
    let opts = lifeboat::ops::pg::DrillOptions {
        server: server.or(drill.server),
        query: drill.query,
        jobs,
    };
    if !ctx.json {
        println!("drill {} of {} ({})", m.id, m.source.path, m.time);
    }
    let report = lifeboat::ops::drill::drill(&repo, &m, &opts, &ctx.progress())?;
    ctx.record(&repo);
    if ctx.json {
        println!("{}", json!(report));
    } else {
        println!("  restored into {}", report.restored_into);
        for step in &report.check.steps {
            println!(
                "  {} {:<28} {}",
                if step.ok { "ok  " } else { "FAIL" },
                step.name,
                step.detail
            );
        }
        if report.ok() {
            println!(
                "  OK: this backup restores (restore time {:.1} s, recorded)",
                report.rto_ms as f64 / 1000.0
            );
        } else {
            println!(
                "  FAILED at: {}",
                report.first_failure().unwrap_or("unknown step")
            );
        }
    }
    Ok(if report.ok() {
        0
    } else {
        ErrorKind::Integrity.exit_code()
    })
}

/// `1s`, `500ms`, `2m`, `1h`, `1d`, or a number of seconds.
fn cmd_replicate(
    ctx: &Ctx,
    databases: Vec<PathBuf>,
    interval: Option<std::time::Duration>,
    base_every: Option<std::time::Duration>,
    init: bool,
) -> Result<i32> {
    let section = ctx.file.replicate.clone().unwrap_or_default();
    let setting = |flag: Option<std::time::Duration>,
                   file: Option<&str>,
                   key: &str,
                   default: std::time::Duration|
     -> Result<std::time::Duration> {
        match (flag, file) {
            (Some(d), _) => Ok(d),
            (None, Some(text)) => config::parse_duration(text)
                .map_err(|e| Error::usage(format!("{key} in [replicate] of the config file: {e}"))),
            (None, None) => Ok(default),
        }
    };
    let mut sources = Vec::new();
    for db in databases {
        lifeboat::source::sqlite::check_is_sqlite(&db)?;
        let (i, b) = section.for_source(&source_key(&db));
        sources.push(lifeboat::wal::replicate::SourceSettings {
            interval: setting(interval, i, "interval", std::time::Duration::from_secs(1))?,
            base_every: setting(
                base_every,
                b,
                "base_every",
                std::time::Duration::from_secs(3600),
            )?,
            path: db,
        });
    }
    let repo = ctx.open_or_init_repo(init)?;
    let opts = lifeboat::wal::replicate::ReplicateOptions {
        databases: sources,
        compression: compression(ctx, None, None)?,
        verify: verify_level(ctx, false, false)?,
        transfers: ctx.transfers()?,
        configured_replicas: ctx.opener.configured_replicas.clone(),
        say: std::sync::Arc::new(|m: &str| eprintln!("{m}")),
    };
    let reports = lifeboat::wal::replicate::replicate(&repo, &opts)?;
    ctx.record(&repo);
    for r in &reports {
        if ctx.json {
            println!("{}", json!(r));
        } else {
            println!(
                "{}: stream {} ({}), {} in {} ({}), {} base{}, {} shipped again at start",
                printable(&r.source),
                r.stream,
                r.start,
                count(r.commits as usize, "commit", "commits"),
                count(r.segments as usize, "segment", "segments"),
                bytes(r.bytes_shipped),
                r.bases,
                if r.bases == 1 { "" } else { "s" },
                bytes(r.reshipped_bytes)
            );
        }
    }
    Ok(0)
}

fn cmd_timeline(ctx: &Ctx, database: &Path) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let t = lifeboat::wal::pitr::timeline(&repo, &source_key(database))?;
    ctx.record(&repo);
    if ctx.json {
        println!("{}", json!(t));
        return Ok(0);
    }
    if t.streams.is_empty() {
        return Err(Error::not_found(format!(
            "no continuous replication of {} in {}",
            database.display(),
            repo.location()
        ))
        .hint("`lifeboat replicate DB` ships it"));
    }
    println!("{}", printable(&t.source));
    println!(
        "  restorable   {} .. {}",
        t.from.as_deref().unwrap_or("-"),
        t.to.as_deref().unwrap_or("-")
    );
    match (&t.last_commit, t.last_commit_age_s) {
        (Some(c), Some(age)) => println!("  last commit  {c} ({age:.1} s ago)"),
        _ => println!("  last commit  none shipped yet"),
    }
    match &t.live {
        Some(l) => println!(
            "  replicating  pid {}, lag {:.1} s (status of {})",
            l.pid, l.lag_s, l.updated
        ),
        None => println!("  replicating  not on this machine"),
    }
    for g in &t.gaps {
        println!("  gap          {} .. {}: {}", g.from, g.to, g.why);
    }
    for s in &t.streams {
        println!(
            "  stream {}  {} .. {}  {} base(s), {}, {}",
            s.stream,
            s.from.as_deref().unwrap_or("-"),
            s.to.as_deref().unwrap_or("-"),
            s.bases,
            count(s.segments, "segment", "segments"),
            bytes(s.bytes)
        );
    }
    Ok(0)
}

fn cmd_restore_at(
    ctx: &Ctx,
    at: &str,
    to: RestoreTo,
    source: Option<PathBuf>,
    yes: bool,
) -> Result<i32> {
    let at = lifeboat::wal::pitr::At::parse(at)?;
    if let Some(db) = &to.db {
        restore::check_in_place_target(db)?;
        if db.exists() {
            restore::ensure_not_in_use(db)?;
        }
    }
    let Some(source) = source.as_deref().or(to.db.as_deref()) else {
        return Err(Error::usage("--at needs the database it restores")
            .hint("give --source DB (the path `lifeboat replicate` was given), or --db DB"));
    };
    let source = source_key(source);
    let repo = ctx.open_repo()?;
    let to = match (to.output, to.db) {
        (Some(path), _) => Destination::New {
            path,
            overwrite: false,
        },
        (None, Some(db)) => {
            if !yes {
                confirm(
                    &format!(
                        "Replace {} with {source} as it was at {}? A safety backup is taken first.",
                        restore::describe_target(&db),
                        match at {
                            lifeboat::wal::pitr::At::Latest => "its latest commit".to_string(),
                            lifeboat::wal::pitr::At::Time(t) => t.to_string(),
                        }
                    ),
                    "an in-place restore replaces the database: it needs confirmation",
                    "add --yes to go on without asking",
                )?;
            }
            Destination::InPlace {
                db,
                compression: compression(ctx, None, None)?,
            }
        }
        (None, None) => {
            return Err(
                Error::usage("restore needs a place to write the database to")
                    .hint("give --output FILE (a new file) or --db FILE (replace that database)"),
            )
        }
    };
    let done = lifeboat::engine::restore_at(&repo, &source, at, to, &ctx.progress())?;
    ctx.record(&repo);
    let out = &done.outcome;
    if ctx.json {
        println!(
            "{}",
            json!({"source": source, "at": match at {
                        lifeboat::wal::pitr::At::Latest => "latest".to_string(),
                        lifeboat::wal::pitr::At::Time(t) => t.to_string() },
                   "base": done.plan.base.id, "stream": done.plan.stream,
                   "segments": done.applied.segments, "commits": done.applied.commits,
                   "last_commit": done.applied.last_commit, "path": out.path,
                   "bytes": out.bytes, "safety_backup": out.safety_backup})
        );
    } else {
        println!(
            "restored {} as of {} to {} ({}): base {} + {} from {}",
            printable(&source),
            done.applied
                .last_commit
                .as_deref()
                .unwrap_or(done.plan.base.time.as_str()),
            out.path.display(),
            bytes(out.bytes),
            done.plan.base.id,
            count(done.applied.commits as usize, "commit", "commits"),
            count(done.applied.segments as usize, "segment", "segments"),
        );
        if let Some(id) = &out.safety_backup {
            println!("  safety backup of the replaced database: {id}");
        }
    }
    Ok(0)
}

fn restored_json(m: &Manifest, out: &restore::RestoreOutcome) -> serde_json::Value {
    let mut v = json!({"id": out.backup_id, "source": m.source.path, "kind": m.source.kind,
                       "time": m.time, "path": out.path, "bytes": out.bytes,
                       "safety_backup": out.safety_backup, "moved_aside": out.moved_aside});
    if let Some(o) = v.as_object_mut() {
        match &out.tree {
            Some(t) => {
                o.insert("files".into(), json!(t.files));
                o.insert("dirs".into(), json!(t.dirs));
                o.insert("symlinks".into(), json!(t.symlinks));
                o.insert("redacted".into(), json!(t.redacted));
                o.insert(
                    "verified".into(),
                    json!("every chunk checked against its hash"),
                );
            }
            None => {
                o.insert(
                    "verified".into(),
                    json!("every page checked against its hash"),
                );
            }
        }
    }
    v
}

fn print_restored(m: &Manifest, out: &restore::RestoreOutcome) {
    if let Some(t) = &out.tree {
        println!(
            "restored backup {} to {} ({} in {}, {} folders, {} links; every chunk verified)",
            m.id,
            out.path.display(),
            bytes(t.bytes),
            count(t.files as usize, "file", "files"),
            t.dirs,
            t.symlinks
        );
        if !t.redacted.is_empty() {
            println!("secrets were redacted at backup time; fill these in before use:");
            for r in &t.redacted {
                println!("  {}", redacted_line(r));
            }
        }
        return;
    }
    if let Some(s) = &out.safety_backup {
        println!("safety backup {s} of the previous database (tag pre-restore)");
    }
    for p in &out.moved_aside {
        println!("previous file kept as {}", p.display());
    }
    println!(
        "restored backup {} to {} ({}, every page verified)",
        out.backup_id,
        out.path.display(),
        bytes(out.bytes)
    );
}

/// Restore every backup of run `run` into `dir`, one file or folder per source.
fn cmd_restore_run(ctx: &Ctx, run: &str, dir: &Path, yes: bool) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let (run, backups) = lifeboat::engine::run_backups(&repo, run)?;
    ctx.record(&repo);
    let progress = ctx.progress();
    let mut results = Vec::new();
    lifeboat::engine::restore_run(&repo, &backups, dir, yes, &progress, &mut |m, out| {
        if !ctx.json {
            print_restored(m, out);
        }
        results.push(restored_json(m, out));
    })?;
    if ctx.json {
        println!("{}", json!({"run": run, "restored": results}));
    }
    Ok(0)
}

/// "/srv/app.db", or "/srv/app.db on prod-1" for a backup another host took.
fn source_and_host(m: &Manifest) -> String {
    if m.source.host == lifeboat::host::hostname() {
        m.source.path.clone()
    } else {
        format!("{} on {}", m.source.path, m.source.host)
    }
}

/// Whether the user named this backup by its whole id (then there is nothing to announce).
fn is_full_id(spec: &str, m: &Manifest) -> bool {
    spec.eq_ignore_ascii_case(&m.id)
}

/// Seconds since an RFC 3339 time (0 if it cannot be read or lies ahead).
fn age_of(time: &str) -> i64 {
    time.parse::<jiff::Timestamp>()
        .map(|t| (jiff::Timestamp::now().as_second() - t.as_second()).max(0))
        .unwrap_or(0)
}

fn cmd_init(ctx: &Ctx, encrypt: bool, recipient: Option<String>, params: KdfParams) -> Result<i32> {
    let recipient = recipient.map(|r| parse_recipient(&r)).transpose()?;
    let encrypt = encrypt || recipient.is_some();
    let loc = ctx.opener.location.clone();
    let storage = lifeboat::storage::open(&loc, false)?;
    if storage.exists("config")? {
        return Err(Error::usage(format!(
            "a repository already exists at {}",
            storage.describe()
        ))
        .hint("use it as it is, or choose another --repo"));
    }
    let passphrase = if encrypt {
        Some(
            ctx.opener
                .passphrase
                .get("New repository passphrase", true)?,
        )
    } else {
        None
    };
    let kind = match &passphrase {
        Some(p) => NewRepo::Encrypted {
            passphrase: p,
            params,
            recipient,
        },
        None => NewRepo::Plain,
    };
    let repo = Repository::init(lifeboat::storage::open(&loc, true)?, kind)?;
    ctx.record(&repo);
    if ctx.json {
        println!(
            "{}",
            json!({"repository": repo.location(), "id": repo.config.id,
                   "format_version": repo.config.format_version, "encryption": repo.config.encryption})
        );
    } else {
        println!(
            "created repository {} at {}",
            repo.config.id,
            repo.location()
        );
    }
    Ok(0)
}

fn cmd_check(ctx: &Ctx, read_data: bool) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let r = check::check(&repo, read_data)?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string(&r).map_err(|e| Error::internal(e.to_string()))?
        );
    } else {
        println!(
            "check {}{}",
            repo.location(),
            if read_data { " (reading all data)" } else { "" }
        );
        println!(
            "  {}, {}, {}, {}",
            count(r.backups, "backup", "backups"),
            count(r.index_files, "index file", "index files"),
            count(r.packs, "pack", "packs"),
            count(r.blobs, "blob", "blobs")
        );
        print_wal_check(&r.wal, read_data);
        if r.pg_wal.clusters > 0 {
            println!(
                "  PostgreSQL WAL: {} of {} ({}){}",
                count(r.pg_wal.files, "file", "files"),
                count(r.pg_wal.clusters, "cluster", "clusters"),
                bytes(r.pg_wal.bytes),
                if read_data {
                    format!(", {} read and checked", r.pg_wal.files_read)
                } else {
                    String::new()
                }
            );
        }
        for p in &r.problems {
            println!("  ✗ {}: {}", p.object, p.problem);
            if !p.backups.is_empty() {
                println!(
                    "      affects backups: {}",
                    p.backups.iter().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        if r.unreferenced_packs > 0 || r.temp_files > 0 {
            println!(
                "  note: {} ({}) and {} from interrupted runs; harmless, `lifeboat prune` removes them",
                count(r.unreferenced_packs, "unreferenced pack", "unreferenced packs"),
                bytes(r.unreferenced_bytes),
                count(r.temp_files, "temporary file", "temporary files")
            );
        }
        for lock in &r.stale_locks {
            println!(
                "  note: stale lock marker {lock}: its process is gone; it holds nothing back, \
                 and the next `lifeboat prune` removes it"
            );
        }
        println!(
            "  {}",
            if r.ok {
                "no problems found".to_string()
            } else {
                format!("{} problems found", r.problems.len())
            }
        );
        if let Some(h) = &r.hint {
            println!("  hint: {h}");
        }
    }
    Ok(if r.ok {
        0
    } else {
        ErrorKind::Integrity.exit_code()
    })
}

/// The streams of continuous replication `repo check` found, and its notes about them.
fn print_wal_check(w: &check::WalCheck, read_data: bool) {
    if w.streams.is_empty() && w.not_segments.is_empty() {
        return;
    }
    println!(
        "  continuous replication: {} ({}) in {}{}",
        count(w.segments, "segment", "segments"),
        bytes(w.segment_bytes),
        count(w.streams.len(), "stream", "streams"),
        if read_data {
            format!(", {} opened and chained", w.segments_read)
        } else {
            String::new()
        }
    );
    for s in &w.streams {
        let source = match (&s.source, &s.host) {
            (Some(p), Some(h)) => format!("{} on {h}", printable(p)),
            _ => "no base".to_string(),
        };
        let span = match (&s.restorable_from, &s.restorable_to) {
            (Some(from), Some(to)) => format!("; restorable to any moment from {from} to {to}"),
            _ => String::new(),
        };
        println!(
            "    stream {} ({source}): {}, {}{span}",
            s.stream,
            count(s.bases, "base", "bases"),
            count(s.segments, "segment", "segments"),
        );
        if s.before_oldest_base > 0 {
            println!(
                "  note: stream {}: {} before its oldest base; no restore uses them, `lifeboat prune` removes them",
                s.stream,
                count(s.before_oldest_base, "segment", "segments")
            );
        }
    }
    if w.covered_segments > 0 {
        println!(
            "  note: {} also held by compacted segments (an interrupted compaction); `lifeboat prune` removes them",
            count(w.covered_segments, "segment is", "segments are")
        );
    }
    for o in &w.orphan_streams {
        println!(
            "  warning: stream {o} has no base and shipped nothing for a day (a `replicate` that never stored its first base); `lifeboat prune` removes its segments"
        );
    }
    for n in &w.not_segments {
        println!(
            "  note: {} is not a segment; nothing reads it",
            printable(n)
        );
    }
}

fn cmd_stats(ctx: &Ctx) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let s = check::stats(&repo)?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string(&s).map_err(|e| Error::internal(e.to_string()))?
        );
        return Ok(0);
    }
    println!(
        "repository   {} (format {}, encryption {})",
        s.location, s.format_version, s.encryption
    );
    println!("backups      {} of {} sources", s.backups, s.sources.len());
    println!(
        "logical      {} (sum of all backups)",
        bytes(s.logical_bytes)
    );
    println!(
        "unique       {} in {} blobs",
        bytes(s.unique_bytes),
        s.blobs
    );
    println!(
        "stored       {} in {} packs",
        bytes(s.stored_bytes),
        s.packs
    );
    println!(
        "ratios       dedup {:.1}x, compression {:.1}x, overall {}",
        s.dedup_ratio,
        s.compression_ratio,
        times(ratio(s.logical_bytes, s.stored_bytes))
    );
    Ok(0)
}

fn cmd_demo(ctx: &Ctx, db: Option<PathBuf>, rows: u64) -> Result<i32> {
    let db = db.unwrap_or_else(|| config::data_home().join("demo.db"));
    let fresh = !db.exists();
    lifeboat::demo::create_demo_database(&db, rows)?;
    if !ctx.json {
        println!(
            "{} sample database {} ({} rows added)",
            if fresh { "created" } else { "extended" },
            db.display(),
            rows
        );
    }
    // The demo creates its repository wherever it points: that is what it is for.
    let repo = ctx.open_or_init_repo(true)?;
    let opts = BackupOptions {
        database: db.clone(),
        kind: Some(lifeboat::source::Kind::Sqlite),
        source: Default::default(),
        run: None,
        description: Some("lifeboat demo".into()),
        tags: vec!["demo".into()],
        trigger: "manual".into(),
        compression: compression(ctx, None, None)?,
        // A write-only key cannot read the backup back; it still checks what it wrote.
        verify: if repo.is_write_only() {
            VerifyLevel::Written
        } else {
            VerifyLevel::Full
        },
        progress: ctx.progress(),
        transfers: ctx.transfers()?,
        time: None,
    };
    let out = backup(&repo, &opts)?;
    ctx.record(&repo);
    let took = std::time::Duration::from_millis(out.manifest.duration_ms);
    print_backup(ctx, &repo, &out, opts.verify, &[], took, &None);
    if !ctx.json {
        println!();
        let source = source_key(&db);
        println!("next: lifeboat list");
        println!("      lifeboat verify --source {source}");
        println!("      lifeboat restore latest --source {source} --output /tmp/restored.db");
        println!(
            "      lifeboat backup {}    # again: only changed pages are stored",
            db.display()
        );
    }
    Ok(0)
}

/// `a / b`, or None when nothing was measured (`b` is 0): "0.0x" would read as a failure.
fn ratio(a: u64, b: u64) -> Option<f64> {
    (b != 0).then(|| a as f64 / b as f64)
}

/// "3.2x", or "n/a" for a ratio of nothing.
fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_string(), |r| format!("{r:.1}x"))
}

pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn cmd_repo_show(ctx: &Ctx) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let key_files = if repo.is_encrypted() {
        keys::list(repo.storage())?
    } else {
        Vec::new()
    };
    let generations = repo.keys().map(|k| k.master.data_keys.len()).unwrap_or(0);
    let fingerprint = repo.keys().map(|k| k.root.fingerprint());
    let epoch = repo.keys().map_or(0, |k| k.root.epoch);
    if ctx.json {
        println!(
            "{}",
            json!({"repository": repo.location(), "id": repo.config.id,
                   "format_version": repo.config.format_version, "features": repo.config.features,
                   "upgraded_from": repo.config.upgraded_from, "created": repo.config.created,
                   "encryption": repo.config.encryption, "encrypted": repo.is_encrypted(),
                   "key_files": key_files.len(), "data_key_generations": generations,
                   "key_epoch": epoch, "key_fingerprint": fingerprint,
                   "write_only": repo.is_write_only(),
                   "recipient": repo.recipient().map(|r| recipient_string(&r))})
        );
        return Ok(0);
    }
    println!("repository   {} at {}", repo.config.id, repo.location());
    println!(
        "format       {}{} (created {}){}",
        repo.config.format_version,
        if repo.config.features.is_empty() {
            String::new()
        } else {
            format!(", features {}", repo.config.features.join(", "))
        },
        repo.config.created,
        match repo.config.upgraded_from {
            Some(v) => format!(", upgraded from format {v}"),
            None if !repo.config.is_current() => {
                ", read-only until `lifeboat repo upgrade`".to_string()
            }
            None => String::new(),
        }
    );
    if repo.is_encrypted() {
        println!(
            "encryption   ENCRYPTED ({}, Argon2id key files): {} passphrases, {} data key generations",
            repo.config.encryption,
            key_files.len(),
            generations
        );
        if let Some(f) = &fingerprint {
            println!(
                "keys         fingerprint {f}, key epoch {epoch} (compare with other machines)"
            );
        }
        if let Some(r) = repo.recipient() {
            println!(
                "write-only   backups are sealed to {}; {}",
                recipient_string(&r),
                if repo.is_write_only() {
                    "this key can back up but not read (use --identity to read)"
                } else {
                    "opened with its identity"
                }
            );
        }
    } else {
        println!("encryption   NONE: anyone who can read the repository can read the backups");
    }
    Ok(0)
}

/// A new passphrase: `--new-password-file`, `LIFEBOAT_NEW_PASSWORD`, or asked twice.
fn new_passphrase(file: Option<PathBuf>) -> Result<lifeboat::secret::Passphrase> {
    PassphraseSource {
        file,
        command: None,
        env_var: "LIFEBOAT_NEW_PASSWORD",
    }
    .get("New passphrase", true)
}

fn cmd_key(ctx: &Ctx, command: KeyCommand) -> Result<i32> {
    if let KeyCommand::Generate { output } = &command {
        return cmd_key_generate(ctx, output);
    }
    let mut repo = ctx.open_repo()?;
    if !repo.is_encrypted() {
        return Err(Error::usage(format!(
            "the repository at {} is not encrypted",
            repo.location()
        ))
        .hint("keys exist only in repositories created with `repo init --encrypt`"));
    }
    match command {
        KeyCommand::List => {}
        // The one write that runs over an interrupted rotation: it finishes it.
        KeyCommand::Rotate { full: true, .. } => {
            repo.require_current_format("key rotate --full")?
        }
        _ => repo.require_writable("changing keys")?,
    }
    let host = lifeboat::host::hostname();
    let in_use = repo.keys().map(|k| k.key_id.clone()).unwrap_or_default();
    let unlocked = || repo.keys().ok_or_else(|| Error::internal("keys missing"));
    match command {
        KeyCommand::List => {
            let files = keys::list(repo.storage())?;
            let generations = repo.keys().map(|k| k.master.data_keys.len()).unwrap_or(0);
            let epoch = repo.keys().map_or(0, |k| k.root.epoch);
            if ctx.json {
                let rows: Vec<_> = files
                    .iter()
                    .map(|k| {
                        json!({"id": k.id, "created": k.created, "host": k.host,
                                    "kdf": k.kdf, "params": k.params, "in_use": k.id == in_use})
                    })
                    .collect();
                println!(
                    "{}",
                    json!({"keys": rows, "data_key_generations": generations, "key_epoch": epoch})
                );
            } else {
                println!(
                    "{:<18} {:<30} {:<20} ARGON2ID (KiB, passes, lanes)",
                    "ID", "CREATED", "HOST"
                );
                for k in &files {
                    println!(
                        "{}{:<17} {:<30} {:<20} {}, {}, {}",
                        if k.id == in_use { "*" } else { " " },
                        k.id,
                        k.created,
                        k.host,
                        k.params.memory_kib,
                        k.params.iterations,
                        k.params.parallelism
                    );
                }
                println!(
                    "{} keys (* = in use); {generations} data key generations, key epoch {epoch}",
                    files.len()
                );
            }
        }
        KeyCommand::Add {
            kdf,
            new_password_file,
        } => {
            let p = new_passphrase(new_password_file)?;
            let kf = keys::add(repo.storage(), unlocked()?, &p, kdf.params(), &host)?;
            repo.update_key_files(|l| l.push(kf.id.clone()))?;
            ctx.record(&repo);
            print_result(
                ctx,
                json!({"added": kf.id}),
                &format!("added key {}", kf.id),
            );
        }
        KeyCommand::Remove { id } => {
            let removed = keys::remove(repo.storage(), unlocked()?, &id)?;
            repo.update_key_files(|l| l.retain(|k| *k != removed))?;
            ctx.record(&repo);
            print_result(ctx, json!({"removed": id}), &format!("removed key {id}"));
        }
        KeyCommand::Passwd {
            kdf,
            new_password_file,
        } => {
            let p = new_passphrase(new_password_file)?;
            let kf = keys::change_passphrase(repo.storage(), unlocked()?, &p, kdf.params(), &host)?;
            repo.update_key_files(|l| {
                l.retain(|k| *k != in_use);
                l.push(kf.id.clone());
            })?;
            ctx.record(&repo);
            print_result(
                ctx,
                json!({"added": kf.id, "removed": in_use}),
                &format!("passphrase changed: key {in_use} replaced by {}", kf.id),
            );
        }
        KeyCommand::Generate { .. } => unreachable!("handled above"),
        KeyCommand::Rotate { full: false, .. } => {
            let generation = repo.rotate_data_key()?;
            ctx.record(&repo);
            print_result(
                ctx,
                json!({"data_key_generation": generation}),
                &format!("new data key generation {generation}: new objects use it, old ones stay readable"),
            );
        }
        KeyCommand::Rotate {
            full: true,
            yes,
            kdf,
            new_password_file,
        } => {
            let others: Vec<String> = keys::list(repo.storage())?
                .into_iter()
                .filter(|k| k.id != in_use)
                .map(|k| format!("{} ({}, {})", k.id, k.host, k.created))
                .collect();
            if !others.is_empty() && !yes {
                confirm(
                    &format!(
                        "A full rotation removes the other key files, which open only the old keys: {}. Go on?",
                        others.join(", ")
                    ),
                    "a full key rotation removes the other key files: it needs confirmation",
                    "add --yes to go on without asking",
                )?;
            }
            // Always a new passphrase: the old one may be in the wrong hands, and opens the
            // retired keys wherever an old copy of the repository is put back.
            let passphrase = new_passphrase(new_password_file)?;
            let r = lifeboat::ops::rekey::rotate_full(&mut repo, &passphrase, kdf.params(), &host)?;
            ctx.record(&repo);
            // Replicas are re-keyed now, not at the next backup: until then they still accept
            // what a retired key writes there.
            let replication = sync::sync_replicas(&repo, &ctx.file.replicas, None)?;
            for rep in &replication {
                if let Some(e) = &rep.error {
                    eprintln!(
                        "warning: replica {} not re-keyed yet: {e}; run `lifeboat sync`",
                        rep.target
                    );
                }
            }
            print_result(
                ctx,
                serde_json::to_value(&r).map_err(|e| Error::internal(e.to_string()))?,
                &(format!(
                    "{} key epoch {}: new root, id and data keys; {} manifests, {} index files and {} records re-sealed; key {} opens it{}",
                    if r.resumed {
                        "rotated (again, over an interrupted rotation) to"
                    } else {
                        "rotated to"
                    },
                    r.epoch,
                    r.manifests,
                    r.index_files,
                    r.records,
                    r.key_id,
                    if r.key_files_removed.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; removed key files {} (add passphrases again with `lifeboat key add`)",
                            r.key_files_removed.join(", ")
                        )
                    }
                ) + &r
                    .left_out
                    .iter()
                    .map(|m| format!("\n  left out (refused from now on): {m}"))
                    .collect::<String>()),
            );
        }
    }
    Ok(0)
}

fn cmd_inspect(ctx: &Ctx, object: &str, offset: u64) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let Some(keys) = repo.keys() else {
        return Err(Error::usage(
            "the repository is not encrypted: objects are not sealed",
        ));
    };
    let data = repo.storage().get(object)?;
    let at = data
        .get(offset as usize..)
        .ok_or_else(|| Error::usage(format!("{object} is shorter than {offset} bytes")))?;
    let info = keys.master.describe(at).ok_or_else(|| {
        Error::integrity(format!(
            "no envelope this repository's keys recognise at offset {offset} of {object}"
        ))
    })?;
    print_result(
        ctx,
        serde_json::to_value(&info).map_err(|e| Error::internal(e.to_string()))?,
        &format!(
            "{object} at {offset}: envelope {}, kind {}, {}, key epoch {}",
            info.envelope,
            info.kind,
            match info.generation {
                Some(g) => format!("data key generation {g}"),
                None => "sealed to the recipient".to_string(),
            },
            info.epoch
        ),
    );
    Ok(0)
}

fn cmd_upgrade(ctx: &Ctx) -> Result<i32> {
    let mut repo = ctx.open_repo()?;
    let r = lifeboat::repo::upgrade::upgrade(&mut repo)?;
    ctx.record(&repo);
    let text = if r.from == r.to && !r.features_added.is_empty() {
        format!(
            "upgraded {}: it now takes backups of every kind (SQLite, DuckDB, files; feature {})\n  \
             its backups are as they were; Lifeboat versions before this one can no longer open it",
            repo.location(),
            r.features_added.join(", ")
        )
    } else if r.from == r.to {
        format!(
            "the repository at {} is already in format {}{}",
            repo.location(),
            r.to,
            if r.data_keys_resealed > 0 {
                format!(
                    "; finished an interrupted upgrade ({} data keys sealed in format 2's envelope)",
                    r.data_keys_resealed
                )
            } else {
                String::new()
            }
        )
    } else {
        let mut t = format!(
            "upgraded {} from format {} to {}: {} manifests and {} records sealed",
            repo.location(),
            r.from,
            r.to,
            r.manifests_resealed,
            r.records_sealed
        );
        for m in &r.manifests_refused {
            t.push_str(&format!(
                "\n  left out (forged or damaged, now refused): {m}"
            ));
        }
        if !r.replicas_dropped.is_empty() {
            t.push_str(&format!(
                "\n  the replica list was not carried over (format 1 did not authenticate it); it named {}: add the ones you use again with `lifeboat replica add URL`",
                r.replicas_dropped.join(", ")
            ));
        }
        t.push_str("\n  older Lifeboat versions cannot open it any more; upgrade each replica where it is (`lifeboat --repo URL repo upgrade`): a sync refuses one still in format 1");
        t
    };
    print_result(
        ctx,
        serde_json::to_value(&r).map_err(|e| Error::internal(e.to_string()))?,
        &text,
    );
    Ok(if r.manifests_refused.is_empty() {
        0
    } else {
        ErrorKind::Integrity.exit_code()
    })
}

pub(crate) fn print_result(ctx: &Ctx, value: serde_json::Value, text: &str) {
    if ctx.json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

fn cmd_key_generate(ctx: &Ctx, output: &Path) -> Result<i32> {
    let identity = Identity::generate();
    let mut file = lifeboat::storage::local::create_private_file(output).map_err(|e| {
        if output.exists() {
            Error::usage(format!("{} already exists", output.display()))
                .hint("choose another --output; an identity is never overwritten")
        } else {
            e
        }
    })?;
    let text = zeroize::Zeroizing::new(identity.to_file_text());
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::io("cannot write", output, e))?;
    let public = recipient_string(&identity.public());
    print_result(
        ctx,
        json!({"identity": output, "recipient": public}),
        &format!(
            "wrote identity {} (keep it off the backup host)\nrecipient: {public}\n\
             on the backup host: lifeboat repo init --recipient {public}",
            output.display()
        ),
    );
    Ok(0)
}

fn print_sync(ctx: &Ctx, reports: &[sync::SyncReport]) -> Result<i32> {
    let failure = sync::replica_failure(reports);
    if ctx.json {
        println!(
            "{}",
            json!({ "targets": reports, "error": failure.as_ref().map(error_json) })
        );
    } else {
        for r in reports {
            match &r.error {
                None => println!(
                    "{}: {} objects copied ({}){}{}",
                    r.target,
                    r.copied_objects,
                    bytes(r.copied_bytes),
                    if r.repaired.is_empty() {
                        String::new()
                    } else {
                        format!(", {} damaged copies replaced", r.repaired.len())
                    },
                    if r.key_files_removed.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; removed key files {} (removed from this repository: their passphrases no longer open it)",
                            r.key_files_removed.join(", ")
                        )
                    }
                ),
                Some(e) => println!("{}: FAILED: {e}", r.target),
            }
        }
    }
    finish(ctx, failure)
}

/// An error as `--json` prints it (`main` prints the same shape for a command that fails
/// before it has anything else to say).
/// An error as a person reads it, on stderr: what failed, then what to do.
fn print_error(e: &Error) {
    eprintln!("error: {}", e.message);
    if let Some(h) = &e.hint {
        eprintln!("  hint: {h}");
    }
}

fn error_json(e: &Error) -> serde_json::Value {
    json!({"kind": format!("{:?}", e.kind), "message": e.message, "hint": e.hint,
        "exit_code": e.exit_code()})
}

/// The exit of a command whose report (which names `failure`) is printed already: with
/// `--json` that report is the one document on stdout, so the error goes to stderr only.
fn finish(ctx: &Ctx, failure: Option<Error>) -> Result<i32> {
    match failure {
        None => Ok(0),
        Some(e) if ctx.json => {
            print_error(&e);
            Ok(e.exit_code())
        }
        Some(e) => Err(e),
    }
}

fn cmd_replica(ctx: &Ctx, command: ReplicaCommand) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let records = repo.records();
    let (mut list, _) = sync::read_replicas(repo.storage(), &records)?;
    if !matches!(command, ReplicaCommand::List) {
        repo.require_writable("changing replicas")?;
    }
    match command {
        ReplicaCommand::List => {
            let all = sync::replica_urls(&repo, &ctx.file.replicas)?;
            if ctx.json {
                println!("{}", json!({ "replicas": all }));
            } else if all.is_empty() {
                println!("no replicas; add one with `lifeboat replica add URL`");
            } else {
                for r in all {
                    println!("{r}");
                }
            }
            Ok(0)
        }
        ReplicaCommand::Add { url } => {
            // One spelling per target: `/x/`, `file:///x` and `/x` are one replica.
            let url = config::normalize_location(&url);
            if config::same_location(&url, &repo.location()) {
                return Err(Error::usage("a repository cannot be its own replica"));
            }
            // Refuse a target that holds another repository.
            let target = lifeboat::storage::open(&url, true)?;
            if let Ok(data) = target.get_small("config", lifeboat::repo::format::SMALL_OBJECT_MAX) {
                let (theirs, _) = lifeboat::repo::RepoConfig::parse(&data, &url)?;
                if theirs.id != repo.config.id {
                    return Err(Error::usage(format!(
                        "{url} holds another repository ({})",
                        theirs.id
                    ))
                    .hint("choose an empty location for the replica"));
                }
            }
            if !list.replicas.iter().any(|r| config::same_location(r, &url)) {
                list.replicas.push(url.clone());
                sync::write_replicas(repo.storage(), &records, &list)?;
            }
            lifeboat::trust::confirm_replica(&repo.location(), &url, true)?;
            ctx.record(&repo);
            let reports = sync::sync_replicas(&repo, &ctx.file.replicas, Some(&url))?;
            print_sync(ctx, &reports)
        }
        ReplicaCommand::Remove { url } => {
            // Any spelling of the target removes it (and every spelling it was added under).
            let url = config::normalize_location(&url);
            if !list.replicas.iter().any(|r| config::same_location(r, &url)) {
                let hint = if ctx
                    .file
                    .replicas
                    .iter()
                    .any(|r| config::same_location(r, &url))
                {
                    "it is listed in `replicas` in lifeboat.toml: remove it there"
                } else {
                    "`lifeboat replica list` shows the replicas"
                };
                return Err(
                    Error::not_found(format!("{url} is not a replica of this repository"))
                        .hint(hint),
                );
            }
            list.replicas.retain(|r| !config::same_location(r, &url));
            sync::write_replicas(repo.storage(), &records, &list)?;
            lifeboat::trust::confirm_replica(&repo.location(), &url, false)?;
            ctx.record(&repo);
            print_result(
                ctx,
                json!({"removed": url}),
                &format!("removed replica {url} (its copy is left as it is)"),
            );
            Ok(0)
        }
    }
}

fn cmd_sync(ctx: &Ctx, target: Option<String>) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let reports = sync::sync_replicas(&repo, &ctx.file.replicas, target.as_deref())?;
    if reports.is_empty() && !ctx.json {
        println!("no replicas to sync; add one with `lifeboat replica add URL`");
        return Ok(0);
    }
    print_sync(ctx, &reports)
}

fn cmd_status(ctx: &Ctx) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let report = lifeboat::ops::status::status(&repo, &ctx.file.replicas)?;
    let failure = report.trouble.clone();
    if ctx.json {
        println!(
            "{}",
            json!({ "targets": report.targets, "replicating": report.replicating,
                    "error": failure.as_ref().map(error_json) })
        );
        return finish(ctx, failure);
    }
    for t in &report.targets {
        println!("{} ({})", t.target, t.role);
        match (&t.error, t.backups) {
            (None, Some(n)) => {
                let newest = match t.newest_backup_age_s {
                    Some(s) => format!("newest backup {} ago", human_age(s)),
                    None => "no backups".into(),
                };
                println!("  {}, {newest}", count(n as usize, "backup", "backups"));
            }
            _ => println!("  ? backups (unreachable)"),
        }
        if let Some(r) = &t.replica {
            match (r.objects_behind, r.bytes_behind) {
                (Some(n), Some(b)) => println!("  behind by {n} objects ({})", bytes(b)),
                _ => println!("  behind by ? (unreachable)"),
            }
            if r.key_changes_pending == Some(true) {
                println!(
                    "  key changes pending: keys added or removed here are not there yet \
                     (a removed passphrase still opens it): run `lifeboat sync`"
                );
            }
            println!(
                "  last success {}",
                r.last_success
                    .as_deref()
                    .unwrap_or("never (on this machine)")
            );
            if let Some(e) = &r.last_error {
                println!(
                    "  last error {} at {}{}",
                    e,
                    r.last_error_time.as_deref().unwrap_or("?"),
                    if r.failing {
                        " (still failing: run `lifeboat sync`)"
                    } else {
                        " (a later sync succeeded)"
                    }
                );
            }
        }
        if let Some(e) = &t.error {
            println!("  UNREACHABLE: {e}");
        }
    }
    for r in &report.replicating {
        println!(
            "replicating {} (pid {}, stream {}): lag {:.1} s, newest commit shipped {}",
            printable(&r.source),
            r.pid,
            r.stream,
            r.lag_s,
            r.last_shipped.as_deref().unwrap_or("none yet")
        );
    }
    finish(ctx, failure)
}

fn human_age(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command and every argument says what it is for in `--help`.
    #[test]
    fn every_command_and_argument_is_described() {
        fn walk(cmd: &clap::Command, path: String, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() && path != "lifeboat" {
                missing.push(format!("{path} (the command)"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() != "help" {
                    walk(sub, format!("{path} {}", sub.get_name()), missing);
                }
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "lifeboat".into(), &mut missing);
        assert!(missing.is_empty(), "no help text for: {missing:?}");
    }
}

#[cfg(test)]
mod wal_fetch_tests {
    use super::*;

    #[test]
    fn every_failure_of_wal_fetch_is_fatal_to_postgresql() {
        for code in 1..=255 {
            let status = wal_fetch_failure(code);
            assert!((126..=255).contains(&status), "{code} -> {status}");
        }
        assert_eq!(wal_fetch_failure(ErrorKind::Internal.exit_code()), 129);
    }
}
