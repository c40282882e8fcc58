//! Announcements of GitHub events that no module took, in the short human form the gateway
//! always posted to the notify chat. Every payload field is treated as hostile: a missing or
//! wrongly typed field yields a fallback or an [`Announcement::Ignored`], never a panic, and
//! text is cleaned before it reaches the chat.

use serde_json::Value;

/// What to post about an event, or why nothing is posted (the reason is recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    Text(String),
    Ignored(String),
}

/// Longest title or commit subject kept; longer ones are cut and end in `…`.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest comment excerpt kept; longer bodies are cut and end in `…`.
pub const MAX_COMMENT_CHARS: usize = 200;
/// Commits listed for a push; the rest are counted as "and N more".
pub const PUSH_COMMITS_SHOWN: usize = 5;
const MAX_NAME_CHARS: usize = 100;
// A cut link would point somewhere else, so an over-long one is dropped rather than cut.
const MAX_URL_CHARS: usize = 500;

pub fn announce(event: &str, payload: &Value) -> Announcement {
    let result = match event {
        "ping" => Err("ping".to_owned()),
        "push" => push(payload),
        "pull_request" => pull_request(payload),
        "issues" => issues(payload),
        "issue_comment" => issue_comment(payload),
        "pull_request_review" => review(payload),
        other => Err(match one_line(other, MAX_NAME_CHARS) {
            name if name.is_empty() => "events without a name are not announced".to_owned(),
            name => format!("{name} events are not announced"),
        }),
    };
    match result {
        Ok(text) => Announcement::Text(text),
        Err(why) => Announcement::Ignored(why),
    }
}

fn push(p: &Value) -> Result<String, String> {
    let repo = repository(p, "push")?;
    let git_ref = str_at(p, &["ref"]).ok_or("push without a ref")?;
    let (kind, name) = if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        ("branch", branch)
    } else if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        ("tag", tag)
    } else {
        ("ref", git_ref)
    };
    let name = one_line(name, MAX_TITLE_CHARS);
    if name.is_empty() {
        return Err("push without a ref".to_owned());
    }
    let target = match kind {
        "branch" => format!("{repo}:{name}"),
        _ => format!("{kind} {name} in {repo}"),
    };
    let pusher = name_at(p, &["pusher", "name"])
        .or_else(|| name_at(p, &["sender", "login"]))
        .unwrap_or_else(|| "someone".to_owned());
    let flag = |key: &str| p.get(key).and_then(Value::as_bool) == Some(true);
    let pushed = if flag("forced") {
        "force-pushed"
    } else {
        "pushed"
    };
    let commits: Vec<&Value> = p
        .get("commits")
        .and_then(Value::as_array)
        .map(|all| all.iter().filter(|c| c.is_object()).collect())
        .unwrap_or_default();

    // A deleted ref has nothing to compare; its compare link points at an all-zero sha.
    if flag("deleted") {
        return Ok(format!("📦 {pusher} deleted {kind} {name} in {repo}"));
    }
    let mut lines = Vec::new();
    if commits.is_empty() {
        if flag("created") {
            lines.push(format!("📦 {pusher} created {kind} {name} in {repo}"));
            // A new tag or branch carries no commits of its own; the one it points at says
            // what it is.
            if let Some(head) = p.get("head_commit").filter(|c| c.is_object()) {
                lines.push(commit_line(head));
            }
        } else {
            lines.push(format!(
                "📦 {pusher} {pushed} to {target} with no new commits"
            ));
        }
    } else {
        let n = commits.len();
        let noun = if n == 1 { "commit" } else { "commits" };
        lines.push(format!("📦 {pusher} {pushed} {n} {noun} to {target}"));
        lines.extend(
            commits
                .iter()
                .take(PUSH_COMMITS_SHOWN)
                .map(|c| commit_line(c)),
        );
        if n > PUSH_COMMITS_SHOWN {
            lines.push(format!("… and {} more", n - PUSH_COMMITS_SHOWN));
        }
    }
    lines.extend(url_at(p, &["compare"]));
    Ok(lines.join("\n"))
}

fn commit_line(commit: &Value) -> String {
    // Only hex-like characters can be a sha; anything else in `id` is not worth showing.
    let sha: String = str_at(commit, &["id"])
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(7)
        .collect();
    let subject = str_at(commit, &["message"])
        .and_then(|m| m.lines().find(|l| !l.trim().is_empty()))
        .map(|l| one_line(l, MAX_TITLE_CHARS))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "(no message)".to_owned());
    if sha.is_empty() {
        format!("• {subject}")
    } else {
        format!("• {sha} {subject}")
    }
}

fn pull_request(p: &Value) -> Result<String, String> {
    let action = action(p, "pull_request")?;
    let pr = object_at(p, "pull_request").ok_or("pull_request payload has no pull request")?;
    let verb = match action.as_str() {
        "opened" => "opened",
        "reopened" => "reopened",
        "closed" if merged(pr) => "merged",
        "closed" => "closed",
        "ready_for_review" => "marked ready for review",
        other => return Err(format!("pull_request action {other} is not announced")),
    };
    let repo = repository(p, "pull_request")?;
    let number = number_at(pr, &["number"])
        .or_else(|| number_at(p, &["number"]))
        .ok_or("pull_request payload has no number")?;
    let title = title(pr);
    Ok(format!(
        "🔀 PR #{number} {verb} in {repo}: {title}{}",
        byline(pr)
    ))
}

fn merged(pr: &Value) -> bool {
    pr.get("merged").and_then(Value::as_bool) == Some(true)
        || pr.get("merged_at").is_some_and(Value::is_string)
}

fn issues(p: &Value) -> Result<String, String> {
    let action = action(p, "issues")?;
    let issue = object_at(p, "issue").ok_or("issues payload has no issue")?;
    let verb = match action.as_str() {
        "opened" | "closed" | "reopened" => action.as_str(),
        other => return Err(format!("issues action {other} is not announced")),
    };
    let repo = repository(p, "issues")?;
    let number = number_at(issue, &["number"]).ok_or("issues payload has no number")?;
    let title = title(issue);
    Ok(format!(
        "📝 Issue #{number} {verb} in {repo}: {title}{}",
        byline(issue)
    ))
}

fn issue_comment(p: &Value) -> Result<String, String> {
    let action = action(p, "issue_comment")?;
    if action != "created" {
        return Err(format!("issue_comment action {action} is not announced"));
    }
    let issue = object_at(p, "issue").ok_or("issue_comment payload has no issue")?;
    let comment = object_at(p, "comment").ok_or("issue_comment payload has no comment")?;
    let repo = repository(p, "issue_comment")?;
    let number = number_at(issue, &["number"]).ok_or("issue_comment payload has no number")?;
    // GitHub sends comments on PRs as issue comments; only this key tells them apart.
    let kind = if object_at(issue, "pull_request").is_some() {
        "PR"
    } else {
        "issue"
    };
    let author = name_at(comment, &["user", "login"])
        .or_else(|| name_at(p, &["sender", "login"]))
        .unwrap_or_else(|| "someone".to_owned());
    let title = title(issue);
    let mut lines = vec![format!(
        "💬 {author} commented on {kind} #{number} in {repo}: {title}"
    )];
    let body = excerpt(str_at(comment, &["body"]).unwrap_or_default());
    if !body.is_empty() {
        lines.push(body);
    }
    lines.extend(url_at(comment, &["html_url"]).or_else(|| url_at(issue, &["html_url"])));
    Ok(lines.join("\n"))
}

fn review(p: &Value) -> Result<String, String> {
    let action = action(p, "pull_request_review")?;
    if action != "submitted" {
        return Err(format!(
            "pull_request_review action {action} is not announced"
        ));
    }
    let review = object_at(p, "review").ok_or("pull_request_review payload has no review")?;
    let state = str_at(review, &["state"])
        .map(|s| one_line(s, MAX_NAME_CHARS).to_lowercase())
        .filter(|s| !s.is_empty())
        .ok_or("review without a state is not announced")?;
    let (icon, verdict) = match state.as_str() {
        "approved" => ("✅", "approved"),
        "changes_requested" => ("🛠", "requested changes on"),
        other => return Err(format!("review state {other} is not announced")),
    };
    let pr =
        object_at(p, "pull_request").ok_or("pull_request_review payload has no pull request")?;
    let repo = repository(p, "pull_request_review")?;
    let number = number_at(pr, &["number"]).ok_or("pull_request_review payload has no number")?;
    let reviewer = name_at(review, &["user", "login"])
        .or_else(|| name_at(p, &["sender", "login"]))
        .unwrap_or_else(|| "someone".to_owned());
    let title = title(pr);
    let mut text = format!("{icon} {reviewer} {verdict} PR #{number} in {repo}: {title}");
    if let Some(link) = url_at(review, &["html_url"]).or_else(|| url_at(pr, &["html_url"])) {
        text.push('\n');
        text.push_str(&link);
    }
    Ok(text)
}

fn action(p: &Value, event: &str) -> Result<String, String> {
    str_at(p, &["action"])
        .map(|a| one_line(a, MAX_NAME_CHARS))
        .filter(|a| !a.is_empty())
        .ok_or_else(|| format!("{event} event without an action"))
}

fn repository(p: &Value, event: &str) -> Result<String, String> {
    name_at(p, &["repository", "full_name"])
        .ok_or_else(|| format!("{event} payload has no repository"))
}

fn title(item: &Value) -> String {
    str_at(item, &["title"])
        .map(|t| one_line(t, MAX_TITLE_CHARS))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "(no title)".to_owned())
}

/// `\nby author — link`, leaving out whichever part the payload lacks.
fn byline(item: &Value) -> String {
    let parts: Vec<String> = [
        name_at(item, &["user", "login"]).map(|a| format!("by {a}")),
        url_at(item, &["html_url"]),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("\n{}", parts.join(" — "))
    }
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(*key))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path)?.as_str()
}

fn number_at(v: &Value, path: &[&str]) -> Option<u64> {
    at(v, path)?.as_u64()
}

fn object_at<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|o| o.is_object())
}

fn name_at(v: &Value, path: &[&str]) -> Option<String> {
    Some(one_line(str_at(v, path)?, MAX_NAME_CHARS)).filter(|n| !n.is_empty())
}

/// Only plain web links are shown; anything else (another scheme, embedded spaces or
/// controls) could pass for a link while going somewhere unexpected.
fn url_at(v: &Value, path: &[&str]) -> Option<String> {
    let url = str_at(v, path)?.trim();
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.chars().count() <= MAX_URL_CHARS
        && !url.chars().any(|c| c.is_whitespace() || is_unsafe(c));
    ok.then(|| url.to_owned())
}

/// Controls would garble the chat, and bidi overrides let a title visually reorder the text
/// around it (a name or a link could be made to read as something else).
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// One line: whitespace runs (newlines included) become one space, controls are dropped.
fn one_line(s: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            space = !out.is_empty();
        } else if !is_unsafe(c) {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    cut(&out, max_chars)
}

/// A comment's opening: newlines kept (they are the comment's shape), other controls dropped,
/// runs of blank lines folded into one so an excerpt is not mostly empty.
fn excerpt(body: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    for line in body.split('\n') {
        let clean: String = line
            .chars()
            .map(|c| if c == '\t' { ' ' } else { c })
            .filter(|&c| !is_unsafe(c))
            .collect();
        let clean = clean.trim_end().to_owned();
        let blank_after_blank = clean.is_empty() && lines.last().is_none_or(|l| l.is_empty());
        if !blank_after_blank {
            lines.push(clean);
        }
    }
    cut(lines.join("\n").trim(), MAX_COMMENT_CHARS)
}

/// The first `max_chars` characters, with `…` when something was cut. Counting chars (not
/// bytes) keeps the cut on a char boundary.
fn cut(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => s.to_owned(),
        Some((end, _)) => format!("{}…", s[..end].trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fixture(text: &str) -> Value {
        serde_json::from_str(text).expect("fixture is JSON")
    }

    fn text(a: Announcement) -> String {
        match a {
            Announcement::Text(t) => t,
            Announcement::Ignored(why) => panic!("expected text, got Ignored({why:?})"),
        }
    }

    fn ignored(why: &str) -> Announcement {
        Announcement::Ignored(why.to_owned())
    }

    fn repo() -> Value {
        json!({ "full_name": "octo/kai" })
    }

    fn commit(i: usize) -> Value {
        json!({
            "id": format!("{i}{i}{i}{i}{i}{i}{i}aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            "message": format!("Commit number {i}\n\nLonger explanation."),
        })
    }

    fn pr(merged: bool) -> Value {
        json!({
            "number": 7,
            "title": "Add announcements",
            "user": { "login": "alice" },
            "html_url": "https://github.com/octo/kai/pull/7",
            "merged": merged,
        })
    }

    fn review_payload(state: &str) -> Value {
        json!({
            "action": "submitted",
            "review": {
                "state": state,
                "user": { "login": "bob" },
                "html_url": "https://github.com/octo/kai/pull/7#pullrequestreview-1",
            },
            "pull_request": pr(false),
            "repository": repo(),
        })
    }

    #[test]
    fn push_fixture_is_a_created_tag() {
        let p = fixture(include_str!(
            "../../kai/tests/fixtures/github/push.none.json"
        ));
        assert_eq!(
            text(announce("push", &p)),
            "📦 Codertocat created tag simple-tag in Codertocat/Hello-World\n\
             • 6113728 Adding a .gitignore file\n\
             https://github.com/Codertocat/Hello-World/compare/simple-tag"
        );
    }

    #[test]
    fn pull_request_opened_fixture() {
        let p = fixture(include_str!(
            "../../kai/tests/fixtures/github/pull_request.opened.json"
        ));
        assert_eq!(
            text(announce("pull_request", &p)),
            "🔀 PR #2 opened in Codertocat/Hello-World: Update the README with new information.\n\
             by Codertocat — https://github.com/Codertocat/Hello-World/pull/2"
        );
    }

    #[test]
    fn pull_request_closed_fixture_is_not_merged() {
        let p = fixture(include_str!(
            "../../kai/tests/fixtures/github/pull_request.closed.json"
        ));
        assert_eq!(p["pull_request"]["merged"], json!(false));
        assert_eq!(
            text(announce("pull_request", &p)),
            "🔀 PR #2 closed in Codertocat/Hello-World: Update the README with new information.\n\
             by Codertocat — https://github.com/Codertocat/Hello-World/pull/2"
        );
    }

    #[test]
    fn pull_request_ready_for_review_fixture() {
        let p = fixture(include_str!(
            "../../kai/tests/fixtures/github/pull_request.ready_for_review.json"
        ));
        let t = text(announce("pull_request", &p));
        assert!(
            t.starts_with("🔀 PR #") && t.contains(" marked ready for review in "),
            "{t}"
        );
    }

    #[test]
    fn issues_opened_fixture() {
        let p = fixture(include_str!(
            "../../kai/tests/fixtures/github/issues.opened.json"
        ));
        assert_eq!(
            text(announce("issues", &p)),
            "📝 Issue #1 opened in Codertocat/Hello-World: Spelling error in the README file\n\
             by Codertocat — https://github.com/Codertocat/Hello-World/issues/1"
        );
    }

    #[test]
    fn issue_comment_created_fixture() {
        let p = fixture(include_str!(
            "../../kai/tests/fixtures/github/issue_comment.created.json"
        ));
        assert_eq!(
            text(announce("issue_comment", &p)),
            "💬 Codertocat commented on issue #1 in Codertocat/Hello-World: Spelling error in the README file\n\
             You are totally right! I'll get this fixed right away.\n\
             https://github.com/Codertocat/Hello-World/issues/1#issuecomment-492700400"
        );
    }

    #[test]
    fn review_submitted_fixture_is_a_comment_review_and_ignored() {
        let p = fixture(include_str!(
            "../../kai/tests/fixtures/github/pull_request_review.submitted.json"
        ));
        assert_eq!(
            announce("pull_request_review", &p),
            ignored("review state commented is not announced")
        );
    }

    #[test]
    fn ignored_fixtures() {
        let cases = [
            (
                "ping",
                include_str!("../../kai/tests/fixtures/github/ping.none.json"),
                "ping",
            ),
            (
                "check_suite",
                include_str!("../../kai/tests/fixtures/github/check_suite.completed.json"),
                "check_suite events are not announced",
            ),
            (
                "workflow_run",
                include_str!("../../kai/tests/fixtures/github/workflow_run.completed.json"),
                "workflow_run events are not announced",
            ),
            (
                "pull_request",
                include_str!("../../kai/tests/fixtures/github/pull_request.synchronize.json"),
                "pull_request action synchronize is not announced",
            ),
        ];
        for (event, payload, why) in cases {
            assert_eq!(announce(event, &fixture(payload)), ignored(why), "{event}");
        }
    }

    #[test]
    fn push_of_seven_commits_lists_five_and_counts_the_rest() {
        let p = json!({
            "ref": "refs/heads/main",
            "repository": repo(),
            "pusher": { "name": "alice" },
            "commits": (1..=7).map(commit).collect::<Vec<_>>(),
            "compare": "https://github.com/octo/kai/compare/0000000...7777777",
        });
        assert_eq!(
            text(announce("push", &p)),
            "📦 alice pushed 7 commits to octo/kai:main\n\
             • 1111111 Commit number 1\n\
             • 2222222 Commit number 2\n\
             • 3333333 Commit number 3\n\
             • 4444444 Commit number 4\n\
             • 5555555 Commit number 5\n\
             … and 2 more\n\
             https://github.com/octo/kai/compare/0000000...7777777"
        );
    }

    #[test]
    fn push_of_one_commit_falls_back_to_sender_and_says_commit() {
        let p = json!({
            "ref": "refs/heads/main",
            "repository": repo(),
            "sender": { "login": "carol" },
            "forced": true,
            "commits": [commit(1)],
        });
        assert_eq!(
            text(announce("push", &p)),
            "📦 carol force-pushed 1 commit to octo/kai:main\n• 1111111 Commit number 1"
        );
    }

    #[test]
    fn push_deleting_a_branch() {
        let p = json!({
            "ref": "refs/heads/old-work",
            "deleted": true,
            "repository": repo(),
            "pusher": { "name": "alice" },
            "commits": [],
            "compare": "https://github.com/octo/kai/compare/abc...000",
        });
        assert_eq!(
            text(announce("push", &p)),
            "📦 alice deleted branch old-work in octo/kai"
        );
    }

    #[test]
    fn push_without_new_commits() {
        let p = json!({
            "ref": "refs/heads/main",
            "repository": repo(),
            "pusher": { "name": "alice" },
            "forced": true,
            "commits": [],
            "compare": "https://github.com/octo/kai/compare/bbb...aaa",
        });
        assert_eq!(
            text(announce("push", &p)),
            "📦 alice force-pushed to octo/kai:main with no new commits\n\
             https://github.com/octo/kai/compare/bbb...aaa"
        );
    }

    #[test]
    fn merged_pr_shows_as_merged() {
        let p = json!({ "action": "closed", "pull_request": pr(true), "repository": repo() });
        assert_eq!(
            text(announce("pull_request", &p)),
            "🔀 PR #7 merged in octo/kai: Add announcements\n\
             by alice — https://github.com/octo/kai/pull/7"
        );
    }

    #[test]
    fn reopened_issue_and_other_issue_actions() {
        let issue = json!({
            "number": 3,
            "title": "Crash on start",
            "user": { "login": "dave" },
            "html_url": "https://github.com/octo/kai/issues/3",
        });
        let p = json!({ "action": "reopened", "issue": issue, "repository": repo() });
        assert_eq!(
            text(announce("issues", &p)),
            "📝 Issue #3 reopened in octo/kai: Crash on start\n\
             by dave — https://github.com/octo/kai/issues/3"
        );
        let p = json!({ "action": "labeled", "issue": issue, "repository": repo() });
        assert_eq!(
            announce("issues", &p),
            ignored("issues action labeled is not announced")
        );
    }

    #[test]
    fn review_approved() {
        assert_eq!(
            text(announce("pull_request_review", &review_payload("approved"))),
            "✅ bob approved PR #7 in octo/kai: Add announcements\n\
             https://github.com/octo/kai/pull/7#pullrequestreview-1"
        );
    }

    #[test]
    fn review_changes_requested_in_any_case() {
        for state in ["changes_requested", "CHANGES_REQUESTED"] {
            assert_eq!(
                text(announce("pull_request_review", &review_payload(state))),
                "🛠 bob requested changes on PR #7 in octo/kai: Add announcements\n\
                 https://github.com/octo/kai/pull/7#pullrequestreview-1"
            );
        }
    }

    #[test]
    fn comment_on_a_pr_is_cut_at_200_chars_on_a_char_boundary() {
        let body = format!("{}é{}", "a".repeat(199), "🦀".repeat(50));
        let p = json!({
            "action": "created",
            "issue": {
                "number": 7,
                "title": "Add announcements",
                "pull_request": { "url": "https://api.github.com/repos/octo/kai/pulls/7" },
            },
            "comment": {
                "body": body,
                "user": { "login": "erin" },
                "html_url": "https://github.com/octo/kai/pull/7#issuecomment-9",
            },
            "repository": repo(),
        });
        assert_eq!(
            text(announce("issue_comment", &p)),
            format!(
                "💬 erin commented on PR #7 in octo/kai: Add announcements\n{}é…\n\
                 https://github.com/octo/kai/pull/7#issuecomment-9",
                "a".repeat(199)
            )
        );
    }

    #[test]
    fn comment_body_keeps_newlines_but_not_controls() {
        assert_eq!(
            excerpt("\r\n first\u{7}\r\n\r\n\r\n\tsecond\u{202E}\n"),
            "first\n\n second"
        );
        assert_eq!(excerpt(&"🦀".repeat(201)), format!("{}…", "🦀".repeat(200)));
    }

    #[test]
    fn titles_are_one_clean_line_of_at_most_200_chars() {
        assert_eq!(
            one_line(
                " Fix\n\tthe\u{0}\u{1b}[31m  bug\u{202E}\r\n",
                MAX_TITLE_CHARS
            ),
            "Fix the[31m bug"
        );
        let long = "é".repeat(250);
        assert_eq!(
            one_line(&long, MAX_TITLE_CHARS),
            format!("{}…", "é".repeat(200))
        );
        let p = json!({
            "action": "opened",
            "pull_request": {
                "number": 1,
                "title": format!("evil\n{}", "x".repeat(300)),
                "user": { "login": "m\nallory" },
                "html_url": "javascript:alert(1)",
            },
            "repository": repo(),
        });
        assert_eq!(
            text(announce("pull_request", &p)),
            format!(
                "🔀 PR #1 opened in octo/kai: evil {}…\nby m allory",
                "x".repeat(195)
            )
        );
    }

    #[test]
    fn other_events_and_actions_are_ignored_with_a_reason() {
        assert_eq!(
            announce("star", &json!({})),
            ignored("star events are not announced")
        );
        assert_eq!(
            announce("", &json!({})),
            ignored("events without a name are not announced")
        );
        assert_eq!(
            announce(
                "pull_request",
                &json!({ "action": "labeled", "pull_request": pr(false) })
            ),
            ignored("pull_request action labeled is not announced")
        );
        assert_eq!(
            announce("issue_comment", &json!({ "action": "edited" })),
            ignored("issue_comment action edited is not announced")
        );
        assert_eq!(
            announce("pull_request_review", &json!({ "action": "dismissed" })),
            ignored("pull_request_review action dismissed is not announced")
        );
        assert_eq!(
            announce("pull_request", &json!({ "pull_request": 5 })),
            ignored("pull_request event without an action")
        );
        assert_eq!(
            announce(
                "pull_request",
                &json!({ "action": "opened", "pull_request": 5 })
            ),
            ignored("pull_request payload has no pull request")
        );
        assert_eq!(
            announce("push", &json!({ "ref": "refs/heads/main" })),
            ignored("push payload has no repository")
        );
    }

    #[test]
    fn hostile_payloads_never_panic_and_never_leak_controls() {
        let events = [
            "push",
            "pull_request",
            "issues",
            "issue_comment",
            "pull_request_review",
            "ping",
            "check_suite",
            "\u{0}evil\nname\u{202E}",
        ];
        let weird = json!({
            "full_name": ["x"], "login": 5, "number": -1, "title": { "a": 1 },
            "state": 3, "html_url": 7, "user": "u", "body": null, "merged": "yes",
        });
        let payloads = [
            json!({}),
            json!([]),
            json!(null),
            json!(5),
            json!("string"),
            json!({ "pull_request": 5 }),
            json!({ "action": 5, "ref": 5, "commits": 5, "repository": 5 }),
            json!({ "action": "opened", "pull_request": weird, "issue": weird, "repository": weird }),
            json!({ "action": "closed", "pull_request": {}, "repository": repo() }),
            json!({ "action": "opened", "pull_request": { "number": 1.5 }, "repository": repo() }),
            json!({ "action": "opened", "issue": { "number": u64::MAX }, "repository": repo() }),
            json!({ "action": "created", "issue": { "number": 1 }, "comment": {}, "repository": repo() }),
            json!({ "action": "created", "issue": { "number": 1 }, "comment": { "body": 5 }, "repository": repo() }),
            json!({ "action": "submitted", "review": { "state": "APPROVED" }, "pull_request": { "number": 2 }, "repository": repo() }),
            json!({ "action": "submitted", "review": { "state": ["approved"] }, "pull_request": 5, "repository": repo() }),
            json!({ "ref": "", "repository": repo() }),
            json!({ "ref": "refs/heads/", "repository": repo() }),
            json!({ "ref": "refs/tags/\u{0}\n", "repository": repo(), "deleted": "true" }),
            json!({ "ref": "refs/heads/x", "repository": repo(), "created": true, "head_commit": 5 }),
            json!({ "ref": "refs/heads/x", "repository": repo(), "commits": [5, null, [], { "id": 5, "message": [] }, { "id": "é\u{0}🦀", "message": "\n\n" }, {}] }),
            json!({ "ref": "x\u{1b}", "repository": { "full_name": "a\u{202E}b\nc" }, "pusher": { "name": "\u{7}" }, "compare": "https://ok/\u{0}" }),
            json!({
                "action": "opened\u{0}",
                "issue": { "number": 1, "title": "\u{0}\u{1}\u{2}", "user": { "login": "\n" } },
                "repository": repo(),
            }),
        ];
        for event in events {
            for payload in &payloads {
                let (Announcement::Text(out) | Announcement::Ignored(out)) =
                    announce(event, payload);
                assert!(
                    !out.chars().any(|c| c != '\n' && is_unsafe(c)),
                    "{event} {payload}: {out:?}"
                );
            }
        }
    }
}
