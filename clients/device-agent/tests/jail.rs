//! The jail against a real directory tree with secrets next to it: plain use works, and
//! thousands of generated hostile paths (`..`, absolute paths, symlinks out of the root planted
//! in the jail, a hard link to the secret, unicode look-alikes, overlong segments, mixed
//! separators, NULs) never read a secret nor write outside — for the descriptor walk and for the
//! portable fallback alike.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use pa_device::jail::{Backend, Jail, JailError, Kind, Limits, WriteMode, portable, unix};

const SECRET: &str = "TOP-SECRET-0x5eed-outside-the-jail";
const SECRET2: &str = "SECOND-SECRET-in-outside-dir";
const OUTSIDE_NAMES: &[&str] = &["outside-secret.txt", "inner.txt"];

struct Tree {
    base: PathBuf,
    jail: PathBuf,
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn tree(tag: &str) -> Tree {
    let base = std::env::temp_dir().join(format!(
        "pa-jail-{tag}-{}-{}",
        std::process::id(),
        getrandom::u64().unwrap()
    ));
    let jail = base.join("jail");
    std::fs::create_dir_all(jail.join("docs/deep")).unwrap();
    std::fs::create_dir_all(base.join("outside-dir")).unwrap();
    std::fs::write(base.join("outside-secret.txt"), SECRET).unwrap();
    std::fs::write(base.join("outside-dir/inner.txt"), SECRET2).unwrap();
    std::fs::write(jail.join("readme.txt"), "hello from the jail\n").unwrap();
    std::fs::write(jail.join("docs/notes.md"), "# Notes\nthe answer is 42\n").unwrap();
    std::fs::write(jail.join("docs/deep/leaf.txt"), "leaf").unwrap();
    // Every kind of way out, planted inside.
    symlink("../outside-secret.txt", jail.join("link_out")).unwrap();
    symlink(base.join("outside-secret.txt"), jail.join("abs_link")).unwrap();
    symlink("..", jail.join("dir_up")).unwrap();
    symlink(base.join("outside-dir"), jail.join("dir_abs")).unwrap();
    symlink("../..", jail.join("docs/up2")).unwrap();
    symlink("../created-by-dangling.txt", jail.join("dangling")).unwrap();
    symlink("readme.txt", jail.join("inside_link")).unwrap();
    std::fs::hard_link(base.join("outside-secret.txt"), jail.join("hard")).unwrap();
    Tree { base, jail }
}

fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn outside_untouched(t: &Tree) {
    assert_eq!(
        std::fs::read_to_string(t.base.join("outside-secret.txt")).unwrap(),
        SECRET
    );
    assert_eq!(
        std::fs::read_to_string(t.base.join("outside-dir/inner.txt")).unwrap(),
        SECRET2
    );
    assert_eq!(
        entries(&t.base),
        ["jail", "outside-dir", "outside-secret.txt"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        entries(&t.base.join("outside-dir")),
        ["inner.txt".to_string()].into()
    );
}

fn native(t: &Tree) -> Jail<unix::Openat> {
    Jail::open(&t.jail, false, Limits::default()).unwrap()
}

fn fallback(t: &Tree) -> Jail<portable::Paths> {
    Jail::with_backend(
        portable::Paths::open(&t.jail).unwrap(),
        &t.jail,
        false,
        Limits::default(),
    )
}

fn plain_use_works<B: Backend>(jail: &Jail<B>) {
    let read = jail.read("readme.txt", 0, None).unwrap();
    assert_eq!(read.bytes, b"hello from the jail\n");
    assert_eq!(
        jail.read("./docs//notes.md", 8, Some(6)).unwrap().bytes,
        b"the an"
    );
    let listing = jail.list("").unwrap();
    let kinds: Vec<(&str, Kind)> = listing
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind))
        .collect();
    assert!(kinds.contains(&("readme.txt", Kind::File)), "{kinds:?}");
    assert!(kinds.contains(&("docs", Kind::Dir)));
    assert!(kinds.contains(&("link_out", Kind::Symlink)));
    let written = jail
        .write("docs/new/today.txt", b"written", WriteMode::CreateNew, true)
        .unwrap();
    assert_eq!(written.path, "docs/new/today.txt");
    assert_eq!(
        jail.read("docs/new/today.txt", 0, None).unwrap().bytes,
        b"written"
    );
    jail.write("docs/new/today.txt", b"+more", WriteMode::Append, false)
        .unwrap();
    jail.write("docs/new/today.txt", b"short", WriteMode::Overwrite, false)
        .unwrap();
    assert_eq!(
        jail.read("docs/new/today.txt", 0, None).unwrap().bytes,
        b"short"
    );
    assert!(matches!(
        jail.write("docs/new/today.txt", b"x", WriteMode::CreateNew, false),
        Err(JailError::Exists(_))
    ));
    let hits = jail.search("", "answer", true).unwrap().hits;
    assert!(
        hits.iter()
            .any(|h| h.path == "docs/notes.md" && h.line == Some(2)),
        "{hits:?}"
    );
    let hits = jail.search("docs", "LEAF", false).unwrap().hits;
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].path, "docs/deep/leaf.txt");
}

fn known_ways_out_are_refused<B: Backend>(t: &Tree, jail: &Jail<B>) {
    let base = t.base.display().to_string();
    for path in ["link_out", "abs_link", "inside_link", "dangling"] {
        assert!(
            matches!(jail.read(path, 0, None), Err(JailError::Symlink(_))),
            "{path}: {:?}",
            jail.read(path, 0, None)
        );
    }
    for path in [
        "dir_up/outside-secret.txt",
        "dir_abs/inner.txt",
        "docs/up2/outside-secret.txt",
    ] {
        assert!(
            matches!(jail.read(path, 0, None), Err(JailError::Symlink(_))),
            "{path}"
        );
    }
    assert!(matches!(jail.list("dir_up"), Err(JailError::Symlink(_))));
    assert!(matches!(
        jail.read("hard", 0, None),
        Err(JailError::HardLinked(_))
    ));
    assert!(matches!(
        jail.write("hard", b"x", WriteMode::Overwrite, false),
        Err(JailError::HardLinked(_))
    ));
    assert!(matches!(
        jail.write("dangling", b"x", WriteMode::Overwrite, false),
        Err(JailError::Symlink(_))
    ));
    assert!(matches!(
        jail.write("dir_up/x.txt", b"x", WriteMode::Overwrite, true),
        Err(JailError::Symlink(_))
    ));
    for path in [
        "../outside-secret.txt".to_string(),
        format!("{base}/outside-secret.txt"),
        "docs/../../outside-secret.txt".into(),
        "\u{FF0E}\u{FF0E}/outside-secret.txt".into(),
        "..\u{2215}outside-secret.txt".into(),
        "..\\outside-secret.txt".into(),
        "readme.txt\0.png".into(),
    ] {
        assert!(
            matches!(
                jail.read(&path, 0, None),
                Err(JailError::InvalidPath { .. })
            ),
            "{path:?}"
        );
    }
    outside_untouched(t);
    assert!(!t.base.join("created-by-dangling.txt").exists());
}

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a>(&mut self, items: &'a [String]) -> &'a str {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

fn hostile_paths(base: &Path, count: usize, seed: u64) -> Vec<String> {
    let base = base.display().to_string();
    let components: Vec<String> = [
        "..",
        ".",
        "",
        "...",
        ".. ",
        " ..",
        "..;",
        "%2e%2e",
        "%2e%2e%2f",
        "..%00",
        "~",
        "$HOME",
        "link_out",
        "abs_link",
        "dir_up",
        "dir_abs",
        "docs",
        "up2",
        "hard",
        "dangling",
        "inside_link",
        "readme.txt",
        "outside-secret.txt",
        "outside-dir",
        "inner.txt",
        "jail",
        "\u{2215}",
        "\u{FF0E}\u{FF0E}",
        "\u{2024}\u{2024}",
        "\u{FE52}\u{FE52}",
        "\u{3002}\u{3002}",
        "..\u{2215}outside-secret.txt",
        "\u{FF0F}",
        "\u{FF3C}",
        "\u{2044}",
        "\u{202E}txt.",
        "\u{200B}..",
        "..\u{200D}",
        "\u{FEFF}..",
        "a\0b",
        "\0",
        "\n",
        "\r..",
        "C:",
        "c:\\windows",
        "\\\\?\\C:",
        "CON",
        "ｏｕｔｓｉｄｅ-secret.txt",
        "..\\..",
        "\\..\\outside-secret.txt",
        "/..",
        "./..",
        "tmp",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "x".repeat(256),
        "é".repeat(200),
        "../".repeat(40),
        format!("{}{}", "a/".repeat(10), "..".repeat(3)),
    ])
    .collect();
    let prefixes: Vec<String> = [
        "",
        "",
        "",
        "/",
        "//",
        "./",
        "\\",
        "C:\\",
        "\\\\server\\share\\",
        "file://",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("{base}/"), format!("{base}/jail/"), "/tmp/".into()])
    .collect();
    let separators: Vec<String> = [
        "/", "/", "/", "\\", "//", "/./", "\u{2215}", "\u{FF0F}", "\0/",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let mut path = rng.pick(&prefixes).to_string();
        let n = 1 + rng.next() % 6;
        for i in 0..n {
            if i > 0 {
                path.push_str(rng.pick(&separators));
            }
            path.push_str(rng.pick(&components));
        }
        if rng.next().is_multiple_of(5) {
            path.push_str(rng.pick(&separators));
        }
        if rng.next().is_multiple_of(40) {
            path = path.repeat(50);
        }
        out.push(path);
    }
    out
}

fn assert_no_secret(what: &str, path: &str, text: &str) {
    assert!(
        !text.contains(SECRET) && !text.contains(SECRET2),
        "ESCAPE: {what} {path:?} returned a secret"
    );
}

/// A listed entry that is one of the outside files (the fuzz's appends may create files of the
/// same names in the jail, but never of the secrets' sizes: they write 5 bytes at a time).
fn is_outside_file(name: &str, kind: Kind, size: u64) -> bool {
    kind == Kind::File
        && OUTSIDE_NAMES.contains(&name)
        && (size == SECRET.len() as u64 || size == SECRET2.len() as u64)
}

/// Runs every operation on every path; returns how many calls succeeded (so a fuzz that only
/// ever hits "invalid path" is noticed).
fn fuzz<B: Backend>(t: &Tree, jail: &Jail<B>, paths: &[String]) -> usize {
    let mut successes = 0;
    let jail_root = std::fs::canonicalize(&t.jail).unwrap();
    for (i, path) in paths.iter().enumerate() {
        if let Ok(read) = jail.read(path, 0, None) {
            successes += 1;
            assert_no_secret("read", path, &String::from_utf8_lossy(&read.bytes));
        }
        if let Ok(listing) = jail.list(path) {
            successes += 1;
            for e in &listing.entries {
                assert!(
                    !is_outside_file(&e.name, e.kind, e.size),
                    "ESCAPE: list {path:?} shows {e:?}"
                );
            }
        }
        if let Ok(found) = jail.search(path, "secret", true) {
            successes += 1;
            for hit in &found.hits {
                assert_no_secret("search", path, hit.text.as_deref().unwrap_or(""));
                let name = hit.path.rsplit('/').next().unwrap_or("");
                assert!(
                    hit.kind != Kind::File || !OUTSIDE_NAMES.contains(&name) || hit.line.is_none(),
                    "ESCAPE: search {path:?} found {hit:?}"
                );
            }
        }
        // Writes name a fresh file (never an outside name) below the hostile path.
        let target = format!("{path}/pwned-{i}.txt");
        let create_dirs = i % 2 == 0;
        if jail
            .write(&target, b"PWNED", WriteMode::Overwrite, create_dirs)
            .is_ok()
        {
            successes += 1;
        }
        if jail.write(path, b"PWNED", WriteMode::Append, false).is_ok() {
            successes += 1;
        }
        // Where a naive join would have put the file: if it is there, it must be in the jail.
        if let Ok(real) = std::fs::canonicalize(t.jail.join(&target)) {
            assert!(
                real.starts_with(&jail_root),
                "ESCAPE: write {target:?} landed at {}",
                real.display()
            );
        }
    }
    outside_untouched(t);
    assert!(!t.base.join("created-by-dangling.txt").exists());
    successes
}

#[test]
fn native_walk_plain_use_works() {
    let t = tree("plain");
    plain_use_works(&native(&t));
}

#[test]
fn fallback_walk_plain_use_works() {
    let t = tree("plain-fb");
    plain_use_works(&fallback(&t));
}

#[test]
fn native_walk_refuses_the_known_ways_out() {
    let t = tree("known");
    known_ways_out_are_refused(&t, &native(&t));
}

#[test]
fn fallback_walk_refuses_the_known_ways_out() {
    let t = tree("known-fb");
    known_ways_out_are_refused(&t, &fallback(&t));
}

#[test]
fn traversal_fuzz_native_zero_escapes() {
    let t = tree("fuzz");
    let paths = hostile_paths(&t.base, 6000, 0x5eed_1234_abcd_0001);
    let ok = fuzz(&t, &native(&t), &paths);
    assert!(
        ok > 100,
        "only {ok} calls succeeded: the fuzz is not reaching the walk"
    );
}

#[test]
fn traversal_fuzz_fallback_zero_escapes() {
    let t = tree("fuzz-fb");
    let paths = hostile_paths(&t.base, 6000, 0x5eed_1234_abcd_0002);
    let ok = fuzz(&t, &fallback(&t), &paths);
    assert!(
        ok > 100,
        "only {ok} calls succeeded: the fuzz is not reaching the walk"
    );
}

/// A directory swapped for a symlink to the outside while reads walk through it: the
/// descriptor walk either reads the real inner file or refuses, never the outside one.
#[test]
fn native_walk_survives_a_symlink_swap_race() {
    let t = tree("race");
    std::fs::create_dir(t.jail.join("swap")).unwrap();
    std::fs::write(t.jail.join("swap/inner.txt"), "inside").unwrap();
    let jail = native(&t);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (jail_dir, outside, stop) = (t.jail.clone(), t.base.join("outside-dir"), stop.clone());
        std::thread::spawn(move || {
            let (real, parked, link) = (
                jail_dir.join("swap"),
                jail_dir.join("parked"),
                jail_dir.join("swap-link"),
            );
            let _ = std::fs::remove_file(&link);
            symlink(&outside, &link).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // swap := link to outside, then back to the real directory.
                let _ = std::fs::rename(&real, &parked);
                let _ = std::fs::rename(&link, &real);
                let _ = std::fs::rename(&real, &link);
                let _ = std::fs::rename(&parked, &real);
            }
        })
    };
    let mut inside_reads = 0;
    for _ in 0..20_000 {
        if let Ok(read) = jail.read("swap/inner.txt", 0, None) {
            let text = String::from_utf8_lossy(&read.bytes).into_owned();
            assert_no_secret("raced read", "swap/inner.txt", &text);
            inside_reads += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(inside_reads > 0, "the race never let a read through");
    outside_untouched(&t);
}

#[test]
fn read_only_jail_refuses_writes_and_limits_hold() {
    let t = tree("ro");
    let jail = Jail::open(&t.jail, true, Limits::default()).unwrap();
    assert!(matches!(
        jail.write("new.txt", b"x", WriteMode::Overwrite, false),
        Err(JailError::ReadOnly)
    ));
    assert!(!t.jail.join("new.txt").exists());
    let small = Limits {
        max_read_bytes: 4,
        max_write_bytes: 8,
        ..Limits::default()
    };
    let jail = Jail::open(&t.jail, false, small).unwrap();
    let read = jail.read("readme.txt", 0, Some(1000)).unwrap();
    assert_eq!(read.bytes, b"hell");
    assert!(read.truncated);
    assert!(matches!(
        jail.write("big.txt", b"123456789", WriteMode::Overwrite, false),
        Err(JailError::TooLarge { .. })
    ));
    jail.write("big.txt", b"12345", WriteMode::Overwrite, false)
        .unwrap();
    assert!(matches!(
        jail.write("big.txt", b"6789", WriteMode::Append, false),
        Err(JailError::TooLarge { .. })
    ));
}
