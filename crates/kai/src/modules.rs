//! Finding modules: the built-in manifests compiled into the binary, and user modules under
//! `$KAI_DATA_DIR/modules/*/module.yaml`. The registry itself (kai-core) decides what loads.

use std::path::Path;

use kai_core::registry::{ManifestSource, Origin, Registry};

/// Largest manifest read; anything bigger is refused unread.
const MAX_MANIFEST_BYTES: u64 = 256 * 1024;

/// The built-in modules' manifests. In them, a `run` program named `kai` is this binary.
pub const BUILTIN_MANIFESTS: &[(&str, &str)] =
    &[("echo", include_str!("../builtin/echo/module.yaml"))];

/// Reads a manifest file, refusing huge ones.
pub fn read_manifest(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read the manifest: {e}"))?;
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(format!(
            "the manifest is bigger than {} KiB",
            MAX_MANIFEST_BYTES / 1024
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read the manifest: {e}"))
}

fn builtin_sources() -> impl Iterator<Item = ManifestSource> {
    BUILTIN_MANIFESTS.iter().map(|(name, text)| ManifestSource {
        origin: Origin::BuiltIn,
        expected_name: Some((*name).to_owned()),
        file: format!("builtin:{name}/module.yaml"),
        text: Ok((*text).to_owned()),
    })
}

/// User manifests under `modules_dir`, sorted by directory name. A directory without a
/// `module.yaml` holds a built-in module's data and is not a module of its own.
pub fn user_sources(modules_dir: &Path) -> Vec<ManifestSource> {
    let mut dirs: Vec<_> = std::fs::read_dir(modules_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .collect();
    dirs.sort_by_key(|e| e.file_name());
    dirs.into_iter()
        .filter_map(|dir| {
            let manifest = dir.path().join("module.yaml");
            if !manifest.exists() {
                return None;
            }
            let dir_name = dir.file_name().to_string_lossy().into_owned();
            let text = match kai_core::name::check(&dir_name) {
                Err(e) => Err(format!("{e} (the directory's name is the module's name)")),
                Ok(()) => read_manifest(&manifest),
            };
            Some(ManifestSource {
                origin: Origin::User { dir: dir.path() },
                expected_name: Some(dir_name),
                file: manifest.to_string_lossy().into_owned(),
                text,
            })
        })
        .collect()
}

/// Built-in modules, then user modules (which replace built-ins of the same name).
pub fn load_registry(modules_dir: &Path) -> Registry {
    Registry::build(builtin_sources().chain(user_sources(modules_dir)))
}
