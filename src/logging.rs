//! Logging to stderr through the `log` facade. Stdout is reserved for machine output.
//!
//! On a terminal lines carry a coloured level; otherwise they are plain `level: message` lines,
//! and under systemd (`JOURNAL_STREAM` set) they get `<N>` priority prefixes the journal reads.

use std::io::{IsTerminal, Write};

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    level: LevelFilter,
    tty: bool,
    journal: bool,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Dependencies log at debug/trace too; keep them one level quieter than ours.
        let ours = record.target().starts_with("hybridboot");
        if !ours && record.level() > Level::Info && self.level < LevelFilter::Trace {
            return;
        }
        // tss-esapi logs every failed TPM command at error level, expected ones included
        // (probing an absent persistent handle), and context teardown at info; the TPM backend
        // reports failures itself with context, so its lines only show at -vv.
        if record.target().starts_with("tss_esapi") && self.level < LevelFilter::Trace {
            return;
        }
        let line = if self.journal {
            let prio = match record.level() {
                Level::Error => 3,
                Level::Warn => 4,
                Level::Info => 6,
                Level::Debug | Level::Trace => 7,
            };
            format!("<{prio}>{}\n", record.args())
        } else if self.tty {
            let (colour, name) = match record.level() {
                Level::Error => ("31", "error"),
                Level::Warn => ("33", "warning"),
                Level::Info => ("32", "info"),
                Level::Debug => ("36", "debug"),
                Level::Trace => ("90", "trace"),
            };
            format!("\x1b[{colour}m{name}\x1b[0m: {}\n", record.args())
        } else {
            format!(
                "{}: {}\n",
                record.level().as_str().to_ascii_lowercase(),
                record.args()
            )
        };
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Installs the logger. `verbosity` counts `-v` minus `-q`: 0 = info, 1 = debug, 2+ = trace,
/// -1 = warnings only, -2 or less = errors only.
pub fn init(verbosity: i8) {
    let level = match verbosity {
        i8::MIN..=-2 => LevelFilter::Error,
        -1 => LevelFilter::Warn,
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    let logger = StderrLogger {
        level,
        tty: std::io::stderr().is_terminal(),
        journal: std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}
