//! The repository's example modules and the scaffolds of `kai modules new` run as shipped,
//! through the real `kai run`, and leave a complete journal entry (SPEC 3.3: "the repository
//! carries one such example"; SPEC 9: "scaffold a working module").

#[macro_use]
mod common;

use std::path::PathBuf;

use common::*;
use serde_json::json;

fn example(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(dir)
}

/// Runs `module` twice for one entity: each run prints its result, leaves exactly one complete
/// journal file, and counts its runs in its state.
fn runs_twice(kai: &Kai, module: &str, greeting: &str) {
    for n in 1..=2 {
        let (run, entry) = kai.run_module(module, &["--entity", "octo/repo#42"]);
        run.success();
        check_eq!(run, entry["status"], "done");
        check_eq!(
            run,
            entry["summary"],
            format!("Hello octo/repo#42 from {greeting} (run {n})")
        );
        check_eq!(run, entry["chat_id"], CHAT_ID);
        check_eq!(run, entry["entity"], "octo/repo#42");
        check_eq!(run, entry["trigger"], "invoke");
        check!(
            run,
            entry["delivery_id"]
                .as_str()
                .is_some_and(|d| d.starts_with("d_")),
            "kai gives an invoked run a delivery id"
        );
        check_eq!(run, kai.state(module), Some(json!({"runs": n})));
        // The human form prints the result too.
    }
    let human = kai.run(&["run", module, "--entity", "octo/repo#42"]);
    human.success();
    check!(
        human,
        human
            .stdout()
            .contains(&format!("Hello octo/repo#42 from {greeting} (run 3)")),
        "`kai run` prints the result's summary"
    );
    check_eq!(kai, kai.journal(module).len(), 3);
}

#[test]
fn the_python_example_runs() {
    let kai = Kai::new();
    kai.copy_module(&example("python"), "python-example");
    runs_twice(&kai, "python-example", "Python");
    let (_, entry) = kai.journal("python-example").pop().unwrap();
    check_eq!(
        kai,
        entry["details"],
        json!({"trigger": "invoke", "attempt": 1})
    );
}

#[test]
fn the_shell_example_runs() {
    let kai = Kai::new();
    kai.copy_module(&example("shell"), "shell-example");
    runs_twice(&kai, "shell-example", "shell");
}

#[test]
fn the_examples_validate() {
    let kai = Kai::new();
    kai.copy_module(&example("python"), "python-example");
    kai.copy_module(&example("shell"), "shell-example");
    let run = kai.run(&["modules", "validate"]);
    run.success();
    for name in ["python-example", "shell-example"] {
        check!(
            run,
            run.stdout().contains(&format!("ok    {name} 1.0.0")),
            "{name} validates"
        );
    }
}

#[test]
fn new_python_and_shell_modules_run_as_generated() {
    let kai = Kai::new();
    for (name, lang, greeting) in [("my-py", "python", "Python"), ("my-sh", "shell", "shell")] {
        let run = kai.run(&["modules", "new", name, "--lang", lang]);
        run.success();
        check!(
            run,
            run.stdout().contains(&format!("kai run {name}")),
            "`kai modules new` says how to try the module"
        );
        let manifest = std::fs::read_to_string(kai.module_dir(name).join("module.yaml")).unwrap();
        check!(
            run,
            manifest.starts_with(&format!("name: {name}\n")),
            "the scaffold carries the new name:\n{manifest}"
        );
        kai.run(&["modules", "validate"]).success();
        runs_twice(&kai, name, greeting);
    }
    // The default language is Python.
    kai.run(&["modules", "new", "my-default"]).success();
    let (run, entry) = kai.run_module("my-default", &[]);
    run.success();
    check_eq!(run, entry["summary"], "Hello invoke from Python (run 1)");
}

#[test]
fn a_new_rust_module_builds_and_runs_as_generated() {
    // cargo builds the module on its first run: it needs the toolchain's environment
    // (CARGO_HOME, RUSTUP_HOME, HOME, PATH), which the template lists in `env:`.
    let mut kai = Kai::new();
    kai.inherit_env();
    kai.run(&["modules", "new", "my-rust", "--lang", "rust"])
        .success();
    let dir = kai.module_dir("my-rust");
    // The template's 10-minute timeout is for a first build on a slow machine; a build that
    // fails says so on stderr, which the journal keeps.
    for n in 1..=2 {
        let (run, entry) = kai.run_module("my-rust", &["--entity", "octo/repo#42"]);
        check!(
            run,
            run.code() == Some(0),
            "the generated Rust module must build and run; stderr tail: {}",
            entry["stderr_tail"]
        );
        check_eq!(run, entry["status"], "done");
        check_eq!(
            run,
            entry["summary"],
            format!("Hello octo/repo#42 from Rust (run {n})")
        );
        check_eq!(run, kai.state("my-rust"), Some(json!({"runs": n})));
    }
    check!(
        kai,
        dir.join("target/release/module").exists(),
        "the module was built in its own directory"
    );
}

#[test]
fn modules_new_refuses_to_overwrite_or_misname() {
    let kai = Kai::new();
    kai.run(&["modules", "new", "taken", "--lang", "shell"])
        .success();
    let main = std::fs::read_to_string(kai.module_dir("taken").join("main.sh")).unwrap();
    let again = kai.run(&["modules", "new", "taken", "--lang", "python"]);
    again.expect_code(2);
    check!(
        again,
        again.stderr().contains("already exists"),
        "a second `new` with the same name is refused"
    );
    check_eq!(
        again,
        std::fs::read_to_string(kai.module_dir("taken").join("main.sh")).unwrap(),
        main,
        "the existing module is left as it was"
    );
    check!(
        again,
        !kai.module_dir("taken").join("main.py").exists(),
        "nothing of the refused scaffold was written"
    );
    let bad = kai.run(&["modules", "new", "Bad_Name"]);
    bad.expect_code(2);
    check!(
        bad,
        bad.stderr().contains("Bad_Name"),
        "the refusal names the bad name"
    );
    check!(
        bad,
        !kai.module_dir("Bad_Name").exists(),
        "no directory is created for a refused name"
    );
}
