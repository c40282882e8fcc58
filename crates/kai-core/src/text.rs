//! Cutting a long message into parts a chat accepts: below a limit, at paragraph boundaries
//! first, then at line boundaries, then at spaces, and only as a last resort inside a word.
//! Parts keep their order; joined back with the separators they were cut at, they give the
//! text again (less the separators' surrounding blank space at the cuts).

/// The limit kai cuts at: Telegram refuses messages over 4096 characters, and a part may still
/// get a `[module] ` prefix or a header of kai's after the cut.
pub const MESSAGE_PART_LIMIT: usize = 3900;

/// Splits `text` into parts of at most `limit` characters (Unicode scalar values, as Telegram
/// counts them). An empty or blank text gives no part.
pub fn split_message(text: &str, limit: usize) -> Vec<String> {
    assert!(limit > 0, "a part holds at least one character");
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if rest.chars().count() <= limit {
            parts.push(rest.to_owned());
            break;
        }
        // The byte index just past the first `limit` characters.
        let window_end = rest
            .char_indices()
            .nth(limit)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        // A separator may start right at the limit: the head before it still fits.
        let search_end = rest
            .char_indices()
            .nth(limit + 2)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let search = &rest[..search_end];
        let cut = ["\n\n", "\n", " "].iter().find_map(|sep| {
            search
                .match_indices(sep)
                .map(|(i, _)| i)
                .filter(|&i| i > 0 && i <= window_end)
                .last()
                .map(|i| (i, sep.len()))
        });
        let (head, tail) = match cut {
            Some((i, len)) => (&rest[..i], &rest[i + len..]),
            None => (&rest[..window_end], &rest[window_end..]),
        };
        let head = head.trim_end();
        if !head.is_empty() {
            parts.push(head.to_owned());
        }
        rest = tail.trim_start();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(s: &str) -> usize {
        s.chars().count()
    }

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split_message("hello", 10), vec!["hello"]);
        assert!(split_message("  \n ", 10).is_empty());
    }

    #[test]
    fn cuts_at_paragraphs_before_lines() {
        let text = "aaaa\nbbbb\n\ncccc\ndddd";
        assert_eq!(split_message(text, 12), vec!["aaaa\nbbbb", "cccc\ndddd"]);
    }

    #[test]
    fn cuts_at_lines_when_a_paragraph_is_too_long() {
        let text = "aaaa\nbbbb\ncccc";
        assert_eq!(split_message(text, 9), vec!["aaaa\nbbbb", "cccc"]);
    }

    #[test]
    fn cuts_words_only_as_a_last_resort() {
        assert_eq!(split_message("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(split_message("ab cd ef", 5), vec!["ab cd", "ef"]);
    }

    #[test]
    fn counts_characters_not_bytes() {
        let text = "ü".repeat(10);
        let parts = split_message(&text, 4);
        assert_eq!(parts, vec!["üüüü", "üüüü", "üü"]);
    }

    #[test]
    fn ten_thousand_characters_give_ordered_parts_under_the_limit() {
        let text: String = (0..400)
            .map(|i| format!("line {i:04} of the long result\n"))
            .collect();
        assert!(count(&text) > 10_000);
        let parts = split_message(&text, MESSAGE_PART_LIMIT);
        assert!(parts.len() >= 3);
        assert!(parts.iter().all(|p| count(p) <= MESSAGE_PART_LIMIT));
        assert_eq!(parts.join("\n"), text.trim());
    }
}
