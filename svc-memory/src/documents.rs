//! Files uploaded to a chat: their text (plain, Markdown or PDF) cut into overlapping chunks
//! small enough for the embedding model (all-MiniLM-L6-v2 reads 256 tokens, ~1000 characters).

/// Upload size limit (the gateway enforces the same).
pub const MAX_BYTES: usize = 10 * 1024 * 1024;
/// Extracted text beyond this is refused rather than silently cut: embedding it all would take
/// minutes on a CPU.
pub const MAX_CHARS: usize = 400_000;
const CHUNK_CHARS: usize = 800;
const OVERLAP_CHARS: usize = 120;

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("unsupported file type {0:?}: upload text/plain, text/markdown or application/pdf")]
    Unsupported(String),
    #[error("the file is not valid UTF-8 text")]
    NotUtf8,
    #[error("cannot read the PDF: {0}")]
    Pdf(String),
    #[error("the file holds no text")]
    Empty,
    #[error("the file is over {MAX_BYTES} bytes")]
    TooLarge,
    #[error("the file's text is over {MAX_CHARS} characters; split it")]
    TooMuchText,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Pdf,
}

/// The format from the content type, else from the file name's extension.
pub fn format_of(content_type: &str, filename: &str) -> Result<Format, DocumentError> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match mime.as_str() {
        "application/pdf" => Ok(Format::Pdf),
        "text/plain" | "text/markdown" | "text/x-markdown" => Ok(Format::Text),
        "" | "application/octet-stream" => match ext.as_str() {
            "pdf" => Ok(Format::Pdf),
            "txt" | "md" | "markdown" | "text" => Ok(Format::Text),
            _ => Err(DocumentError::Unsupported(filename.to_string())),
        },
        other => Err(DocumentError::Unsupported(other.to_string())),
    }
}

/// The file's text. CPU-bound for PDFs: call it from a blocking thread.
pub fn extract_text(format: Format, data: &[u8]) -> Result<String, DocumentError> {
    if data.len() > MAX_BYTES {
        return Err(DocumentError::TooLarge);
    }
    let text = match format {
        Format::Text => std::str::from_utf8(data)
            .map_err(|_| DocumentError::NotUtf8)?
            .to_string(),
        Format::Pdf => pdf_extract::extract_text_from_mem(data)
            .map_err(|e| DocumentError::Pdf(e.to_string()))?,
    };
    if text.trim().is_empty() {
        return Err(DocumentError::Empty);
    }
    if text.chars().count() > MAX_CHARS {
        return Err(DocumentError::TooMuchText);
    }
    Ok(text)
}

/// Chunks of about [`CHUNK_CHARS`] characters that end at a paragraph, sentence or word
/// boundary when one is near, each starting [`OVERLAP_CHARS`] before the previous one ended so
/// a fact cut in two is still whole in one of them. Whitespace runs are collapsed.
pub fn chunk(text: &str) -> Vec<String> {
    // Paragraph breaks survive as "\n\n"; other whitespace becomes one space.
    let paragraphs: Vec<String> = text
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect();
    let clean: Vec<char> = paragraphs.join("\n\n").chars().collect();
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < clean.len() {
        let hard_end = (start + CHUNK_CHARS).min(clean.len());
        let end = if hard_end == clean.len() {
            hard_end
        } else {
            best_break(&clean, start + CHUNK_CHARS / 2, hard_end)
        };
        let piece: String = clean[start..end].iter().collect();
        let piece = piece.trim();
        if !piece.is_empty() {
            chunks.push(piece.to_string());
        }
        if end >= clean.len() {
            break;
        }
        // Overlap, but start on a word.
        let mut next = end.saturating_sub(OVERLAP_CHARS).max(start + 1);
        while next < end && !clean[next - 1].is_whitespace() {
            next += 1;
        }
        start = next;
    }
    chunks
}

/// The best place to cut in `from..to`: after a paragraph, else a sentence, else a space.
fn best_break(text: &[char], from: usize, to: usize) -> usize {
    let window = from..to;
    let find = |pred: &dyn Fn(usize) -> bool| window.clone().rev().find(|&i| pred(i));
    find(&|i| i >= 1 && text[i - 1] == '\n' && text.get(i) == Some(&'\n'))
        .or_else(|| {
            find(&|i| i >= 1 && matches!(text[i - 1], '.' | '!' | '?') && text[i].is_whitespace())
        })
        .or_else(|| find(&|i| text[i].is_whitespace()))
        .unwrap_or(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_the_content_type_or_the_extension() {
        assert_eq!(format_of("application/pdf", "x").ok(), Some(Format::Pdf));
        assert_eq!(
            format_of("text/markdown; charset=utf-8", "x").ok(),
            Some(Format::Text)
        );
        assert_eq!(
            format_of("application/octet-stream", "notes.MD").ok(),
            Some(Format::Text)
        );
        assert_eq!(format_of("", "a.pdf").ok(), Some(Format::Pdf));
        assert!(format_of("image/png", "a.png").is_err());
        assert!(format_of("", "a.exe").is_err());
    }

    #[test]
    fn short_text_is_one_chunk() {
        assert_eq!(chunk("  hello\n  world  "), vec!["hello world"]);
        assert!(chunk(" \n\n ").is_empty());
    }

    #[test]
    fn long_text_is_cut_at_sentences_with_overlap() {
        let sentences: Vec<String> = (0..60)
            .map(|i| format!("Sentence number {i} says something."))
            .collect();
        let text = sentences.join(" ");
        let chunks = chunk(&text);
        assert!(chunks.len() > 2, "{}", chunks.len());
        for c in &chunks {
            assert!(c.chars().count() <= CHUNK_CHARS);
        }
        // All but the last end at a sentence.
        for c in &chunks[..chunks.len() - 1] {
            assert!(c.ends_with('.'), "{c:?}");
        }
        // Every sentence is whole in some chunk, and consecutive chunks overlap.
        for s in &sentences {
            assert!(chunks.iter().any(|c| c.contains(s.as_str())), "{s}");
        }
        for pair in chunks.windows(2) {
            let tail: String = pair[0]
                .chars()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            assert!(
                pair[1].contains(tail.trim()),
                "no overlap: {:?} / {:?}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn text_without_spaces_is_still_cut() {
        let text = "x".repeat(2000);
        let chunks = chunk(&text);
        assert!(chunks.len() >= 3);
        assert!(chunks.iter().all(|c| c.len() <= CHUNK_CHARS));
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert!(matches!(
            extract_text(Format::Text, &[0xff, 0xfe]),
            Err(DocumentError::NotUtf8)
        ));
        assert!(matches!(
            extract_text(Format::Text, b"   "),
            Err(DocumentError::Empty)
        ));
        assert!(matches!(
            extract_text(Format::Pdf, b"%PDF-1.4 not really"),
            Err(DocumentError::Pdf(_))
        ));
    }
}
