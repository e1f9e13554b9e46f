//! Writing results: JSON for scripts, plain lines for people.
//!
//! Text in human output comes from other members (room names, display names, messages),
//! so it is passed through [`safe`] first: a member must not be able to send terminal
//! escape sequences, or bidirectional-override characters that make a line read
//! differently from what it contains. JSON output needs no such care; serde escapes
//! control characters and the consumer is a program.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;

use confer_node::api::EventInfo;

use crate::error::Error;

/// Writes `value` as one JSON document on one line of standard output and flushes.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<(), Error> {
    let mut line = serde_json::to_string(value)
        .map_err(|e| Error::usage(format!("could not format the output as JSON: {e}")))?;
    line.push('\n');
    write_stdout(&line)
}

/// Writes `text` and a newline on standard output and flushes.
pub fn line(text: &str) -> Result<(), Error> {
    write_stdout(&format!("{text}\n"))
}

fn write_stdout(text: &str) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(Error::Output)
}

/// `text` with every control character (except newline and tab) and every
/// bidirectional-formatting character replaced by a visible `\u{…}` escape.
pub fn safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut clean = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            let _ = write!(clean, "\\u{{{:x}}}", u32::from(c));
        } else {
            clean.push(c);
        }
    }
    Cow::Owned(clean)
}

/// Like [`safe`], on one line: newlines and tabs are escaped too.
pub fn safe_line(text: &str) -> Cow<'_, str> {
    match safe(text) {
        Cow::Borrowed(t) if !t.contains(['\n', '\t']) => Cow::Borrowed(t),
        t => Cow::Owned(t.replace('\n', "\\n").replace('\t', "\\t")),
    }
}

fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// One membership change, as a line among the messages:
/// `[2026-01-02T03:04:05.678Z] — Priya joined`, or `— You joined` and `— Sam removed you`
/// when it is about the reader.
pub fn event_line(event: &EventInfo) -> String {
    let (who, by) = (safe_line(&event.who), event.by.as_deref().map(safe_line));
    let subject = if event.you { "You".into() } else { who.clone() };
    let object = if event.you { "you".into() } else { who };
    let by = if event.by_you {
        "You".into()
    } else {
        by.unwrap_or_default()
    };
    let what = match event.kind.as_str() {
        "created" => format!("{subject} created the room"),
        "joined" => format!("{subject} joined"),
        "left" => format!("{subject} left"),
        "removed" => format!("{by} removed {object}"),
        "handover" => format!("{by} made {object} the facilitator"),
        "bad-key" => format!(
            "{subject} started a new key whose copy for you was damaged; your node started another"
        ),
        other => format!("{subject}: {}", safe_line(other)),
    };
    format!("[{}] — {what}", safe_line(&event.at))
}

/// One message for people: `[sent_at] author: text`, continuation lines indented.
pub fn message_line(sent_at: &str, author: &str, text: &str) -> String {
    let prefix = format!("[{}] {}: ", safe_line(sent_at), safe_line(author));
    let indent = " ".repeat(prefix.chars().count());
    let mut line = prefix;
    for (i, part) in safe(text).split('\n').enumerate() {
        if i > 0 {
            line.push('\n');
            line.push_str(&indent);
        }
        line.push_str(part);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_untouched() {
        assert!(matches!(safe("Hello, café ☕"), Cow::Borrowed(_)));
        assert_eq!(safe("two\nlines\tand tab"), "two\nlines\tand tab");
    }

    #[test]
    fn escapes_and_bidi_overrides_are_neutralised() {
        assert_eq!(safe("\u{1b}[2Jgone"), "\\u{1b}[2Jgone");
        assert_eq!(safe("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(safe("c1\u{9b}x"), "c1\\u{9b}x");
        assert_eq!(safe_line("a\nb\r"), "a\\nb\\u{d}");
    }

    #[test]
    fn messages_indent_continuation_lines() {
        assert_eq!(
            message_line("2026-01-01T10:00:00Z", "Sam", "one\ntwo"),
            "[2026-01-01T10:00:00Z] Sam: one\n                            two"
        );
    }
}
