//! A jail path, checked before any file system call: a relative path of plain components.
//!
//! What is refused, whatever the platform: an absolute path (a leading `/`, a drive letter or a
//! UNC prefix), `..` (and any component made only of dots), NUL and every control character, a
//! backslash (a second separator on Windows, so it is refused everywhere rather than read two
//! ways), and characters that only look like separators or dots (U+2215 DIVISION SLASH, U+FF0E
//! FULLWIDTH FULL STOP, …) or hide what a name is (bidirectional overrides, zero-width
//! characters). Components are at most 255 bytes and the whole path 4096. On Windows a `:`
//! (drive, alternate data stream), a trailing dot or space (which Windows strips) and the reserved
//! device names are refused too.
//!
//! The checks are a first line only: the walk itself (openat with `O_NOFOLLOW`, component by
//! component from the root's descriptor) is what keeps the jail closed.

pub const MAX_PATH_BYTES: usize = 4096;
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Characters refused anywhere in a path: look-alikes of `/`, `\` and `.`, and invisible or
/// direction-changing format characters.
fn refused_char(c: char) -> bool {
    matches!(
        c,
        // slashes and backslashes that are not `/`
        '\u{2044}' | '\u{2215}' | '\u{2216}' | '\u{2571}' | '\u{2572}' | '\u{29F5}' | '\u{29F8}'
            | '\u{29F9}' | '\u{FE68}' | '\u{FF0F}' | '\u{FF3C}' | '\u{1735}'
            // dots that are not `.`
            | '\u{2024}' | '\u{2025}' | '\u{2026}' | '\u{FE52}' | '\u{FF0E}' | '\u{3002}'
            | '\u{FF61}' | '\u{0701}' | '\u{0702}' | '\u{A60E}' | '\u{10A50}'
            // zero-width, joiners, bidi marks and overrides, word joiner, BOM
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    ) || c.is_control()
}

const WINDOWS_RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9", "CONIN$",
    "CONOUT$",
];

/// The Windows-only refusals, compiled (and unit-tested) everywhere.
fn windows_refusal(component: &str) -> Option<&'static str> {
    if component.contains(':') {
        return Some("a ':' (drive or data stream)");
    }
    if component.ends_with('.') || component.ends_with(' ') {
        return Some("a component ending in a dot or space");
    }
    let stem = component.split('.').next().unwrap_or("").trim_end();
    if WINDOWS_RESERVED
        .iter()
        .any(|r| r.eq_ignore_ascii_case(stem))
    {
        return Some("a reserved device name");
    }
    None
}

/// Splits `path` into checked components; `""`, `"."` and `"/"`-free empty segments name the
/// root. `Err` carries the reason.
pub fn components(path: &str) -> Result<Vec<&str>, String> {
    components_for(path, cfg!(windows))
}

pub(crate) fn components_for(path: &str, windows: bool) -> Result<Vec<&str>, String> {
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("the path is over {MAX_PATH_BYTES} bytes"));
    }
    if let Some(c) = path.chars().find(|&c| refused_char(c)) {
        return Err(format!(
            "the path holds a refused character (U+{:04X})",
            c as u32
        ));
    }
    if path.contains('\\') {
        return Err("backslashes are refused: use '/' between components".into());
    }
    if path.starts_with('/') {
        return Err("absolute paths are refused: paths are relative to the jail's root".into());
    }
    let mut out = Vec::new();
    for component in path.split('/') {
        if component.is_empty() || component == "." {
            continue;
        }
        if component.chars().all(|c| c == '.') {
            return Err("'..' (or any component of dots only) is refused".into());
        }
        if component.len() > MAX_COMPONENT_BYTES {
            return Err(format!(
                "a path component is over {MAX_COMPONENT_BYTES} bytes"
            ));
        }
        if windows && let Some(why) = windows_refusal(component) {
            return Err(format!("refused: {why}"));
        }
        out.push(component);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_paths_pass() {
        assert_eq!(components("a/b.txt").unwrap(), ["a", "b.txt"]);
        assert_eq!(components("./a//b/").unwrap(), ["a", "b"]);
        assert!(components("").unwrap().is_empty());
        assert!(components(".").unwrap().is_empty());
        assert_eq!(components(".hidden/x..y").unwrap(), [".hidden", "x..y"]);
        assert_eq!(
            components("répertoire/日本.txt").unwrap(),
            ["répertoire", "日本.txt"]
        );
    }

    #[test]
    fn escapes_and_tricks_are_refused() {
        for bad in [
            "..",
            "a/../../b",
            "a/..",
            "...",
            "/etc/passwd",
            "//etc",
            "a\\..\\b",
            "..\\x",
            "a\0b",
            "a\nb",
            "a\u{2215}..\u{2215}b",
            "\u{FF0E}\u{FF0E}/x",
            "a\u{202E}txt.exe",
            "a\u{200B}",
        ] {
            assert!(components(bad).is_err(), "{bad:?} passed");
        }
        assert!(components(&"a".repeat(256)).is_err());
        assert!(components(&"a/".repeat(2049)).is_err());
    }

    #[test]
    fn windows_rules() {
        for bad in ["C:/x", "a/b:stream", "con", "Nul.txt", "a/x.", "a/x "] {
            assert!(components_for(bad, true).is_err(), "{bad:?} passed");
            // Legal names on Unix (apart from none of these being escapes).
            assert!(components_for(bad, false).is_ok(), "{bad:?} refused");
        }
        assert!(components_for("console/x", true).is_ok());
    }
}
