//! How this invocation prints: for people (tables, prose) or for programs (one JSON
//! document on stdout, errors as JSON on stderr), and where progress goes.
//!
//! Chosen once at start-up from `--json` / `BANGER_OUTPUT=json` and `--progress` /
//! `BANGER_PROGRESS`, then read from anywhere: every command renders through
//! [`render`], so a command cannot forget the JSON form, and every long call reports
//! through `ui::Spinner`, which asks [`progress`] what to do.
//!
//! The rule scripts rely on (docs/json.md): stdout carries only the result; progress
//! goes to stderr, and in JSON mode never to a pipe unless `--progress` asks for it.

use serde::Serialize;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::OnceLock;

/// Where long calls report their stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A spinner on a terminal; otherwise one plain line per stage, except in JSON
    /// mode, where nothing is printed.
    Auto,
    /// One plain line per stage on stderr, terminal or not.
    Plain,
    /// One JSON object per stage on stderr (`{"progress":{...}}`).
    Json,
    /// Nothing.
    None,
}

/// The output settings of this invocation.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Results as JSON on stdout, errors as JSON on stderr.
    pub json: bool,
    /// What `--progress` (or `BANGER_PROGRESS`) asked for.
    pub progress: ProgressMode,
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

/// Whether `BANGER_OUTPUT` asks for JSON (`json`; anything else means text).
pub fn env_json() -> bool {
    std::env::var("BANGER_OUTPUT").is_ok_and(|v| v.eq_ignore_ascii_case("json"))
}

/// Fix the settings for this run (the first call wins).
pub fn init(json_flag: bool, progress: Option<ProgressMode>) {
    let _ = OUTPUT.set(Output {
        json: json_flag || env_json(),
        progress: progress.unwrap_or(ProgressMode::Auto),
    });
}

/// The settings (text and automatic progress before [`init`]).
pub fn get() -> Output {
    OUTPUT.get().copied().unwrap_or(Output {
        json: env_json(),
        progress: ProgressMode::Auto,
    })
}

/// Whether results are printed as JSON.
pub fn json() -> bool {
    get().json
}

/// How progress is shown, resolved against the terminal: never `Auto`.
pub fn progress() -> ProgressMode {
    let o = get();
    match o.progress {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Auto,
        ProgressMode::Auto if o.json => ProgressMode::None,
        ProgressMode::Auto => ProgressMode::Plain,
        m => m,
    }
}

/// Print `value` as JSON in JSON mode, for people with `human` otherwise.
pub fn render<T: Serialize>(value: &T, human: impl FnOnce(&T)) -> anyhow::Result<ExitCode> {
    if json() {
        print_json(value)?;
    } else {
        human(value);
    }
    Ok(ExitCode::SUCCESS)
}

/// `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// In text mode, print `line` on stdout; in JSON mode print nothing (the command
/// prints its record instead).
pub fn say(line: impl AsRef<str>) {
    if !json() {
        println!("{}", line.as_ref());
    }
}

/// A hint for people (the next command to run) on stderr; silent in JSON mode.
pub fn hint(line: impl AsRef<str>) {
    if !json() {
        anstream::eprintln!("{}", line.as_ref());
    }
}
