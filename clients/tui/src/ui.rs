//! Draws an [`App`]: chat list on the left, transcript and input on the right, the status
//! line, and the approval prompt / model picker over them.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, List, ListItem, ListState, Paragraph, Wrap};

use crate::app::{App, Entry, Focus};

pub fn render(frame: &mut Frame, app: &App) {
    let [left, right] =
        Layout::horizontal([Constraint::Length(26), Constraint::Min(20)]).areas(frame.area());
    let [transcript, input, status] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(3),
        Constraint::Length(1),
    ])
    .areas(right);

    let focused = |f: Focus| {
        if app.focus == f {
            Style::default().fg(Color::Cyan)
        } else {
            Style::default()
        }
    };
    let items: Vec<ListItem> = app
        .chats
        .iter()
        .map(|c| {
            let title = if c.title.is_empty() {
                "(untitled)"
            } else {
                &c.title
            };
            let style = if app.chat_id.as_deref() == Some(c.id.as_str()) {
                Style::default().add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            ListItem::new(Span::styled(title.to_string(), style))
        })
        .collect();
    let mut state = ListState::default().with_selected(
        (app.focus == Focus::Chats && !app.chats.is_empty()).then_some(app.selected),
    );
    frame.render_stateful_widget(
        List::new(items)
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(" Chats (n: new) ")
                    .border_style(focused(Focus::Chats)),
            )
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED)),
        left,
        &mut state,
    );

    let lines = transcript_lines(app);
    let inner_width = transcript.width.saturating_sub(2).max(1) as usize;
    let inner_height = transcript.height.saturating_sub(2) as usize;
    // Follow the end of the transcript: scroll by the wrapped height beyond the view.
    let wrapped: usize = lines
        .iter()
        .map(|l| l.width().max(1).div_ceil(inner_width))
        .sum();
    let scroll = wrapped.saturating_sub(inner_height);
    let title = match &app.run_id {
        Some(_) => format!(" {} · streaming… (Esc cancels) ", app.model),
        None => format!(" {} ", app.model),
    };
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((u16::try_from(scroll).unwrap_or(u16::MAX), 0))
            .block(Block::default().borders(Borders::ALL).title(title)),
        transcript,
    );
    frame.render_widget(
        Paragraph::new(format!("> {}", app.input)).block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(focused(Focus::Input)),
        ),
        input,
    );
    frame.render_widget(
        Paragraph::new(app.status.as_str()).style(Style::default().fg(Color::DarkGray)),
        status,
    );

    if let Some(a) = &app.approval {
        let area = centered(frame.area(), 60, 7);
        frame.render_widget(Clear, area);
        frame.render_widget(
            Paragraph::new(vec![
                Line::from(format!("⚙ {}({})", a.name, a.args)),
                Line::from(""),
                Line::from(Span::styled(
                    "Allow this tool call? [y]es / [n]o",
                    Style::default().add_modifier(Modifier::BOLD),
                )),
            ])
            .wrap(Wrap { trim: true })
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(" Approval needed ")
                    .border_style(Style::default().fg(Color::Yellow)),
            ),
            area,
        );
    } else if let Some(i) = app.picker {
        let height = u16::try_from(app.models.len()).unwrap_or(20).min(20) + 2;
        let area = centered(frame.area(), 40, height.max(3));
        frame.render_widget(Clear, area);
        let items: Vec<ListItem> = if app.models.is_empty() {
            vec![ListItem::new("(no models)")]
        } else {
            app.models
                .iter()
                .map(|m| ListItem::new(m.as_str()))
                .collect()
        };
        let mut state = ListState::default().with_selected(Some(i));
        frame.render_stateful_widget(
            List::new(items)
                .block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(" Model (Enter) "),
                )
                .highlight_style(Style::default().add_modifier(Modifier::REVERSED)),
            area,
            &mut state,
        );
    }
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn transcript_lines(app: &App) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    for entry in &app.entries {
        match entry {
            Entry::User(text) => {
                for (i, l) in text.lines().enumerate() {
                    let prefix = if i == 0 { "you: " } else { "     " };
                    out.push(Line::from(vec![
                        Span::styled(prefix, Style::default().fg(Color::Green)),
                        Span::raw(l.to_string()),
                    ]));
                }
            }
            Entry::Assistant(text) => out.extend(markdown_lines(text)),
            Entry::Tool {
                name, args, result, ..
            } => {
                let result = match result {
                    Some(r) => one_line(r, 120),
                    None => "…".into(),
                };
                out.push(Line::styled(
                    format!("⚙ {name}({}) → {result}", one_line(args, 80)),
                    Style::default().fg(Color::Magenta),
                ));
            }
            Entry::Error(e) => out.push(Line::styled(
                format!("✖ {e}"),
                Style::default().fg(Color::Red),
            )),
            Entry::Info(i) => out.push(Line::styled(
                i.clone(),
                Style::default().fg(Color::DarkGray),
            )),
        }
        out.push(Line::from(""));
    }
    out
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

/// Just enough Markdown for a terminal: ``` fenced code blocks, `inline code` and **bold**.
pub fn markdown_lines(text: &str) -> Vec<Line<'static>> {
    let code = Style::default().fg(Color::Yellow);
    let mut in_block = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            out.push(Line::styled(format!("  {line}"), code));
            continue;
        }
        if let Some(h) = line.strip_prefix('#') {
            out.push(Line::styled(
                h.trim_start_matches('#').trim().to_string(),
                Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            ));
            continue;
        }
        out.push(Line::from(inline_spans(line, code)));
    }
    out
}

fn inline_spans(line: &str, code: Style) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    let mut rest = line;
    let mut bold = false;
    while !rest.is_empty() {
        let next_bold = rest.find("**");
        let next_code = rest.find('`');
        match (next_bold, next_code) {
            (Some(b), c) if c.is_none_or(|c| b < c) => {
                push(&mut spans, &rest[..b], bold);
                bold = !bold;
                rest = &rest[b + 2..];
            }
            (_, Some(c)) => {
                push(&mut spans, &rest[..c], bold);
                match rest[c + 1..].find('`') {
                    Some(end) => {
                        spans.push(Span::styled(rest[c + 1..c + 1 + end].to_string(), code));
                        rest = &rest[c + 2 + end..];
                    }
                    None => {
                        push(&mut spans, &rest[c..], bold);
                        rest = "";
                    }
                }
            }
            _ => {
                push(&mut spans, rest, bold);
                rest = "";
            }
        }
    }
    spans
}

fn push(spans: &mut Vec<Span<'static>>, text: &str, bold: bool) {
    if text.is_empty() {
        return;
    }
    let style = if bold {
        Style::default().add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    spans.push(Span::styled(text.to_string(), style));
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use serde_json::json;

    fn screen(app: &App, width: u16, height: u16) -> (String, ratatui::buffer::Buffer) {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
        terminal.draw(|f| render(f, app)).expect("draw");
        let buffer = terminal.backend().buffer().clone();
        let text = (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n");
        (text, buffer)
    }

    #[test]
    fn a_streamed_reply_is_drawn_with_bold_and_code() {
        let mut app = App::new("auto");
        app.run_started("c", "r");
        app.handle_event(&json!({"type": "TEXT_MESSAGE_START", "messageId": "m"}));
        for d in [
            "The answer is ",
            "**forty",
            "-two**.\n```\nlet x = 42;\n```\nDone",
        ] {
            app.handle_event(
                &json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": d}),
            );
        }
        app.handle_event(
            &json!({"type": "TOOL_CALL_START", "toolCallId": "t", "toolCallName": "calc"}),
        );
        app.handle_event(
            &json!({"type": "TOOL_CALL_ARGS", "toolCallId": "t", "delta": "{\"x\":1}"}),
        );
        app.handle_event(&json!({"type": "TOOL_CALL_RESULT", "toolCallId": "t", "content": "2"}));
        let (text, buffer) = screen(&app, 90, 20);
        assert!(text.contains("The answer is forty-two."), "{text}");
        assert!(text.contains("let x = 42;"), "{text}");
        assert!(text.contains("⚙ calc({\"x\":1}) → 2"), "{text}");
        assert!(text.contains("streaming"), "{text}");
        assert!(!text.contains("**"), "markers are not drawn: {text}");
        assert!(!text.contains("```"), "{text}");
        // "forty" is bold, "let" is in the code colour.
        let find = |needle: &str| {
            let (y, line) = text
                .lines()
                .enumerate()
                .find(|(_, l)| l.contains(needle))
                .expect("on screen");
            let col = line
                .find(needle)
                .map(|b| line[..b].chars().count())
                .unwrap_or(0);
            (
                u16::try_from(col).unwrap_or(0),
                u16::try_from(y).unwrap_or(0),
            )
        };
        let (x, y) = find("forty");
        assert!(buffer[(x, y)].modifier.contains(Modifier::BOLD));
        let (x, y) = find("The answer");
        assert!(!buffer[(x, y)].modifier.contains(Modifier::BOLD));
        let (x, y) = find("let x");
        assert_eq!(buffer[(x, y)].fg, Color::Yellow);
    }

    #[test]
    fn errors_the_approval_prompt_and_the_latest_text_are_visible() {
        let mut app = App::new("auto");
        for i in 0..40 {
            app.entries.push(Entry::User(format!("old message {i}")));
        }
        app.run_started("c", "r");
        app.handle_event(&json!({"type": "TEXT_MESSAGE_CONTENT", "delta": "latest words"}));
        app.handle_event(&json!({"type": "CUSTOM", "name": "tool_call_approval",
            "value": {"toolCallId": "t", "toolCallName": "delete_all"}}));
        let (text, _) = screen(&app, 100, 24);
        assert!(text.contains("latest words"), "follows the end: {text}");
        assert!(!text.contains("old message 0 "), "{text}");
        assert!(text.contains("Approval needed"), "{text}");
        assert!(text.contains("delete_all"), "{text}");
        app.handle_event(&json!({"type": "RUN_ERROR", "runId": "r", "message": "quota exceeded"}));
        let (text, _) = screen(&app, 100, 24);
        assert!(text.contains("✖ quota exceeded"), "{text}");
        assert!(!text.contains("Approval needed"), "{text}");
    }
}
