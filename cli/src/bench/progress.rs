//! The progress line on stderr, drawn only when stderr is a terminal (so redirected
//! output and JSON consumers never see it).

use std::io::{self, IsTerminal, Write};

/// Draws `[ 3/16] pages / writebehind [#####.....]  50%` on one line of stderr.
pub struct Progress {
    enabled: bool,
    total: usize,
}

impl Progress {
    /// A progress line for `total` runs; silent unless stderr is a terminal.
    pub fn new(total: usize) -> Progress {
        Progress {
            enabled: io::stderr().is_terminal(),
            total,
        }
    }

    /// Shows run `index` (0-based) named `label` at `fraction` done (0..=1), or a phase
    /// such as "pre-sizing" when `fraction` is `None`.
    pub fn show(&self, index: usize, label: &str, fraction: Option<f64>) {
        if !self.enabled {
            return;
        }
        let line = render(index, self.total, label, fraction);
        let mut err = io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{line}");
        let _ = err.flush();
    }

    /// Erases the line (before the table is printed).
    pub fn clear(&self) {
        if self.enabled {
            let _ = write!(io::stderr().lock(), "\r\x1b[K");
        }
    }
}

fn render(index: usize, total: usize, label: &str, fraction: Option<f64>) -> String {
    let w = total.to_string().len();
    let head = format!("[{:>w$}/{total}] {label}", index + 1);
    match fraction {
        Some(f) => {
            let f = f.clamp(0.0, 1.0);
            let filled = (f * 20.0).round() as usize;
            format!(
                "{head} [{}{}] {:>3.0}%",
                "#".repeat(filled),
                ".".repeat(20 - filled),
                f * 100.0
            )
        }
        None => head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_bar() {
        assert_eq!(
            render(2, 16, "pages / pwrite", Some(0.5)),
            "[ 3/16] pages / pwrite [##########..........]  50%"
        );
        assert_eq!(
            render(0, 4, "seq / pwrite: pre-sizing", None),
            "[1/4] seq / pwrite: pre-sizing"
        );
        assert!(render(0, 1, "x", Some(7.0)).ends_with("100%"));
    }
}
