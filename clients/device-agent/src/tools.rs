//! The tools the device offers, their JSON schemas and privilege classes, and the dispatch of a
//! call to the jail or the PTY. A failed call is a result with `is_error` (the model reads why),
//! never a failed connection.

use std::time::Duration;

use pa_device_wire::AnnouncedTool;
use serde::Serialize;
use serde_json::{Value, json};

use crate::jail::{Jail, JailError, WriteMode};
use crate::pty::{PtyError, PtyManager};

/// The device's tools that only read; every other device tool is high privilege.
pub const READ_ONLY_TOOLS: &[&str] = &["fs_list", "fs_read", "fs_search"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub content: String,
    pub is_error: bool,
}

impl Outcome {
    fn ok(content: String) -> Self {
        Self {
            content,
            is_error: false,
        }
    }

    fn json(value: &impl Serialize) -> Self {
        match serde_json::to_string_pretty(value) {
            Ok(s) => Self::ok(s),
            Err(e) => Self::err(e.to_string()),
        }
    }

    pub fn err(message: impl Into<String>) -> Self {
        Self {
            content: message.into(),
            is_error: true,
        }
    }
}

impl From<JailError> for Outcome {
    fn from(e: JailError) -> Self {
        Self::err(e.to_string())
    }
}

impl From<PtyError> for Outcome {
    fn from(e: PtyError) -> Self {
        Self::err(e.to_string())
    }
}

#[derive(Clone)]
pub struct Device {
    pub jail: Jail,
    /// None when the PTY is switched off (`--no-pty`).
    pub pty: Option<PtyManager>,
}

fn spec(name: &str, class: &str, description: &str, parameters: Value) -> AnnouncedTool {
    AnnouncedTool {
        name: name.into(),
        description: description.into(),
        parameters,
        privilege_class: class.into(),
    }
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false
    })
}

fn str_arg<'a>(args: &'a Value, key: &str) -> Result<&'a str, Outcome> {
    args.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| Outcome::err(format!("argument {key:?} (a string) is required")))
}

fn opt_str<'a>(args: &'a Value, key: &str) -> &'a str {
    args.get(key).and_then(Value::as_str).unwrap_or("")
}

fn opt_u64(args: &Value, key: &str) -> Option<u64> {
    args.get(key).and_then(Value::as_u64)
}

fn dims(args: &Value) -> (u16, u16) {
    let get = |k: &str, d: u16| {
        opt_u64(args, k)
            .and_then(|v| u16::try_from(v).ok())
            .unwrap_or(d)
    };
    (get("cols", 120), get("rows", 40))
}

impl Device {
    pub fn tools(&self) -> Vec<AnnouncedTool> {
        let path = json!({ "type": "string", "description": "Relative to the device's shared folder; '' is the folder itself." });
        let mut tools = vec![
            spec(
                "fs_list",
                "read",
                "List a folder in the device's shared folder: names, kinds (file, dir, symlink) and sizes.",
                object(json!({ "path": path }), &[]),
            ),
            spec(
                "fs_read",
                "read",
                "Read a text file in the device's shared folder (up to a size limit; use offset to read on).",
                object(
                    json!({ "path": path, "offset": { "type": "integer", "minimum": 0 }, "max_bytes": { "type": "integer", "minimum": 1 } }),
                    &["path"],
                ),
            ),
            spec(
                "fs_search",
                "read",
                "Search the device's shared folder for file names containing a text, and with content=true for lines containing it.",
                object(
                    json!({ "query": { "type": "string" }, "path": path, "content": { "type": "boolean" } }),
                    &["query"],
                ),
            ),
        ];
        if !self.jail.read_only() {
            tools.push(spec(
                "fs_write",
                "write",
                "Write a text file in the device's shared folder (mode: overwrite, append or create_new; create_dirs makes missing folders).",
                object(
                    json!({
                        "path": path,
                        "content": { "type": "string" },
                        "mode": { "type": "string", "enum": ["overwrite", "append", "create_new"] },
                        "create_dirs": { "type": "boolean" }
                    }),
                    &["path", "content"],
                ),
            ));
        }
        if self.pty.is_some() {
            let session = json!({ "type": "string", "description": "The id pty_start returned." });
            tools.extend([
                spec(
                    "pty_exec",
                    "exec",
                    "Run a shell command on the device in a terminal (starting in the shared folder) until it ends or times out; returns its output and exit status.",
                    object(
                        json!({ "command": { "type": "string" }, "timeout_secs": { "type": "integer", "minimum": 1 } }),
                        &["command"],
                    ),
                ),
                spec(
                    "pty_start",
                    "exec",
                    "Start an interactive shell command on the device in a terminal; returns a session id and the first output.",
                    object(
                        json!({
                            "command": { "type": "string" },
                            "cols": { "type": "integer" },
                            "rows": { "type": "integer" },
                            "timeout_secs": { "type": "integer", "minimum": 1 }
                        }),
                        &["command"],
                    ),
                ),
                spec(
                    "pty_read",
                    "exec",
                    "Read a terminal session's new output, waiting up to wait_ms for some; reports the exit once it ended.",
                    object(json!({ "session": session, "wait_ms": { "type": "integer", "minimum": 0 } }), &["session"]),
                ),
                spec(
                    "pty_write",
                    "exec",
                    "Send input (keystrokes; end a line with \\n) to a terminal session.",
                    object(json!({ "session": session, "input": { "type": "string" } }), &["session", "input"]),
                ),
                spec(
                    "pty_resize",
                    "exec",
                    "Resize a terminal session.",
                    object(
                        json!({ "session": session, "cols": { "type": "integer" }, "rows": { "type": "integer" } }),
                        &["session", "cols", "rows"],
                    ),
                ),
                spec(
                    "pty_kill",
                    "exec",
                    "Kill a terminal session's command; returns its last output.",
                    object(json!({ "session": session }), &["session"]),
                ),
            ]);
        }
        tools
    }

    /// Runs one call. File system work runs on the blocking pool.
    pub async fn call(&self, name: &str, args: &Value) -> Outcome {
        match self.dispatch(name, args).await {
            Ok(o) | Err(o) => o,
        }
    }

    async fn dispatch(&self, name: &str, args: &Value) -> Result<Outcome, Outcome> {
        if !args.is_object() && !args.is_null() {
            return Err(Outcome::err("the arguments must be a JSON object"));
        }
        if name.starts_with("fs_") {
            let jail = self.jail.clone();
            let name = name.to_string();
            let args = args.clone();
            return tokio::task::spawn_blocking(move || fs_call(&jail, &name, &args))
                .await
                .map_err(|e| Outcome::err(format!("the call failed: {e}")))?;
        }
        let pty = match (&self.pty, name.starts_with("pty_")) {
            (Some(pty), true) => pty,
            _ => return Err(Outcome::err(format!("this device has no tool {name:?}"))),
        };
        let timeout = opt_u64(args, "timeout_secs").map(Duration::from_secs);
        Ok(match name {
            "pty_exec" => Outcome::json(&pty.exec(str_arg(args, "command")?, timeout).await?),
            "pty_start" => {
                let (cols, rows) = dims(args);
                let session = pty.start(str_arg(args, "command")?, cols, rows, timeout)?;
                Outcome::json(&pty.read(&session.id, Duration::from_millis(500)).await?)
            }
            "pty_read" => {
                let wait =
                    Duration::from_millis(opt_u64(args, "wait_ms").unwrap_or(1000).min(30_000));
                Outcome::json(&pty.read(str_arg(args, "session")?, wait).await?)
            }
            "pty_write" => {
                pty.write(str_arg(args, "session")?, str_arg(args, "input")?)?;
                Outcome::ok("sent".into())
            }
            "pty_resize" => {
                let (cols, rows) = dims(args);
                pty.resize(str_arg(args, "session")?, cols, rows)?;
                Outcome::ok(format!("resized to {cols}x{rows}"))
            }
            "pty_kill" => Outcome::json(&pty.kill(str_arg(args, "session")?).await?),
            _ => return Err(Outcome::err(format!("this device has no tool {name:?}"))),
        })
    }
}

fn fs_call(jail: &Jail, name: &str, args: &Value) -> Result<Outcome, Outcome> {
    Ok(match name {
        "fs_list" => Outcome::json(&jail.list(opt_str(args, "path"))?),
        "fs_read" => {
            let path = str_arg(args, "path")?;
            let out = jail.read(
                path,
                opt_u64(args, "offset").unwrap_or(0),
                opt_u64(args, "max_bytes"),
            )?;
            let end = out.offset + out.bytes.len() as u64;
            let mut text = match String::from_utf8(out.bytes) {
                Ok(text) if !text.contains('\0') => text,
                _ => {
                    return Ok(Outcome::ok(format!(
                        "[{path}: binary content, {} bytes; not shown]",
                        out.size
                    )));
                }
            };
            if out.truncated {
                text.push_str(&format!(
                    "\n[… bytes {}-{end} of {}; read on with offset={end}]",
                    out.offset, out.size
                ));
            }
            Outcome::ok(text)
        }
        "fs_search" => Outcome::json(
            &jail.search(
                opt_str(args, "path"),
                str_arg(args, "query")?,
                args.get("content")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            )?,
        ),
        "fs_write" if !jail.read_only() => {
            let mode = match opt_str(args, "mode") {
                "" | "overwrite" => WriteMode::Overwrite,
                "append" => WriteMode::Append,
                "create_new" => WriteMode::CreateNew,
                other => return Err(Outcome::err(format!("unknown mode {other:?}"))),
            };
            Outcome::json(
                &jail.write(
                    str_arg(args, "path")?,
                    str_arg(args, "content")?.as_bytes(),
                    mode,
                    args.get("create_dirs")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                )?,
            )
        }
        "fs_write" => Outcome::from(JailError::ReadOnly),
        _ => Outcome::err(format!("this device has no tool {name:?}")),
    })
}
