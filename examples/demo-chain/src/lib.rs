//! The demo chain's logic: count the words of a text and render them as a page.
//!
//! - `parse` turns text into words, one per line, lowercase, letters and digits only;
//! - `transform` counts them: lines of "count word", most frequent first, ties by word;
//! - `render` makes an HTML page of the counts.
//!
//! The chain file wires them two ways: as a fixed sequence (`POST /render`), and RPC style
//! (`POST /count`), where `render` calls `parse` and `transform` itself. Both answer the same.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// Writes the words of `text`, one per line.
pub fn parse(text: &[u8], out: &mut impl Write) -> io::Result<()> {
    let text = String::from_utf8_lossy(text);
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        for c in word.chars().flat_map(char::to_lowercase) {
            write!(out, "{c}")?;
        }
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes "count word" lines for the words (one per line) in `words`.
pub fn transform(words: &[u8], out: &mut impl Write) -> io::Result<()> {
    let mut counts: BTreeMap<&[u8], u64> = BTreeMap::new();
    for w in words.split(|&b| b == b'\n').filter(|w| !w.is_empty()) {
        *counts.entry(w).or_default() += 1;
    }
    let mut sorted: Vec<(&[u8], u64)> = counts.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (word, n) in sorted {
        write!(out, "{n} ")?;
        out.write_all(word)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes an HTML page for "count word" lines.
pub fn render(counts: &[u8], out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"<!doctype html>\n<title>word counts</title>\n<table>\n")?;
    let mut total = 0u64;
    for line in counts.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let text = String::from_utf8_lossy(line);
        let Some((n, word)) = text.split_once(' ') else {
            continue;
        };
        total += n.parse::<u64>().unwrap_or(0);
        writeln!(out, "<tr><td>{}</td><td>{n}</td></tr>", escape(word))?;
    }
    writeln!(out, "</table>\n<p>{total} words</p>")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The whole pipeline in one process: what the chain must answer for `text`.
pub fn expected_page(text: &[u8]) -> Vec<u8> {
    let (mut words, mut counts, mut page) = (Vec::new(), Vec::new(), Vec::new());
    parse(text, &mut words).unwrap();
    transform(&words, &mut counts).unwrap();
    render(&counts, &mut page).unwrap();
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words_most_frequent_first() {
        let page = String::from_utf8(expected_page(b"The cat saw the DOG; the dog ran.")).unwrap();
        let rows: Vec<&str> = page.lines().filter(|l| l.starts_with("<tr>")).collect();
        assert_eq!(
            rows,
            vec![
                "<tr><td>the</td><td>3</td></tr>",
                "<tr><td>dog</td><td>2</td></tr>",
                "<tr><td>cat</td><td>1</td></tr>",
                "<tr><td>ran</td><td>1</td></tr>",
                "<tr><td>saw</td><td>1</td></tr>",
            ]
        );
        assert!(page.contains("<p>8 words</p>"));
    }

    #[test]
    fn empty_text_renders_an_empty_table() {
        let page = String::from_utf8(expected_page(b"  ...  ")).unwrap();
        assert!(page.contains("<p>0 words</p>"));
        assert!(!page.contains("<tr>"));
    }
}
