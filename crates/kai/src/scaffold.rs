//! `kai modules new NAME --lang rust|python|shell`: a module that runs as generated.
//!
//! The Python and shell scaffolds are the repository's own examples; the Rust one carries a
//! copy of the SDK crate, so it builds without anything but crates.io.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::data_dir::write_atomic;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Shell,
}

struct File {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

const fn file(path: &'static str, text: &'static str, executable: bool) -> File {
    File {
        path,
        text,
        executable,
    }
}

const PYTHON: &[File] = &[
    file(
        "module.yaml",
        include_str!("../../../examples/python/module.yaml"),
        false,
    ),
    file(
        "main.py",
        include_str!("../../../examples/python/main.py"),
        true,
    ),
];

const SHELL: &[File] = &[
    file(
        "module.yaml",
        include_str!("../../../examples/shell/module.yaml"),
        false,
    ),
    file(
        "main.sh",
        include_str!("../../../examples/shell/main.sh"),
        true,
    ),
];

const RUST: &[File] = &[
    file(
        "module.yaml",
        include_str!("../templates/rust/module.yaml"),
        false,
    ),
    file("run", include_str!("../templates/rust/run"), true),
    file(
        "Cargo.toml",
        include_str!("../templates/rust/Cargo.toml"),
        false,
    ),
    file(
        "src/main.rs",
        include_str!("../templates/rust/src/main.rs"),
        false,
    ),
    file(
        "kai-sdk/src/lib.rs",
        include_str!("../../kai-sdk/src/lib.rs"),
        false,
    ),
    file(
        "kai-sdk/src/claude.rs",
        include_str!("../../kai-sdk/src/claude.rs"),
        false,
    ),
];

/// The SDK's own manifest uses the workspace's settings; the copy needs them spelled out.
const SDK_MANIFEST: &str = r#"[package]
name = "kai-sdk"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
serde = { version = "1", features = ["derive"] }
serde_json = "1"
libc = "0.2"
"#;

/// Writes a new module `name` into `modules_dir/name/`; refuses to touch an existing one.
pub fn create(modules_dir: &Path, name: &str, lang: Lang) -> Result<PathBuf> {
    kai_core::name::check(name).map_err(anyhow::Error::msg)?;
    let dir = modules_dir.join(name);
    if dir.exists() {
        bail!(
            "{} already exists; choose another name or remove it",
            dir.display()
        );
    }
    let files = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Shell => SHELL,
    };
    for f in files {
        let text = if f.path == "module.yaml" {
            rename(f.text, name)
        } else {
            f.text.to_owned()
        };
        let mode = if f.executable { 0o755 } else { 0o644 };
        let path = dir.join(f.path);
        std::fs::create_dir_all(path.parent().expect("files are inside the module"))?;
        write_atomic(&path, text.as_bytes(), mode)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if lang == Lang::Rust {
        write_atomic(
            &dir.join("kai-sdk/Cargo.toml"),
            SDK_MANIFEST.as_bytes(),
            0o644,
        )?;
    }
    Ok(dir)
}

/// The template's manifest with the new module's name in its first line.
fn rename(manifest: &str, name: &str) -> String {
    manifest
        .lines()
        .map(|l| {
            if l.starts_with("name:") {
                format!("name: {name}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
