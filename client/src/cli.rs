//! The `ds` command: the dataserver from the command line. Stores files (recursively, several at once,
//! skipping what the server already holds), downloads them resumably and verified, and shows,
//! lists, deletes and verifies objects, and reads FITS files in parts (the HDU index, one HDU,
//! header cards, cut-outs).
//!
//! The server's URL and token come from flags, then `DS_URL` / `DS_TOKEN`, then the config
//! file (`$DS_CONFIG`, else `$XDG_CONFIG_HOME/ds/config.toml`, else `~/.config/ds/config.toml`).
//! Exit codes are listed at `Failure::exit_code`. Errors are printed as sentences, never as
//! debug dumps; progress bars appear only when stderr is a terminal.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::{
    ChecksumVerdict, Client, ClientOptions, Error, FitsPart, GetOptions, HduSelector, PutOptions,
    PutOutcome, Section,
};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures_util::{StreamExt as _, TryStreamExt as _};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// Store and fetch files on a dataserver.
#[derive(Debug, Parser)]
#[command(name = "ds", version, about, long_about = None)]
struct Cli {
    /// Server URL [env: DS_URL; config file: url; default: http://127.0.0.1:8080]
    #[arg(long, global = true)]
    url: Option<String>,
    /// Bearer token [env: DS_TOKEN; config file: token or token_file]
    #[arg(long, global = true, hide_env_values = true)]
    token: Option<String>,
    /// File whose first line is the bearer token
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Trust only the certificate authorities in this PEM file for https:// (config file: cacert)
    #[arg(long, global = true, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Print results as JSON (one object per line for put, get and ls)
    #[arg(long, global = true)]
    json: bool,
    /// Print nothing but errors
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store files; directories are stored recursively
    ///
    /// A file is stored under PREFIX + its name, a directory's files under PREFIX + the
    /// directory's name + their path inside it (as cp -r would). A file already stored with the
    /// same content is skipped; a key holding other content is reported and left alone.
    Put {
        /// Files and directories
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Key for a single file
        #[arg(long, conflicts_with = "prefix")]
        key: Option<String>,
        /// Prefix for the keys (e.g. "kids/DR5/")
        #[arg(long, default_value = "")]
        prefix: String,
        /// Transfers at once
        #[arg(short = 'j', long, default_value_t = 4)]
        jobs: usize,
        /// Also send the MD5, checked by the server and known at once
        #[arg(long)]
        md5: bool,
        /// Content type (default: detected by the server)
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Download objects, resumably and verified against their BLAKE3 digest
    ///
    /// Bytes go to NAME.part and are renamed to NAME once their digest matches; an interrupted
    /// download continues where it stopped when run again. A mismatch deletes NAME.part.
    ///
    /// With --hdu, --header or --section, one part of a FITS file instead: not the whole
    /// object, so not checked against its BLAKE3 and not resumed; the server checks its reads
    /// and ds checks each HDU's CHECKSUM card as the bytes arrive.
    Get {
        /// Keys
        #[arg(required = true)]
        keys: Vec<String>,
        /// Output file (one key; "-" for stdout) or directory (default: the key's last segment,
        /// in the current directory)
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Only bytes A to B (inclusive, as curl's -r; "A-" to the end, "-N" the last N),
        /// written to the output or stdout; checked by the server, not against the whole digest
        #[arg(long, value_name = "A-B", allow_hyphen_values = true)]
        range: Option<String>,
        /// Objects downloaded at once
        #[arg(short = 'j', long, default_value_t = 4)]
        jobs: usize,
        /// Connections per large object (ranged download in parallel; restarts instead of
        /// resuming)
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Only this HDU of a FITS file: N (0 = primary), EXTNAME or EXTNAME,EXTVER; its bytes
        /// as stored, to -o PATH or stdout ("-"), default NAME_hduN.fits
        #[arg(long, value_name = "HDU", conflicts_with = "range")]
        hdu: Option<HduSelector>,
        /// With --hdu: a FITS file of its own (a minimal primary header before an extension)
        #[arg(long, requires = "hdu", conflicts_with_all = ["header", "section"])]
        standalone: bool,
        /// Print the header cards (of every HDU, or of --hdu) as text
        #[arg(long, conflicts_with_all = ["range", "section"])]
        header: bool,
        /// A cut-out of a 2-D image as a FITS file: y1:y2,x1:x2 (1-based, inclusive, rows
        /// first); of --hdu, else of the first 2-D image; default output NAME_cutout.fits
        #[arg(long, value_name = "Y1:Y2,X1:X2", conflicts_with = "range")]
        section: Option<Section>,
    },
    /// Show an object's size, digests and type
    Head {
        /// Key
        key: String,
    },
    /// List keys under a prefix
    Ls {
        /// Key prefix (default: everything)
        #[arg(default_value = "")]
        prefix: String,
        /// Long format: size, creation time, BLAKE3 and key
        #[arg(short, long)]
        long: bool,
    },
    /// Delete objects (needs an admin token; keys stay bound to their content)
    Rm {
        /// Keys
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Compare a local file with an object, or without FILE ask the server to re-verify its copy
    Verify {
        /// Key
        key: String,
        /// Local file to compare
        file: Option<PathBuf>,
    },
    /// Show the HDUs of a FITS object, as the server indexed them when it was stored
    FitsIndex {
        /// Key
        key: String,
    },
    /// Show the server's status
    Status,
}

/// The config file: every field optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    url: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    cacert: Option<PathBuf>,
}

/// An error worth its own exit code, with the sentence to print.
#[derive(Debug)]
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    /// Exit codes (README.md, "Use it from the command line"):
    /// 1 other failure, 2 usage, 3 not found, 4 conflict, 5 digest mismatch or failed
    /// verification, 6 token missing or refused, 7 server unreachable, 8 server error.
    fn exit_code(error: &Error) -> u8 {
        match error {
            Error::NotFound { .. } => 3,
            Error::Conflict { .. } => 4,
            Error::DigestMismatch { .. } => 5,
            Error::Unauthorized { .. } | Error::Forbidden { .. } => 6,
            Error::Transport { .. } | Error::Tls { .. } => 7,
            Error::Server { .. } => 8,
            Error::Config(_) => 2,
            _ => 1,
        }
    }

    /// The client error as a sentence a user can act on.
    fn from_client(error: &Error, url: &str) -> Self {
        let message = match error {
            Error::Unauthorized { message } => format!(
                "the server needs a valid token ({message}); set DS_TOKEN, --token or token_file in the config file"
            ),
            Error::Forbidden { message } => {
                format!("the server refused the token: {message}")
            }
            Error::Conflict { message } => {
                format!("{message}; keys are write-once: store the new version under a new key")
            }
            Error::Transport { message, .. } => {
                format!("cannot reach the server at {url}: {message}")
            }
            Error::Tls { message } => format!(
                "cannot connect securely to {url}: {message}; if the server's certificate is signed by your own authority, give its PEM file with --cacert or cacert in the config file"
            ),
            other => other.to_string(),
        };
        Self {
            message,
            code: Self::exit_code(error),
        }
    }

    fn other(error: anyhow::Error) -> Self {
        Self {
            message: format!("{error:#}"),
            code: 1,
        }
    }
}

/// Runs the `ds` command with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread for the connections: hashing and disk I/O run on blocking threads, so the
    // async side only moves bytes, and on one thread it wakes no other (measured: a tenth less
    // CPU per GiB than the multi-threaded runtime, on a machine where the server shares it).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ds: cannot start: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("ds: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Writes `text` to stdout. A reader that has gone away (`ds head KEY | grep -q md5`) is not
/// the command's failure: the text is dropped, as `cat` drops it, and the command ends as it
/// would have. Any other write error is told on stderr.
fn print_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("ds: cannot write to standard output: {error}");
        }
        _ => {}
    }
}

/// Settings after flags, environment and config file.
struct Settings {
    url: String,
    options: ClientOptions,
}

fn config_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("DS_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("ds").join("config.toml"))
}

fn settings(cli: &Cli) -> Result<Settings, Failure> {
    let config = match config_path() {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read the config file {}", path.display()))
                .map_err(Failure::other)?;
            toml::from_str::<ConfigFile>(&text).map_err(|error| Failure {
                message: format!("the config file {} is invalid: {error}", path.display()),
                code: 2,
            })?
        }
        _ => ConfigFile::default(),
    };
    let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let url = cli
        .url
        .clone()
        .or_else(|| env("DS_URL"))
        .or(config.url)
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let read_token = |path: &Path| -> Result<String, Failure> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))
            .map_err(Failure::other)?;
        Ok(text.lines().next().unwrap_or_default().trim().to_owned())
    };
    let token = match (&cli.token, &cli.token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => Some(read_token(path)?),
        (None, None) => match env("DS_TOKEN") {
            Some(token) => Some(token),
            None => match (config.token, &config.token_file) {
                (Some(token), _) => Some(token),
                (None, Some(path)) => Some(read_token(path)?),
                (None, None) => None,
            },
        },
    };
    Ok(Settings {
        url,
        options: ClientOptions {
            token,
            ca_file: cli.cacert.clone().or(config.cacert),
            ..ClientOptions::default()
        },
    })
}

/// Where results go: text or JSON on stdout, progress on stderr when it is a terminal.
struct Output {
    json: bool,
    quiet: bool,
    progress: Option<ProgressBar>,
}

impl Output {
    fn new(cli: &Cli) -> Self {
        Self {
            json: cli.json,
            quiet: cli.quiet,
            progress: None,
        }
    }

    /// A byte progress bar (bytes, rate, ETA) when stderr is a terminal and output is for a
    /// person.
    fn start_progress(&mut self, total: u64) -> Option<crate::Progress> {
        if self.quiet || self.json || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{bytes:>10} / {total_bytes:<10} {wide_bar} {binary_bytes_per_sec:>12} ETA {eta}",
            )
            .expect("valid progress template"),
        );
        self.progress = Some(bar.clone());
        Some(Arc::new(move |bytes| bar.inc(bytes)))
    }

    fn finish_progress(&mut self) {
        if let Some(bar) = self.progress.take() {
            bar.finish_and_clear();
        }
    }

    /// One line for a person (suppressed by --quiet and --json).
    fn text(&self, line: &str) {
        if self.quiet || self.json {
            return;
        }
        match &self.progress {
            Some(bar) => bar.println(line),
            None => print_out(&format!("{line}\n")),
        }
    }

    /// One JSON value on its own line (only with --json).
    fn json_line(&self, value: &serde_json::Value) {
        if self.json {
            print_out(&format!("{value}\n"));
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let settings = settings(&cli)?;
    let url = settings.url.clone();
    let client = Client::with_options(&settings.url, settings.options)
        .map_err(|error| Failure::from_client(&error, &url))?;
    let mut output = Output::new(&cli);
    let fail = |error: Error| Failure::from_client(&error, &url);
    match cli.command {
        Command::Put {
            files,
            key,
            prefix,
            jobs,
            md5,
            content_type,
        } => {
            let options = PutOptions {
                md5,
                content_type,
                ..PutOptions::default()
            };
            put(
                &client,
                &mut output,
                files,
                key,
                &prefix,
                jobs,
                &options,
                &url,
            )
            .await
        }
        Command::Get {
            keys,
            output: target,
            range,
            jobs,
            connections,
            hdu,
            standalone,
            header,
            section,
        } => {
            if header {
                return get_header(
                    &client,
                    &output,
                    &keys,
                    target.as_deref(),
                    hdu.as_ref(),
                    &url,
                )
                .await;
            }
            let part = match (section, hdu) {
                (Some(section), hdu) => Some(FitsPart::Cutout { hdu, section }),
                (None, Some(hdu)) => Some(FitsPart::Hdu { hdu, standalone }),
                (None, None) => None,
            };
            match (part, range) {
                (Some(part), _) => {
                    get_fits_part(&client, &output, &keys, target.as_deref(), &part, &url).await
                }
                (None, Some(range)) => {
                    get_range(&client, &keys, target.as_deref(), &range, &url).await
                }
                (None, None) => {
                    get(&client, &mut output, keys, target, jobs, connections, &url).await
                }
            }
        }
        Command::FitsIndex { key } => {
            let index = client.fits_index(&key).await.map_err(fail)?;
            if output.json {
                output.json_line(&serde_json::to_value(&index).expect("wire types serialise"));
            } else if !output.quiet {
                print_out(&fits_index_table(&key, &index));
            }
            Ok(())
        }
        Command::Head { key } => {
            let head = client.head(&key).await.map_err(fail)?;
            if output.json {
                output.json_line(&json!({"key": key, "head": head}));
            } else if !output.quiet {
                let mut text = format!(
                    "key           {key}\nsize          {}\nblake3        {}\nmd5           {}\ncontent-type  {}\n",
                    head.size,
                    head.blake3,
                    head.md5.as_deref().unwrap_or("(not yet known)"),
                    head.content_type
                );
                if let Some(id) = head.object_id {
                    text += &format!("object-id     {id}\n");
                }
                if let Some(modified) = &head.last_modified {
                    text += &format!("created       {modified}\n");
                }
                print_out(&text);
            }
            Ok(())
        }
        Command::Ls { prefix, long } => {
            let mut objects = client.list(&prefix);
            let stdout = std::io::stdout();
            let mut stdout = std::io::BufWriter::new(stdout.lock());
            while let Some(object) = objects.next().await {
                let object = object.map_err(fail)?;
                let line = if output.json {
                    serde_json::to_string(&object).expect("wire types serialise")
                } else if long {
                    format!(
                        "{:>14}  {}  {}  {}",
                        object.size, object.created, object.blake3, object.key
                    )
                } else {
                    object.key
                };
                if !output.quiet || output.json {
                    // A closed pipe (`ds ls | head`) ends the listing quietly.
                    if writeln!(stdout, "{line}").is_err() {
                        return Ok(());
                    }
                }
            }
            let _ = stdout.flush();
            Ok(())
        }
        Command::Rm { keys } => {
            for key in keys {
                let info = client.delete(&key).await.map_err(fail)?;
                output.json_line(&serde_json::to_value(&info).expect("wire types serialise"));
                output.text(&format!("deleted {key}"));
            }
            Ok(())
        }
        Command::Verify { key, file } => verify(&client, &output, &key, file, &url).await,
        Command::Status => {
            let status = client.status().await.map_err(fail)?;
            if output.json {
                output.json_line(&serde_json::to_value(&status).expect("wire types serialise"));
            } else if !output.quiet {
                print_out(&format!(
                    "node            {} (site {} #{})\nversion         {}\nobjects         {}\n\
                     bytes           {}\nfree bytes      {}\nuptime seconds  {}\nverified reads  {}\n",
                    status.node,
                    status.site,
                    status.site_number,
                    status.version,
                    status.objects,
                    status.bytes,
                    status.free_bytes,
                    status.uptime_seconds,
                    if status.verify_reads {
                        "always"
                    } else {
                        "never"
                    }
                ));
            }
            Ok(())
        }
    }
}

/// One file to store and its key.
struct Upload {
    path: PathBuf,
    key: String,
    size: u64,
}

/// The files named on the command line, directories walked, each with its key.
fn uploads(files: Vec<PathBuf>, key: Option<String>, prefix: &str) -> anyhow::Result<Vec<Upload>> {
    let mut found = Vec::new();
    for path in files {
        let metadata =
            std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .with_context(|| format!("{} has no UTF-8 file name to use as a key", path.display()))?
            .to_owned();
        if metadata.is_file() {
            let key = key.clone().unwrap_or_else(|| format!("{prefix}{name}"));
            found.push(Upload {
                path,
                key,
                size: metadata.len(),
            });
            continue;
        }
        anyhow::ensure!(
            metadata.is_dir(),
            "{} is neither a file nor a directory",
            path.display()
        );
        anyhow::ensure!(
            key.is_none(),
            "--key names one file; {} is a directory (use --prefix)",
            path.display()
        );
        // Depth first, in name order, so keys come out in a stable order; symbolic links to
        // directories are not followed (they could loop).
        let mut stack = vec![(path, format!("{prefix}{name}"))];
        while let Some((dir, dir_key)) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot list {}", dir.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("cannot list {}", dir.display()))?;
            entries.sort_by_key(|entry| std::cmp::Reverse(entry.file_name()));
            for entry in entries {
                let entry_path = entry.path();
                let entry_name = entry.file_name().into_string().map_err(|name| {
                    anyhow::anyhow!(
                        "{} has no UTF-8 file name to use as a key",
                        dir.join(name).display()
                    )
                })?;
                let entry_key = format!("{dir_key}/{entry_name}");
                let kind = entry
                    .file_type()
                    .with_context(|| format!("cannot read {}", entry_path.display()))?;
                if kind.is_dir() {
                    stack.push((entry_path, entry_key));
                } else if let Ok(metadata) = std::fs::metadata(&entry_path)
                    && metadata.is_file()
                {
                    found.push(Upload {
                        path: entry_path,
                        key: entry_key,
                        size: metadata.len(),
                    });
                }
            }
        }
    }
    Ok(found)
}

#[allow(clippy::too_many_arguments)] // the flags of one command, passed once
async fn put(
    client: &Client,
    output: &mut Output,
    files: Vec<PathBuf>,
    key: Option<String>,
    prefix: &str,
    jobs: usize,
    options: &PutOptions,
    url: &str,
) -> Result<(), Failure> {
    if key.is_some() && files.len() != 1 {
        return Err(Failure {
            message: "--key names one file; give exactly one FILE or use --prefix".into(),
            code: 2,
        });
    }
    let prefix = prefix.to_owned();
    let found = tokio::task::spawn_blocking(move || uploads(files, key, &prefix))
        .await
        .map_err(|error| Failure::other(error.into()))?
        .map_err(Failure::other)?;
    let total = found.iter().map(|upload| upload.size).sum();
    let progress = output.start_progress(total);
    let options = PutOptions {
        progress: progress.clone(),
        ..options.clone()
    };
    let options = &options;
    let mut results = futures_util::stream::iter(found)
        .map(|upload| {
            let progress = progress.clone();
            async move {
                let outcome = client
                    .put_file_if_changed(&upload.key, &upload.path, options)
                    .await;
                // A file skipped (or failed) sent nothing: count it as done.
                if let (Some(progress), Ok(PutOutcome::Unchanged(_)) | Err(_)) =
                    (&progress, &outcome)
                {
                    progress(upload.size);
                }
                (upload, outcome)
            }
        })
        .buffer_unordered(jobs.max(1));
    let mut worst: Option<Failure> = None;
    let (mut stored, mut unchanged, mut failed) = (0, 0, 0);
    while let Some((upload, outcome)) = results.next().await {
        let file = upload.path.display().to_string();
        match outcome {
            Ok(PutOutcome::Stored(info)) => {
                stored += 1;
                output.json_line(&json!({"file": file, "key": upload.key, "outcome": "stored", "size": info.size, "blake3": info.blake3}));
                output.text(&format!("stored {} ({} bytes)", upload.key, info.size));
            }
            Ok(PutOutcome::Unchanged(head)) => {
                unchanged += 1;
                output.json_line(&json!({"file": file, "key": upload.key, "outcome": "unchanged", "size": head.size, "blake3": head.blake3}));
                output.text(&format!("unchanged {} (already stored)", upload.key));
            }
            Err(error) => {
                failed += 1;
                let failure = Failure::from_client(&error, url);
                output.json_line(&json!({"file": file, "key": upload.key, "outcome": "failed", "error": failure.message}));
                if !output.json {
                    eprintln!("ds: {file}: {}", failure.message);
                }
                if worst.as_ref().is_none_or(|worst| worst.code == 1) {
                    worst = Some(failure);
                }
            }
        }
    }
    output.finish_progress();
    if stored + unchanged + failed > 1 {
        output.text(&format!(
            "{stored} stored, {unchanged} unchanged, {failed} failed"
        ));
    }
    match worst {
        Some(failure) if failed > 1 || stored + unchanged > 0 => Err(Failure {
            message: format!("{failed} of {} files failed", stored + unchanged + failed),
            code: failure.code,
        }),
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// The file a key is downloaded to: `target` itself for one key (unless it is a directory),
/// else the key's last segment in `target` or the current directory.
fn destination(key: &str, target: Option<&Path>, several: bool) -> PathBuf {
    let name = key.rsplit('/').next().unwrap_or(key);
    match target {
        Some(target) if !several && !target.is_dir() => target.to_path_buf(),
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

async fn get(
    client: &Client,
    output: &mut Output,
    keys: Vec<String>,
    target: Option<PathBuf>,
    jobs: usize,
    connections: usize,
    url: &str,
) -> Result<(), Failure> {
    if target.as_deref() == Some(Path::new("-")) {
        if keys.len() != 1 {
            return Err(Failure {
                message: "-o - writes one object to stdout; give exactly one KEY".into(),
                code: 2,
            });
        }
        return get_to_stdout(client, &keys[0], url).await;
    }
    let several = keys.len() > 1;
    let progress = output.start_progress(0);
    let bar = output.progress.clone();
    let mut results = futures_util::stream::iter(keys)
        .map(|key| {
            let path = destination(&key, target.as_deref(), several);
            let options = GetOptions {
                connections,
                progress: progress.clone(),
            };
            let bar = bar.clone();
            async move {
                // The bar's total grows as each object's size becomes known.
                let outcome = match client.head(&key).await {
                    Ok(head) => {
                        if let Some(bar) = &bar {
                            bar.inc_length(head.size);
                        }
                        client.get_to_file(&key, &path, &options).await
                    }
                    Err(error) => Err(error),
                };
                (key, path, outcome)
            }
        })
        .buffer_unordered(jobs.max(1));
    let mut worst: Option<Failure> = None;
    let mut count = 0;
    while let Some((key, path, outcome)) = results.next().await {
        count += 1;
        let file = path.display().to_string();
        match outcome {
            Ok(done) => {
                output.json_line(&json!({"key": key, "file": file, "outcome": "verified", "size": done.head.size, "blake3": done.head.blake3, "resumed_from": done.resumed_from}));
                let resumed = if done.resumed_from > 0 {
                    format!(", resumed at byte {}", done.resumed_from)
                } else {
                    String::new()
                };
                output.text(&format!(
                    "{file}: {} bytes, BLAKE3 verified{resumed}",
                    done.head.size
                ));
            }
            Err(error) => {
                let failure = Failure::from_client(&error, url);
                output.json_line(&json!({"key": key, "file": file, "outcome": "failed", "error": failure.message}));
                if !output.json {
                    eprintln!("ds: {key}: {}", failure.message);
                }
                worst.get_or_insert(failure);
            }
        }
    }
    output.finish_progress();
    match worst {
        Some(failure) if count > 1 => Err(Failure {
            message: "some downloads failed".into(),
            code: failure.code,
        }),
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// The whole object to stdout, hashed as it goes; a mismatch is reported at the end (the bytes
/// are already written, so the exit code is what tells).
async fn get_to_stdout(client: &Client, key: &str, url: &str) -> Result<(), Failure> {
    let fail = |error: Error| Failure::from_client(&error, url);
    let (head, mut body) = client.get_stream(key).await.map_err(fail)?;
    let mut stdout = tokio::io::stdout();
    let mut hasher = blake3::Hasher::new();
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(fail)?;
        hasher.update(&piece);
        if tokio::io::AsyncWriteExt::write_all(&mut stdout, &piece)
            .await
            .is_err()
        {
            return Ok(()); // a closed pipe
        }
    }
    let _ = tokio::io::AsyncWriteExt::flush(&mut stdout).await;
    let actual = hasher.finalize().to_hex();
    if !actual.as_str().eq_ignore_ascii_case(&head.blake3) {
        return Err(Failure {
            message: format!(
                "the bytes written to stdout do not match the server's digest (expected BLAKE3 {}, got {actual}); do not use them",
                head.blake3
            ),
            code: 5,
        });
    }
    Ok(())
}

/// `--range A-B`: bytes A to B inclusive, `A-` to the end, `-N` the last N.
fn parse_range(text: &str, size: u64) -> Option<std::ops::Range<u64>> {
    let (start, end) = text.trim().split_once('-')?;
    let range = match (start.is_empty(), end.is_empty()) {
        (true, false) => size.saturating_sub(end.parse().ok()?)..size,
        (false, true) => start.parse().ok()?..size,
        (false, false) => start.parse().ok()?..end.parse::<u64>().ok()?.saturating_add(1).min(size),
        (true, true) => return None,
    };
    (range.start < range.end || size == 0).then_some(range)
}

async fn get_range(
    client: &Client,
    keys: &[String],
    target: Option<&Path>,
    range: &str,
    url: &str,
) -> Result<(), Failure> {
    let fail = |error: Error| Failure::from_client(&error, url);
    let [key] = keys else {
        return Err(Failure {
            message: "--range reads from one KEY".into(),
            code: 2,
        });
    };
    let head = client.head(key).await.map_err(fail)?;
    let range = parse_range(range, head.size).ok_or_else(|| Failure {
        message: format!(
            "--range {range} is not a range of this object of {} bytes (write A-B, A- or -N)",
            head.size
        ),
        code: 2,
    })?;
    let mut body = client.get_range_stream(key, range).await.map_err(fail)?;
    let mut sink: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match target {
        Some(path) if path != Path::new("-") => Box::new(
            tokio::fs::File::create(path)
                .await
                .with_context(|| format!("cannot create {}", path.display()))
                .map_err(Failure::other)?,
        ),
        _ => Box::new(tokio::io::stdout()),
    };
    while let Some(piece) = body.try_next().await.map_err(fail)? {
        tokio::io::AsyncWriteExt::write_all(&mut sink, &piece)
            .await
            .context("cannot write the range")
            .map_err(Failure::other)?;
    }
    tokio::io::AsyncWriteExt::flush(&mut sink)
        .await
        .context("cannot write the range")
        .map_err(Failure::other)?;
    Ok(())
}

/// The one key a FITS view reads from.
fn one_key<'a>(keys: &'a [String], what: &str) -> Result<&'a str, Failure> {
    match keys {
        [key] => Ok(key),
        _ => Err(Failure {
            message: format!("{what} reads from one KEY"),
            code: 2,
        }),
    }
}

/// `--header`: the header cards as text, to stdout or `-o PATH`.
async fn get_header(
    client: &Client,
    output: &Output,
    keys: &[String],
    target: Option<&Path>,
    hdu: Option<&HduSelector>,
    url: &str,
) -> Result<(), Failure> {
    let key = one_key(keys, "--header")?;
    let text = client
        .header_text(key, hdu)
        .await
        .map_err(|error| Failure::from_client(&error, url))?;
    match target {
        Some(path) if path != Path::new("-") => tokio::fs::write(path, &text)
            .await
            .with_context(|| format!("cannot write {}", path.display()))
            .map_err(Failure::other)?,
        _ if output.json => output
            .json_line(&json!({"key": key, "hdu": hdu.map(ToString::to_string), "header": text})),
        _ => print_out(&text),
    }
    Ok(())
}

/// The file a FITS view of `key` goes to by default: the key's last segment with the view's
/// name before its extension (`frame_hdu3.fits`, `frame_cutout.fits`), so it is never taken
/// for the whole object.
fn view_file_name(key: &str, part: &FitsPart) -> PathBuf {
    let name = key.rsplit('/').next().unwrap_or(key);
    let (stem, extension) = match name.split_once('.') {
        Some((stem, extension)) if !stem.is_empty() => (stem, format!(".{extension}")),
        _ => (name, ".fits".to_owned()),
    };
    let view = match part {
        FitsPart::Hdu { hdu, .. } => {
            let hdu: String = hdu
                .to_string()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            format!("hdu{hdu}")
        }
        FitsPart::Cutout { .. } => "cutout".to_owned(),
    };
    PathBuf::from(format!("{stem}_{view}{extension}"))
}

/// `--hdu` and `--section`: one HDU or a cut-out, streamed to a file or stdout, its FITS
/// checksum cards checked on the way (a view is not the whole object: there is no BLAKE3 to
/// compare and nothing to resume).
async fn get_fits_part(
    client: &Client,
    output: &Output,
    keys: &[String],
    target: Option<&Path>,
    part: &FitsPart,
    url: &str,
) -> Result<(), Failure> {
    let fail = |error: Error| Failure::from_client(&error, url);
    let key = one_key(keys, "--hdu or --section")?;
    let (file, answer) = if target == Some(Path::new("-")) {
        let answer = match client
            .fits_to_writer(key, part, &mut tokio::io::stdout())
            .await
        {
            Ok(answer) => answer,
            // A closed pipe (`ds get --hdu 1 -o - | head -c 2880`) is not an error.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
                return Ok(());
            }
            Err(error) => return Err(fail(error)),
        };
        ("-".to_owned(), answer)
    } else {
        let path = match target {
            Some(dir) if dir.is_dir() => dir.join(view_file_name(key, part)),
            Some(path) => path.to_path_buf(),
            None => view_file_name(key, part),
        };
        let answer = client.fits_to_file(key, part, &path).await.map_err(fail)?;
        (path.display().to_string(), answer)
    };
    let checksum = answer.checksum();
    // On stdout the bytes are the output: no JSON or text line is mixed in.
    if file != "-" {
        output.json_line(&json!({"key": key, "file": file, "outcome": "written", "size": answer.size, "checksum": checksum, "checksums": answer.checksums}));
    }
    let verdict = match checksum {
        ChecksumVerdict::Valid => "FITS checksum verified",
        ChecksumVerdict::Absent => "no FITS checksum to verify",
        ChecksumVerdict::Invalid => "FITS checksum INVALID as stored",
    };
    if file != "-" {
        output.text(&format!("{file}: {} bytes, {verdict}", answer.size));
    }
    if checksum == ChecksumVerdict::Invalid && !output.quiet {
        eprintln!(
            "ds: warning: {key} holds an HDU whose CHECKSUM card does not match its bytes; they are delivered as stored"
        );
    }
    Ok(())
}

/// `ds fits-index`: one line per HDU.
fn fits_index_table(key: &str, index: &crate::api::FitsIndexInfo) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    let validity = match &index.reason {
        Some(reason) => format!("not valid FITS: {reason}"),
        None => "valid FITS".to_owned(),
    };
    let _ = writeln!(
        text,
        "{key}: {} HDUs, {validity}, checksums {}",
        index.hdus.len(),
        index.checksum
    );
    let extname_width = index
        .hdus
        .iter()
        .filter_map(|hdu| hdu.extname.as_ref().map(String::len))
        .max()
        .unwrap_or(0)
        .max(7);
    let _ = writeln!(
        text,
        "{:>3}  {:<9}  {:<extname_width$}  {:>6}  {:>6}  {:<16}  {:<8}  {:<8}",
        "HDU", "XTENSION", "EXTNAME", "EXTVER", "BITPIX", "NAXIS", "CHECKSUM", "DATASUM"
    );
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
    for hdu in &index.hdus {
        let axes = if hdu.naxis.is_empty() {
            "-".to_owned()
        } else {
            let axes: Vec<String> = hdu.naxis.iter().map(u64::to_string).collect();
            axes.join("x")
        };
        let xtension = or_dash(hdu.xtension.clone()) + if hdu.zimage { "*" } else { "" };
        let _ = writeln!(
            text,
            "{:>3}  {:<9}  {:<extname_width$}  {:>6}  {:>6}  {:<16}  {:<8}  {:<8}",
            hdu.index,
            xtension,
            or_dash(hdu.extname.clone()),
            or_dash(hdu.extver.map(|version| version.to_string())),
            hdu.bitpix,
            axes,
            hdu.checksum,
            hdu.datasum
        );
    }
    if index.hdus.iter().any(|hdu| hdu.zimage) {
        let _ = writeln!(text, "* tile-compressed image (ZIMAGE = T)");
    }
    // Columns are padded; line ends are not.
    text.lines()
        .map(|line| format!("{}\n", line.trim_end()))
        .collect()
}

async fn verify(
    client: &Client,
    output: &Output,
    key: &str,
    file: Option<PathBuf>,
    url: &str,
) -> Result<(), Failure> {
    let fail = |error: Error| Failure::from_client(&error, url);
    let (intact, value, line) = match file {
        Some(file) => {
            let (local, head) =
                tokio::try_join!(crate::local_digest(&file), client.head(key)).map_err(fail)?;
            let same = local.eq_ignore_ascii_case(&head.blake3);
            let line = if same {
                format!("{} matches {key} (BLAKE3 {local})", file.display())
            } else {
                format!(
                    "{} differs from {key}: BLAKE3 {local} here, {} on the server",
                    file.display(),
                    head.blake3
                )
            };
            let value = json!({"key": key, "file": file.display().to_string(), "intact": same, "local_blake3": local, "server_blake3": head.blake3});
            (same, value, line)
        }
        None => {
            let verification = client.verify_stored(key).await.map_err(fail)?;
            let line = if verification.intact {
                format!(
                    "the server's copy of {key} is intact ({} bytes re-hashed to BLAKE3 {})",
                    verification.size, verification.blake3
                )
            } else {
                format!(
                    "the server's copy of {key} is damaged and has been quarantined; restore it with ds put from a good copy"
                )
            };
            let value = serde_json::to_value(&verification).expect("wire types serialise");
            (verification.intact, value, line)
        }
    };
    output.json_line(&value);
    if intact {
        output.text(&line);
        Ok(())
    } else {
        Err(Failure {
            message: line,
            code: 5,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let check = |text: &str, size: u64, expected: Option<std::ops::Range<u64>>| {
            assert_eq!(parse_range(text, size), expected, "{text} of {size}");
        };
        check("0-9", 100, Some(0..10));
        check("90-200", 100, Some(90..100));
        check("10-", 100, Some(10..100));
        check("-10", 100, Some(90..100));
        check("-", 100, None);
        check("5-4", 100, None);
        check("x-1", 100, None);
        check("100-", 100, None);
    }

    proptest::proptest! {
        /// Any text: no panic, and a range is always inside the object and not empty.
        #[test]
        fn ranges_stay_inside_the_object(text in "[-0-9]{0,12}", size in 1u64..1 << 40) {
            if let Some(range) = parse_range(&text, size) {
                proptest::prop_assert!(range.start < range.end && range.end <= size);
            }
        }
    }

    #[test]
    fn view_file_names() {
        let hdu = |text: &str| FitsPart::Hdu {
            hdu: text.parse().expect("hdu"),
            standalone: false,
        };
        assert_eq!(
            view_file_name("kids/frame.fits", &hdu("3")),
            PathBuf::from("frame_hdu3.fits")
        );
        assert_eq!(
            view_file_name("kids/frame.fits.fz", &hdu("SCI,2")),
            PathBuf::from("frame_hduSCI_2.fits.fz")
        );
        let cut = FitsPart::Cutout {
            hdu: None,
            section: "1:2,1:2".parse().expect("section"),
        };
        assert_eq!(
            view_file_name("raw", &cut),
            PathBuf::from("raw_cutout.fits")
        );
    }

    #[test]
    fn destinations() {
        assert_eq!(
            destination("kids/a.fits", None, false),
            PathBuf::from("a.fits")
        );
        assert_eq!(
            destination("kids/a.fits", Some(Path::new("out.fits")), false),
            PathBuf::from("out.fits")
        );
        assert_eq!(
            destination("kids/a.fits", Some(Path::new("dir")), true),
            PathBuf::from("dir/a.fits")
        );
    }
}
