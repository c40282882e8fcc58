//! Validation of formatted message text (`parse_mode`), the way the Bot API
//! rejects it with `400 Bad Request: can't parse entities: ...`.
//!
//! Each parser returns the visible text (markup removed, entities decoded) or
//! the part of the description that follows `can't parse entities: `.
//! Entities themselves (offsets, types) are not computed.

/// Tags the Bot API accepts in `HTML` mode.
const HTML_TAGS: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "tg-spoiler",
    "blockquote",
    "span",
    "tg-emoji",
];

/// Characters MarkdownV2 reserves: they must be escaped with `\` unless they
/// are part of the markup.
const V2_RESERVED: &str = "_*[]()~`>#+-=|{}.!";

/// Validates `text` for `parse_mode` (matched case-insensitively, as the real
/// API does). `Ok` carries the visible text. An unknown parse mode is an
/// error of its own (`Err(None)`): "unsupported parse_mode".
pub(crate) fn parse(text: &str, parse_mode: &str) -> Result<String, Option<String>> {
    match parse_mode.to_ascii_lowercase().as_str() {
        "" => Ok(text.to_string()),
        "html" => html(text).map_err(Some),
        "markdown" => markdown(text).map_err(Some),
        "markdownv2" => markdown_v2(text).map_err(Some),
        _ => Err(None),
    }
}

/// HTML mode. Stricter than the real parser on one point: a bare `&` that
/// does not start an entity, and a bare `>`, are errors here (the real API
/// documents both as "must be escaped" but tolerates them).
fn html(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut open: Vec<String> = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i..].chars().next().expect("i is on a char boundary");
        match c {
            '<' => {
                let end = s[i..]
                    .find('>')
                    .map(|e| i + e)
                    .ok_or_else(|| format!("Unclosed start tag at byte offset {i}"))?;
                let inner = &s[i + 1..end];
                if let Some(name) = inner.strip_prefix('/') {
                    let name = name.trim().to_ascii_lowercase();
                    match open.pop() {
                        None => return Err(format!("Unexpected end tag at byte offset {i}")),
                        Some(expected) if !name.is_empty() && name != expected => {
                            return Err(format!(
                                "Unmatched end tag at byte offset {i}, expected \"</{expected}>\", found \"</{name}>\""
                            ))
                        }
                        Some(_) => {}
                    }
                } else {
                    let name: String = inner
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '/')
                        .collect::<String>()
                        .to_ascii_lowercase();
                    if !HTML_TAGS.contains(&name.as_str()) {
                        return Err(format!(
                            "Unsupported start tag \"{name}\" at byte offset {i}"
                        ));
                    }
                    open.push(name);
                }
                i = end + 1;
            }
            '>' => return Err(format!("Unexpected character '>' at byte offset {i}")),
            '&' => {
                let (ch, len) = html_entity(&s[i..])
                    .ok_or_else(|| format!("Character entity expected at byte offset {i}"))?;
                out.push(ch);
                i += len;
            }
            _ => {
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    match open.last() {
        Some(name) => Err(format!(
            "Can't find end tag corresponding to start tag \"{name}\""
        )),
        None => Ok(out),
    }
}

/// Decodes the entity at the start of `s` (which begins with `&`): the char
/// and the entity's length in bytes.
fn html_entity(s: &str) -> Option<(char, usize)> {
    let semi = s.char_indices().take(12).find(|(_, c)| *c == ';')?.0;
    let name = &s[1..semi];
    let ch = match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)?
        }
    };
    Some((ch, semi + 1))
}

/// Legacy Markdown: `*bold*`, `_italic_`, `` `code` ``, ```` ```pre``` ````,
/// `[text](url)`; `\` escapes `_ * ` [` outside entities. Entities do not nest.
fn markdown(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut i = 0;
    let unclosed = |i: usize| format!("Can't find end of the entity starting at byte offset {i}");
    while i < s.len() {
        let rest = &s[i..];
        let c = rest.chars().next().expect("i is on a char boundary");
        match c {
            '\\' if rest[1..].starts_with(['_', '*', '`', '[']) => {
                out.push_str(&rest[1..2]);
                i += 2;
            }
            '*' | '_' => {
                let end = rest[1..].find(c).ok_or_else(|| unclosed(i))?;
                out.push_str(&rest[1..1 + end]);
                i += end + 2;
            }
            '`' if rest.starts_with("```") => {
                let end = rest[3..].find("```").ok_or_else(|| unclosed(i))?;
                let body = &rest[3..3 + end];
                // The first line of a pre block may name its language.
                let body = match body.split_once('\n') {
                    Some((lang, code)) if !lang.contains(' ') => code,
                    _ => body,
                };
                out.push_str(body);
                i += end + 6;
            }
            '`' => {
                let end = rest[1..].find('`').ok_or_else(|| unclosed(i))?;
                out.push_str(&rest[1..1 + end]);
                i += end + 2;
            }
            '[' => {
                let end = rest[1..].find(']').ok_or_else(|| unclosed(i))?;
                out.push_str(&rest[1..1 + end]);
                i += end + 2;
                if s[i..].starts_with('(') {
                    let close = s[i..].find(')').ok_or_else(|| unclosed(i))?;
                    i += close + 1;
                }
            }
            _ => {
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    Ok(out)
}

/// MarkdownV2, approximated: every reserved character must be escaped with
/// `\` unless it is markup (`*` bold, `_` italic, `__` underline, `~` strike,
/// `||` spoiler, `` ` ``/```` ``` ```` code, `[text](url)`, `>` at the start of
/// a line); markup pairs must be balanced and properly nested. Known
/// differences from the real parser: `___` is read as underline then italic,
/// and custom emoji (`![..](tg://emoji?id=..)`) are not recognised.
fn markdown_v2(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut open: Vec<(&'static str, usize)> = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        let c = rest.chars().next().expect("i is on a char boundary");
        let line_start = i == 0 || s[..i].ends_with('\n');
        match c {
            '\\' => match rest[1..].chars().next() {
                Some(e) if (e as u32) < 127 => {
                    out.push(e);
                    i += 1 + e.len_utf8();
                }
                _ => {
                    out.push('\\');
                    i += 1;
                }
            },
            '`' => {
                let (fence, kind) = if rest.starts_with("```") {
                    ("```", "Pre")
                } else {
                    ("`", "Code")
                };
                let body_start = i + fence.len();
                let end = find_unescaped(&s[body_start..], fence)
                    .ok_or_else(|| format!("Can't find end of {kind} entity at byte offset {i}"))?;
                out.push_str(&unescape(&s[body_start..body_start + end]));
                i = body_start + end + fence.len();
            }
            '*' => {
                toggle(&mut open, "Bold", i)?;
                i += 1;
            }
            '_' if rest.starts_with("__") => {
                toggle(&mut open, "Underline", i)?;
                i += 2;
            }
            '_' => {
                toggle(&mut open, "Italic", i)?;
                i += 1;
            }
            '~' => {
                toggle(&mut open, "Strikethrough", i)?;
                i += 1;
            }
            '|' if rest.starts_with("||") => {
                toggle(&mut open, "Spoiler", i)?;
                i += 2;
            }
            '[' => {
                open.push(("TextUrl", i));
                i += 1;
            }
            ']' if matches!(open.last(), Some(("TextUrl", _))) => {
                open.pop();
                i += 1;
                if s[i..].starts_with('(') {
                    let end = find_unescaped(&s[i + 1..], ")")
                        .ok_or_else(|| format!("Can't find end of a URL at byte offset {i}"))?;
                    i += end + 2;
                }
            }
            '>' if line_start => i += 1,
            c if V2_RESERVED.contains(c) => {
                return Err(format!(
                    "Character '{c}' is reserved and must be escaped with the preceding '\\'"
                ))
            }
            _ => {
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    match open.last() {
        Some((kind, at)) => Err(format!(
            "Can't find end of {kind} entity at byte offset {at}"
        )),
        None => Ok(out),
    }
}

/// Opens `kind`, or closes it when it is the innermost open entity.
fn toggle(
    open: &mut Vec<(&'static str, usize)>,
    kind: &'static str,
    at: usize,
) -> Result<(), String> {
    match open.last() {
        Some((top, _)) if *top == kind => {
            open.pop();
            Ok(())
        }
        _ if open.iter().any(|(k, _)| *k == kind) => {
            let (inner, inner_at) = open.last().expect("not empty");
            Err(format!(
                "Can't find end of {inner} entity at byte offset {inner_at}"
            ))
        }
        _ => {
            open.push((kind, at));
            Ok(())
        }
    }
}

/// Byte offset of the first `needle` in `s` not preceded by a `\` escape.
fn find_unescaped(s: &str, needle: &str) -> Option<usize> {
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with('\\') {
            i += 1 + s[i + 1..].chars().next().map_or(0, char::len_utf8);
        } else if s[i..].starts_with(needle) {
            return Some(i);
        } else {
            i += s[i..].chars().next().map_or(1, char::len_utf8);
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(e) = chars.next() {
                out.push(e);
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_accepts_and_rejects() {
        assert_eq!(html("<b>a</b> &lt;x&gt; &amp; &#33;").unwrap(), "a <x> & !");
        assert_eq!(html("<a href=\"http://x\">l</a>").unwrap(), "l");
        assert_eq!(
            html("<pre><code class=\"language-rust\">x</code></pre>").unwrap(),
            "x"
        );
        assert!(html("<b>a").unwrap_err().starts_with("Can't find end tag"));
        assert!(html("<b>a</i>")
            .unwrap_err()
            .starts_with("Unmatched end tag"));
        assert!(html("a</b>").unwrap_err().starts_with("Unexpected end tag"));
        assert!(html("<div>a</div>")
            .unwrap_err()
            .starts_with("Unsupported start tag"));
        assert!(html("a < b").is_err());
        assert!(html("a > b").is_err());
        assert!(html("a & b").is_err());
    }

    #[test]
    fn markdown_legacy() {
        assert_eq!(
            markdown("*b* _i_ `c` [t](http://x) \\*").unwrap(),
            "b i c t *"
        );
        assert!(markdown("a *b").is_err());
        assert!(markdown("snake_case").is_err());
        assert!(markdown("[x").is_err());
        assert!(markdown("`x").is_err());
    }

    #[test]
    fn markdown_v2() {
        assert_eq!(
            super::markdown_v2("*b* _i_ __u__ ~s~ ||p|| `c` \\.").unwrap(),
            "b i u s p c ."
        );
        assert_eq!(super::markdown_v2("[t](http://x.y/\\))").unwrap(), "t");
        assert_eq!(super::markdown_v2(">quote").unwrap(), "quote");
        assert!(super::markdown_v2("1.5")
            .unwrap_err()
            .starts_with("Character '.' is reserved"));
        assert!(super::markdown_v2("a-b").is_err());
        assert!(super::markdown_v2("*a")
            .unwrap_err()
            .starts_with("Can't find end of Bold"));
        assert!(super::markdown_v2("*a _b* c_").is_err());
        assert!(super::markdown_v2("x > y").is_err());
    }
}
