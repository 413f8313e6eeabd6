//! Progress bars (indicatif) for the library's `Progress` callbacks.

use indicatif::{ProgressBar, ProgressStyle};

/// A byte progress bar on stderr; hidden with `--quiet` or when stderr is not a terminal.
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar that draws unless `quiet`.
    pub fn new(quiet: bool) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(byte_style());
        Bar { bar }
    }
}

/// A bar of bytes with rate and time left.
fn byte_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .expect("static template")
    .progress_chars("=> ")
}

impl thaw_indexer::Progress for Bar {
    fn start(&self, phase: &str, total_bytes: u64) {
        if total_bytes == 0 {
            // Unknown total (indexing discovers files as it goes): count bytes and rate.
            self.bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg:>10} {bytes} {binary_bytes_per_sec} {elapsed}",
                )
                .expect("static template"),
            );
            self.bar
                .enable_steady_tick(std::time::Duration::from_millis(200));
        } else {
            self.bar.set_style(byte_style());
        }
        self.bar.set_message(phase.to_string());
        self.bar.set_length(total_bytes);
        self.bar.set_position(0);
    }

    fn start_count(&self, phase: &str, total: u64) {
        self.bar.set_style(
            ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} eta {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        self.bar.set_message(phase.to_string());
        self.bar.set_length(total);
        self.bar.set_position(0);
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
