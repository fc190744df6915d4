//! The configuration file, and where each setting came from.
//!
//! Every setting is defined once, as a clap argument of [`Settings`] (or the
//! global `--log-format`). The file adds nothing of its own: each of its
//! sections is one of the settings groups and each key is a flag's name
//! without `--`. A value from the file is handed to clap as if it were a
//! flag, but only for a setting that neither a flag nor a `NOTESD_*`
//! variable gave, so the order is flag > environment > file > default and
//! every value goes through the same parser and checks.
//!
//! [`Settings`]: crate::settings::Settings

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command, CommandFactory, FromArgMatches};

use super::Cli;

/// Where the effective value of a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env,
    File,
    Default,
    /// Not given anywhere, and no default: the setting is off or computed.
    Unset,
}

impl Origin {
    fn label(self) -> &'static str {
        match self {
            Origin::Flag => "flag",
            Origin::Env => "environment",
            Origin::File => "file",
            Origin::Default => "default",
            Origin::Unset => "not set",
        }
    }
}

/// The parsed command line, with the file (if any) folded in.
pub struct Loaded {
    pub cli: Cli,
    /// The configuration file that was read.
    pub file: Option<PathBuf>,
    matches: ArgMatches,
    from_file: HashSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error("cannot read the configuration file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The subcommands whose settings a file can give.
const WITH_SETTINGS: [&str; 2] = ["serve", "check-config"];

/// Parses `args` (the whole command line, program name first), reading the
/// file that `--config` or `NOTESD_CONFIG` names.
pub fn load(args: Vec<OsString>) -> Result<Loaded, ConfigError> {
    let command = Cli::command();
    let matches = command.clone().try_get_matches_from(&args)?;
    let Some((name, sub)) = matches.subcommand() else {
        return finish(matches, None, HashSet::new());
    };
    // `check-config --example` prints the definitions, not a file.
    let example = sub.try_get_one::<bool>("example").ok().flatten() == Some(&true);
    if !WITH_SETTINGS.contains(&name) || example {
        return finish(matches, None, HashSet::new());
    }
    let Some(path) = sub.try_get_one::<PathBuf>("config").ok().flatten().cloned() else {
        return finish(matches, None, HashSet::new());
    };
    let shown = path.display().to_string();
    let invalid = |message: String| ConfigError::Invalid {
        path: shown.clone(),
        message,
    };
    let text = read_file(&path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
    let Some(sub_command) = command.find_subcommand(name) else {
        return finish(matches, Some(path), HashSet::new());
    };
    let keys = FileKeys::new(&command, sub_command);
    let mut extra = Vec::new();
    let mut overridden = Vec::new();
    let mut from_file = HashSet::new();
    for (section, entries) in &table {
        let toml::Value::Table(entries) = entries else {
            return Err(invalid(format!(
                "`{section}` is not a section; settings go in the sections {}",
                keys.sections()
            )));
        };
        for (key, value) in entries {
            let arg = keys.find(section, key).map_err(invalid)?;
            let id = arg.get_id().as_str();
            let values = flag_values(value).map_err(|m| invalid(format!("`{section}.{key}`: {m}")))?;
            if values.len() != 1 && !takes_many(arg) {
                return Err(invalid(format!("`{section}.{key}`: takes one value, not a list")));
            }
            let flags = values.into_iter().map(|value| {
                let mut flag = OsString::from(format!("--{key}="));
                flag.push(value);
                flag
            });
            // A value a flag or variable overrides is still checked: a
            // broken file must not wait for the day the override goes.
            if matches!(
                sub.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                overridden.extend(flags);
            } else {
                extra.extend(flags);
                from_file.insert(id.to_owned());
            }
        }
    }
    if !overridden.is_empty() {
        let alone = [OsString::from("notesd"), OsString::from(name)]
            .into_iter()
            .chain(overridden);
        command
            .clone()
            .try_get_matches_from(alone)
            .map_err(|e| invalid(e.render().to_string().trim().to_owned()))?;
    }
    if extra.is_empty() {
        return finish(matches, Some(path), from_file);
    }
    let mut args = args;
    args.extend(extra);
    let matches = command.try_get_matches_from(&args).map_err(|e| {
        // The file's value failed clap's parser: say which file.
        invalid(e.render().to_string().trim().to_owned())
    })?;
    finish(matches, Some(path), from_file)
}

fn finish(
    matches: ArgMatches,
    file: Option<PathBuf>,
    from_file: HashSet<String>,
) -> Result<Loaded, ConfigError> {
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(Loaded {
        cli,
        file,
        matches,
        from_file,
    })
}

/// Largest configuration file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads the configuration file: a regular file (not a FIFO that would
/// block the start, not a device that never ends), of at most
/// [`MAX_FILE_BYTES`], checked on the handle that is then read.
fn read_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        // A FIFO would block `open` itself until a writer came.
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    Ok(text)
}

/// A file value as the strings clap would have read from flags.
fn flag_values(value: &toml::Value) -> Result<Vec<String>, &'static str> {
    match value {
        toml::Value::String(s) => Ok(vec![s.clone()]),
        toml::Value::Integer(i) => Ok(vec![i.to_string()]),
        toml::Value::Boolean(b) => Ok(vec![b.to_string()]),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                _ => Err("a list holds strings or integers"),
            })
            .collect(),
        toml::Value::Float(_) => {
            Err("not a whole number; give sizes in bytes and durations as strings like \"15m\"")
        }
        toml::Value::Datetime(_) | toml::Value::Table(_) => Err("not a value of this setting"),
    }
}

/// The keys a file may hold: each settings group's flags, by section.
struct FileKeys<'a> {
    /// (section, flag name, argument), in the order of `--help`.
    keys: Vec<(String, &'a str, &'a Arg)>,
}

impl<'a> FileKeys<'a> {
    fn new(root: &'a Command, sub: &'a Command) -> Self {
        let mut keys = Vec::new();
        for command in [root, sub] {
            for group in command.get_groups() {
                let section = group.get_id().as_str();
                // clap makes a group of each derive struct named after the
                // type; only ours (lower-case) are sections.
                if section.bytes().any(|b| b.is_ascii_uppercase()) {
                    continue;
                }
                for id in group.get_args() {
                    if let Some(arg) = command.get_arguments().find(|a| a.get_id() == id)
                        && let Some(long) = arg.get_long()
                    {
                        keys.push((section.to_owned(), long, arg));
                    }
                }
            }
        }
        Self { keys }
    }

    fn sections(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for (section, _, _) in &self.keys {
            if !names.contains(&section.as_str()) {
                names.push(section);
            }
        }
        names
            .iter()
            .map(|n| format!("[{n}]"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn find(&self, section: &str, key: &str) -> Result<&'a Arg, String> {
        if let Some((_, _, arg)) = self.keys.iter().find(|(s, k, _)| s == section && *k == key) {
            return Ok(arg);
        }
        if let Some((home, _, _)) = self.keys.iter().find(|(_, k, _)| *k == key) {
            return Err(format!(
                "unknown key `{section}.{key}`: `{key}` belongs in [{home}]"
            ));
        }
        if self.keys.iter().any(|(s, _, _)| s == section) {
            return Err(format!("unknown key `{section}.{key}`"));
        }
        Err(format!(
            "unknown section [{section}]; the sections are {}",
            self.sections()
        ))
    }
}

/// Settings whose values `check-config` must not print: those whose
/// environment value clap hides too.
fn is_secret(arg: &Arg) -> bool {
    arg.is_hide_env_values_set()
}

impl Loaded {
    /// The effective settings of `subcommand` as a TOML document, each
    /// value with its origin; secrets are replaced by `<redacted>`.
    pub fn effective(&self, name: &str) -> String {
        let root = Cli::command();
        let Some(definition) = root.find_subcommand(name) else {
            return String::new();
        };
        let sub = self.matches.subcommand_matches(name).unwrap_or(&self.matches);
        let keys = FileKeys::new(&root, definition);
        let mut out = String::from("# Effective settings (flag > environment > file > default).\n");
        if let Some(file) = &self.file {
            let _ = writeln!(out, "# File: {}", file.display());
        }
        let mut section = "";
        for (name, key, arg) in &keys.keys {
            if name != section {
                let _ = write!(out, "\n[{name}]\n");
                section = name;
            }
            let id = arg.get_id().as_str();
            let origin = self.origin(sub, id);
            let raw: Vec<String> = sub
                .get_raw(id)
                .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            if origin == Origin::Unset {
                let _ = writeln!(out, "# {key}: not set");
                continue;
            }
            let line = if is_secret(arg) {
                format!("{key} = \"<redacted>\"")
            } else {
                format!("{key} = {}", toml_value(arg, &raw))
            };
            let _ = writeln!(out, "{line:<60} # {}", origin.label());
        }
        out
    }

    fn origin(&self, matches: &ArgMatches, id: &str) -> Origin {
        match matches.value_source(id) {
            Some(ValueSource::CommandLine) if self.from_file.contains(id) => Origin::File,
            Some(ValueSource::CommandLine) => Origin::Flag,
            Some(ValueSource::EnvVariable) => Origin::Env,
            Some(ValueSource::DefaultValue) => Origin::Default,
            _ => Origin::Unset,
        }
    }

    /// The settings subcommand this command line runs, if any.
    pub fn settings_subcommand(&self) -> Option<&str> {
        self.matches
            .subcommand_name()
            .filter(|name| WITH_SETTINGS.contains(name))
    }
}

/// Raw flag values written as the TOML value the file would hold.
fn toml_value(arg: &Arg, raw: &[String]) -> String {
    let one = |v: &str| {
        if v.parse::<i64>().is_ok() || v == "true" || v == "false" {
            v.to_owned()
        } else {
            // A JSON string is a valid TOML basic string.
            serde_json::to_string(v).unwrap_or_default()
        }
    };
    if takes_many(arg) {
        format!("[{}]", raw.iter().map(|v| one(v)).collect::<Vec<_>>().join(", "))
    } else {
        raw.first().map_or_else(|| "\"\"".to_owned(), |v| one(v))
    }
}

fn takes_many(arg: &Arg) -> bool {
    matches!(arg.get_action(), clap::ArgAction::Append) || arg.get_value_delimiter().is_some()
}

/// The example configuration file: every setting of `notesd serve`, in its
/// section, commented out at its default, with its help text.
pub fn example() -> String {
    let root = Cli::command();
    let Some(serve) = root.find_subcommand("serve") else {
        return String::new();
    };
    let keys = FileKeys::new(&root, serve);
    let mut out = String::from(
        "# notesd configuration file, for `notesd serve --config PATH` (or\n\
         # NOTESD_CONFIG=PATH). Generated by `notesd check-config --example`.\n\
         #\n\
         # Every key is a flag of `notesd serve` without its leading `--`, in\n\
         # the section of its group. A flag wins over its NOTESD_* variable,\n\
         # which wins over this file, which wins over the default. Unknown\n\
         # sections and keys are refused. Durations are strings such as \"15m\";\n\
         # sizes are bytes. Every line below is commented out at its default.\n",
    );
    let mut section = "";
    for (name, key, arg) in &keys.keys {
        if name != section {
            let _ = write!(out, "\n[{name}]\n");
            section = name;
        }
        out.push('\n');
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(ToString::to_string);
        for line in wrap(&help.unwrap_or_default(), 76) {
            let _ = writeln!(out, "# {line}");
        }
        if let Some(env) = arg.get_env() {
            let _ = writeln!(out, "# Environment: {}", env.to_string_lossy());
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if defaults.is_empty() && !takes_many(arg) {
            let _ = writeln!(out, "# {key} = (no default)");
        } else {
            let _ = writeln!(out, "# {key} = {}", toml_value(arg, &defaults));
        }
    }
    out
}

/// Words of `text` in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The example file as committed in the repository.
pub const EXAMPLE_PATH: &str = "deploy/notesd.example.toml";

/// Whether `path` looks writable by others: a file anyone can change could
/// switch TLS off or raise every limit.
pub fn loosely_permitted(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o022 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        std::iter::once("notesd")
            .chain(list.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn with_file(content: &str, list: &[&str]) -> Result<Loaded, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notesd.toml");
        std::fs::write(&path, content).unwrap();
        let mut all = vec!["serve", "--config", path.to_str().unwrap()];
        all.extend_from_slice(list);
        load(args(&all))
    }

    fn settings(loaded: &Loaded) -> &crate::settings::Settings {
        match &loaded.cli.command {
            super::super::Command::Serve(s) => &s.settings,
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn the_file_fills_what_flags_leave_and_flags_win() {
        let file = "[limits]\nmax-body-bytes = 4096\nrate-limit = 7\n\n[auth]\naccess-token-ttl = \"5m\"\n\n[http]\ncors-origins = [\"https://a.example\", \"https://b.example\"]\n";
        let loaded = with_file(file, &["--rate-limit", "9"]).unwrap();
        let s = settings(&loaded);
        assert_eq!(s.limits.max_body_bytes, 4096);
        assert_eq!(s.limits.rate_limit, 9, "the flag wins over the file");
        assert_eq!(s.auth.access_token_ttl, std::time::Duration::from_secs(300));
        assert_eq!(s.http.cors_origins.len(), 2);
        let shown = loaded.effective("serve");
        assert!(shown.contains("max-body-bytes = 4096"), "{shown}");
        let origin_of = |key: &str| {
            shown
                .lines()
                .find(|l| l.starts_with(&format!("{key} =")))
                .and_then(|l| l.rsplit("# ").next())
                .map(str::to_owned)
        };
        assert_eq!(origin_of("max-body-bytes").as_deref(), Some("file"));
        assert_eq!(origin_of("rate-limit").as_deref(), Some("flag"));
        assert_eq!(origin_of("listen").as_deref(), Some("default"));
        assert_eq!(origin_of("cors-origins").as_deref(), Some("file"));
    }

    #[test]
    fn unknown_or_misplaced_keys_are_refused_by_name() {
        let err = |file: &str| match with_file(file, &[]) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted: {file}"),
        };
        assert!(err("[limits]\nmax-body-byte = 1\n").contains("`limits.max-body-byte`"));
        assert!(err("[auth]\nmax-body-bytes = 1\n").contains("belongs in [limits]"));
        assert!(err("[nope]\nx = 1\n").contains("unknown section [nope]"));
        assert!(err("listen = \"1.2.3.4:1\"\n").contains("not a section"));
        assert!(err("[limits]\nmax-body-bytes = 1.5\n").contains("limits.max-body-bytes"));
        // The value goes through the flag's own parser.
        assert!(err("[http]\nipv6-prefix = 200\n").contains("ipv6-prefix"));
        assert!(err("[limits\n").contains("notesd.toml"));
    }

    /// The settings table in the README states each flag's default: a
    /// changed default (the page cache's, say) must change the table too.
    #[test]
    fn the_readme_table_gives_each_default_as_the_flag_has_it() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
        let root = Cli::command();
        let serve = root.find_subcommand("serve").unwrap();
        let default_of = |flag: &str| -> Option<Vec<String>> {
            let arg = serve.get_arguments().find(|a| a.get_long() == Some(flag))?;
            Some(
                arg.get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect(),
            )
        };
        let mut checked = 0;
        for row in readme.lines().filter(|l| l.starts_with("| `--")) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let flags: Vec<&str> = cells[0].trim_start_matches("| ").split(" / ").collect();
            let stated: Vec<&str> = cells[1].split(" / ").collect();
            for (i, flag) in flags.iter().enumerate() {
                let name = flag.trim_matches('`').trim_start_matches("--");
                let Some(actual) = default_of(name) else {
                    continue; // a global flag (`--log-format`), not serve's
                };
                // One default for several flags holds for each of them.
                let cell = if stated.len() == 1 {
                    stated[0]
                } else {
                    stated.get(i).copied().unwrap_or("none")
                };
                match cell {
                    "none" => assert!(
                        actual.is_empty(),
                        "--{name}: README says none, flag has {actual:?}"
                    ),
                    cell if cell.starts_with('`') => {
                        assert_eq!(actual, [cell.trim_matches('`')], "--{name}: README says {cell}");
                        checked += 1;
                    }
                    _ => {} // described in words ("cores − 1")
                }
            }
        }
        assert!(checked >= 40, "only {checked} defaults found in the README table");
    }

    #[test]
    fn the_readme_example_loads() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
        let block = readme
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap();
        let loaded = with_file(block, &["--acme-email", "me@example.org"]).unwrap();
        let s = settings(&loaded);
        assert_eq!(s.tls.acme_domain, ["notes.example.org"]);
        assert_eq!(s.limits.max_body_bytes, 262_144);
        assert!(s.http.metrics_listen.is_some());
        assert!(s.validate().is_ok());
    }

    #[test]
    fn the_committed_example_is_the_generated_one() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLE_PATH);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == example(),
            "{EXAMPLE_PATH} is stale: run `notesd check-config --example > {EXAMPLE_PATH}`"
        );
    }

    #[test]
    fn secrets_are_redacted_by_the_hidden_env_rule() {
        let arg = Arg::new("token").long("token").hide_env_values(true);
        assert!(is_secret(&arg));
        assert!(!is_secret(&Arg::new("listen").long("listen")));
    }

    #[test]
    fn the_example_lists_every_setting_and_parses_to_the_defaults() {
        let example = example();
        let serve = Cli::command();
        let serve = serve.find_subcommand("serve").unwrap();
        let keys = FileKeys::new(&Cli::command(), serve).keys.len();
        let settings_count = serve
            .get_arguments()
            .filter(|a| a.get_long().is_some_and(|l| l != "config" && l != "help"))
            .count();
        // Plus the global `--log-format`.
        assert_eq!(keys, settings_count + 1, "every setting has a section");
        // Uncommented (but for settings with no default), the example gives
        // exactly the defaults.
        let uncommented: String = example
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(kv) if kv.contains(" = ") && !kv.ends_with("(no default)") => kv.to_owned(),
                _ => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let loaded = with_file(&uncommented, &[]).unwrap();
        let plain = load(args(&["serve"])).unwrap();
        assert_eq!(
            format!("{:?}", settings(&loaded)),
            format!("{:?}", settings(&plain))
        );
        let shown = loaded.effective("serve");
        assert!(
            shown.lines().filter(|l| l.ends_with("# file")).count() >= keys - 12,
            "{shown}"
        );
    }
}
