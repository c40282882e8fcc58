//! The registry: every loaded manifest, and the one place that decides which modules a trigger
//! reaches. Dispatch asks it; nothing else decides.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::manifest::{Manifest, ManifestError, Trigger};

/// Where a module comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Shipped inside the binary.
    BuiltIn,
    /// `$KAI_DATA_DIR/modules/<name>/`.
    User { dir: PathBuf },
}

/// A module the registry knows.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedModule {
    pub manifest: Manifest,
    pub origin: Origin,
    /// Shown in messages: the manifest's path, or `builtin:<name>`.
    pub manifest_file: String,
}

impl LoadedModule {
    pub fn name(&self) -> &str {
        self.manifest.name.as_str()
    }

    pub fn is_builtin(&self) -> bool {
        self.origin == Origin::BuiltIn
    }
}

/// One manifest's text, as found by a loader.
#[derive(Debug, Clone)]
pub struct ManifestSource {
    pub origin: Origin,
    /// The name the module must have: its directory's name for user modules.
    pub expected_name: Option<String>,
    pub file: String,
    /// The text, or why it could not be read.
    pub text: Result<String, String>,
}

/// Every loaded module, and every manifest that failed to load.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    modules: BTreeMap<String, LoadedModule>,
    errors: Vec<ManifestError>,
}

/// A webhook delivery, as matching sees it.
#[derive(Debug, Clone, Copy)]
pub struct WebhookEvent<'a> {
    pub source: &'a str,
    pub event: &'a str,
    pub action: Option<&'a str>,
    pub payload: &'a Value,
}

/// What one module makes of a webhook it subscribes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Match<'a> {
    /// A run is due, about this entity.
    Run {
        module: &'a LoadedModule,
        entity: String,
    },
    /// The module takes this event but this delivery did not pass its filters; why, in words.
    Mismatch {
        module: &'a LoadedModule,
        reason: String,
    },
}

impl Registry {
    /// Builds the registry. Built-in sources come first; a user module of the same name
    /// replaces the built-in one. A source that fails is recorded and skipped.
    pub fn build(sources: impl IntoIterator<Item = ManifestSource>) -> Registry {
        let mut registry = Registry::default();
        for source in sources {
            match load(&source) {
                Ok(module) => {
                    registry.modules.insert(module.name().to_owned(), module);
                }
                Err(e) => registry.errors.push(e),
            }
        }
        registry
    }

    pub fn get(&self, name: &str) -> Option<&LoadedModule> {
        self.modules.get(name)
    }

    pub fn modules(&self) -> impl Iterator<Item = &LoadedModule> {
        self.modules.values()
    }

    pub fn errors(&self) -> &[ManifestError] {
        &self.errors
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// Every module whose webhook triggers take this source, event and action, with the
    /// entity of its run or the reason its filters refused the delivery.
    pub fn match_webhook<'a>(&'a self, ev: &WebhookEvent<'_>) -> Vec<Match<'a>> {
        let mut matches = Vec::new();
        for module in self.modules.values() {
            let mut refusal = None;
            let mut run = None;
            for trigger in &module.manifest.triggers {
                let Trigger::Webhook {
                    source,
                    event,
                    actions,
                    filters,
                } = trigger
                else {
                    continue;
                };
                if source != ev.source || event != ev.event {
                    continue;
                }
                if let Some(actions) = actions {
                    if !ev.action.is_some_and(|a| actions.iter().any(|x| x == a)) {
                        continue;
                    }
                }
                if let Err(reason) = filters.check(ev.payload) {
                    refusal.get_or_insert(reason);
                    continue;
                }
                run = Some(module.manifest.entity_for(ev.payload, "webhook"));
                break;
            }
            match (run, refusal) {
                (Some(Ok(entity)), _) => matches.push(Match::Run { module, entity }),
                (Some(Err(e)), _) => matches.push(Match::Mismatch {
                    module,
                    reason: format!("entity: {e}"),
                }),
                (None, Some(reason)) => matches.push(Match::Mismatch { module, reason }),
                (None, None) => {}
            }
        }
        matches
    }

    /// Every module that declares `command: name`.
    pub fn match_command(&self, name: &str) -> Vec<&LoadedModule> {
        self.modules
            .values()
            .filter(|m| {
                m.manifest
                    .triggers
                    .iter()
                    .any(|t| matches!(t, Trigger::Command { name: n } if n == name))
            })
            .collect()
    }
}

fn load(source: &ManifestSource) -> Result<LoadedModule, ManifestError> {
    let text = source.text.as_ref().map_err(|e| ManifestError {
        file: source.file.clone(),
        line: None,
        message: e.clone(),
    })?;
    let manifest = Manifest::parse(&source.file, text)?;
    if let Some(expected) = &source.expected_name {
        if manifest.name.as_str() != expected {
            return Err(ManifestError {
                file: source.file.clone(),
                line: name_line(text),
                message: format!(
                    "name `{}` differs from the module's directory `{expected}`: they must be the same",
                    manifest.name
                ),
            });
        }
    }
    Ok(LoadedModule {
        manifest,
        origin: source.origin.clone(),
        manifest_file: source.file.clone(),
    })
}

/// The line of the top-level `name:` key, for messages about it.
fn name_line(text: &str) -> Option<u64> {
    text.lines()
        .position(|l| l.starts_with("name:") || l.starts_with("\"name\":"))
        .map(|i| i as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, text: &str) -> ManifestSource {
        ManifestSource {
            origin: Origin::User {
                dir: PathBuf::from(format!("/data/modules/{name}")),
            },
            expected_name: Some(name.into()),
            file: format!("modules/{name}/module.yaml"),
            text: Ok(text.into()),
        }
    }

    fn builtin(text: &str) -> ManifestSource {
        ManifestSource {
            origin: Origin::BuiltIn,
            expected_name: None,
            file: "builtin".into(),
            text: Ok(text.into()),
        }
    }

    const PR: &str = r#"name: pr
description: reviews
run: [./x]
triggers:
  - webhook: github
    event: pull_request
    actions: [opened, synchronize]
    where: { draft: false }
entity: "{repository.full_name}#{pull_request.number}"
"#;

    fn pr_payload(action: &str, draft: bool) -> Value {
        json!({"action": action, "repository": {"full_name": "o/r"},
               "pull_request": {"number": 7, "draft": draft}})
    }

    #[test]
    fn a_broken_manifest_is_reported_and_the_rest_load() {
        let reg = Registry::build([
            user("pr", PR),
            user(
                "bad",
                "name: bad\ndescription: x\nrun: [x]\ntimeout: soon\n",
            ),
            user("other", "name: wrong\ndescription: x\nrun: [x]\n"),
        ]);
        assert_eq!(reg.len(), 1);
        let errors: Vec<String> = reg.errors().iter().map(|e| e.to_string()).collect();
        assert_eq!(errors, [
            "modules/bad/module.yaml:4: invalid duration `soon`: write a number with a unit s, m, h or d, such as 30s, 15m, 1h30m",
            "modules/other/module.yaml:1: name `wrong` differs from the module's directory `other`: they must be the same",
        ]);
    }

    #[test]
    fn a_user_module_replaces_the_builtin_of_the_same_name() {
        let reg = Registry::build([
            builtin("name: pr\ndescription: builtin\nrun: [kai]\n"),
            user("pr", PR),
        ]);
        assert_eq!(
            reg.get("pr").unwrap().manifest.description.as_str(),
            "reviews"
        );
        assert!(!reg.get("pr").unwrap().is_builtin());
    }

    #[test]
    fn webhooks_match_on_source_event_action_and_filters() {
        let reg = Registry::build([user("pr", PR)]);
        let ev = |event, payload: &Value| {
            let p = payload.clone();
            let action = p["action"].as_str().map(str::to_owned);
            (event, p, action)
        };
        let (event, payload, action) = ev("pull_request", &pr_payload("opened", false));
        let m = reg.match_webhook(&WebhookEvent {
            source: "github",
            event,
            action: action.as_deref(),
            payload: &payload,
        });
        assert!(matches!(&m[..], [Match::Run { entity, .. }] if entity == "o/r#7"));

        let (event, payload, action) = ev("pull_request", &pr_payload("closed", false));
        let m = reg.match_webhook(&WebhookEvent {
            source: "github",
            event,
            action: action.as_deref(),
            payload: &payload,
        });
        assert!(
            m.is_empty(),
            "an action the module does not list is not its business"
        );

        let (event, payload, action) = ev("pull_request", &pr_payload("opened", true));
        let m = reg.match_webhook(&WebhookEvent {
            source: "github",
            event,
            action: action.as_deref(),
            payload: &payload,
        });
        assert!(
            matches!(&m[..], [Match::Mismatch { reason, .. }] if reason == "where draft: pull_request.draft is true")
        );

        let m = reg.match_webhook(&WebhookEvent {
            source: "gitlab",
            event: "pull_request",
            action: Some("opened"),
            payload: &payload,
        });
        assert!(m.is_empty());
        let m = reg.match_webhook(&WebhookEvent {
            source: "github",
            event: "issues",
            action: Some("opened"),
            payload: &payload,
        });
        assert!(m.is_empty());
    }

    #[test]
    fn an_entity_that_cannot_be_rendered_is_a_mismatch() {
        let reg = Registry::build([user("pr", PR)]);
        let payload = json!({"action": "opened", "pull_request": {"draft": false}});
        let m = reg.match_webhook(&WebhookEvent {
            source: "github",
            event: "pull_request",
            action: Some("opened"),
            payload: &payload,
        });
        assert!(
            matches!(&m[..], [Match::Mismatch { reason, .. }] if reason == "entity: payload has no field repository.full_name")
        );
    }

    #[test]
    fn commands_find_their_modules() {
        let reg = Registry::build([user(
            "rev",
            "name: rev\ndescription: x\nrun: [x]\ntriggers:\n  - command: review\n",
        )]);
        assert_eq!(reg.match_command("review").len(), 1);
        assert!(reg.match_command("other").is_empty());
    }
}
