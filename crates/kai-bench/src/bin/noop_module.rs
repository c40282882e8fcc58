//! A minimal compiled kai module (run protocol 1): reads the context from standard input to
//! its end, prints a `done` result, exits. It uses std only, no serde, so that it costs as
//! little as a module can; `kai-bench` measures the host's overhead around it.

use std::io::{Read, Write};

fn main() {
    let mut context = Vec::new();
    if std::io::stdin().read_to_end(&mut context).is_err() {
        std::process::exit(1);
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(b"{\"status\":\"done\",\"summary\":\"noop\"}\n");
    let _ = out.flush();
}
