//! pa-tui: `pa-tui login`, `pa-tui --once "question"`, or the interactive chat UI.

use std::io::Write;
use std::process::ExitCode;

use pa_tui::api::{Api, ApiError, Chat, Message};
use pa_tui::app::{Action, App};
use pa_tui::{auth, sse, ui};
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use serde_json::Value;
use tokio::sync::mpsc;

const USAGE: &str = "\
usage:
  pa-tui [--url URL] [--model M] [--chat ID]          the interactive chat
  pa-tui [--url URL] --once QUESTION [--chat ID] [--model M]
                                                      ask once, print the reply (exit 0 on
                                                      RUN_FINISHED, 2 on RUN_ERROR, 1 otherwise)
  pa-tui [--url URL] login [--issuer URL] [--client-id ID] [--client-secret S]
                           [--user U --password P]    device-code login (or the password grant)
env: PA_URL (default http://127.0.0.1:8080), PA_TOKEN, PA_TOKEN_FILE, PA_CLIENT_SECRET";

#[derive(Default)]
struct Args {
    url: Option<String>,
    once: Option<String>,
    chat: Option<String>,
    model: Option<String>,
    login: bool,
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "login" => args.login = true,
            "--url" => args.url = Some(value("--url")?),
            "--once" => args.once = Some(value("--once")?),
            "--chat" => args.chat = Some(value("--chat")?),
            "--model" => args.model = Some(value("--model")?),
            "--issuer" => args.issuer = Some(value("--issuer")?),
            "--client-id" => args.client_id = Some(value("--client-id")?),
            "--client-secret" => args.client_secret = Some(value("--client-secret")?),
            "--user" => args.user = Some(value("--user")?),
            "--password" => args.password = Some(value("--password")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("pa-tui: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(if e.is_empty() { 0 } else { 64 });
        }
    };
    let url = args
        .url
        .clone()
        .or_else(|| std::env::var("PA_URL").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let api = Api::new(&url, auth::current_token());
    let result = if args.login {
        login(&api, &args).await
    } else if let Some(question) = &args.once {
        once(&api, question, &args).await
    } else {
        interactive(api, &args).await
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pa-tui: {e}");
            ExitCode::from(1)
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn login(api: &Api, args: &Args) -> Result<ExitCode, BoxError> {
    let issuer = match &args.issuer {
        Some(i) => i.clone(),
        None => {
            let config = api.auth_config().await?;
            match config["mode"].as_str() {
                Some("oidc") => config["issuer"].as_str().unwrap_or_default().to_string(),
                Some("dev") => {
                    println!("{} runs in dev mode: no login is needed.", api.base_url);
                    return Ok(ExitCode::SUCCESS);
                }
                _ => return Err(format!("{} offers no login ({config})", api.base_url).into()),
            }
        }
    };
    let client = auth::Client {
        id: args.client_id.clone().unwrap_or_else(|| "pa-cli".into()),
        secret: args.client_secret.clone().or_else(|| {
            std::env::var("PA_CLIENT_SECRET")
                .ok()
                .filter(|s| !s.is_empty())
        }),
    };
    let answer = match (&args.user, &args.password) {
        (Some(user), Some(password)) => {
            auth::password_login(&api.http, &issuer, &client, user, password).await?
        }
        (None, None) => {
            auth::device_login(&api.http, &issuer, &client, |uri, code| {
                println!("Open {uri} and confirm the code {code}");
                println!("Waiting for the sign-in…");
            })
            .await?
        }
        _ => return Err("--user and --password go together".into()),
    };
    let path = auth::store_token(&issuer, &answer)?;
    println!("Logged in; the token is stored in {}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn title_of(question: &str) -> String {
    let t: String = question.chars().take(40).collect();
    if question.chars().count() > 40 {
        format!("{t}…")
    } else {
        t
    }
}

async fn once(api: &Api, question: &str, args: &Args) -> Result<ExitCode, BoxError> {
    let chat_id = match &args.chat {
        Some(id) => id.clone(),
        None => api.create_chat(&title_of(question)).await?.id,
    };
    let model = args.model.as_deref().unwrap_or("auto");
    let run_id = match api.start_run(&chat_id, question, model).await {
        Ok(id) => id,
        // The gateway refused the run itself (bad model, quota…): a failed run too.
        Err(
            e @ ApiError {
                status: 400..=499, ..
            },
        ) => {
            eprintln!("pa-tui: the run was refused: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    let mut stdout = std::io::stdout();
    let mut outcome: Option<Result<(), String>> = None;
    let mut printed = false;
    sse::follow_run_events(
        &api.http,
        &api.events_url(&run_id),
        api.token.as_deref(),
        &run_id,
        None,
        &sse::FollowOptions::default(),
        |event, _| {
            let own = event["runId"].as_str().is_none_or(|r| r == run_id);
            // A sub-agent's text (relayed, with subagentRunId) is not the answer.
            let sub_run = event.get("subagentRunId").is_some();
            match event["type"].as_str().unwrap_or_default() {
                "TEXT_MESSAGE_CONTENT" if !sub_run => {
                    let delta = event["delta"].as_str().unwrap_or_default();
                    printed |= !delta.is_empty();
                    let _ = stdout.write_all(delta.as_bytes());
                    let _ = stdout.flush();
                }
                "RUN_FINISHED" if own => outcome = Some(Ok(())),
                "RUN_ERROR" if own => {
                    let message = event["message"].as_str().unwrap_or("the run failed");
                    let code = event["code"].as_str().unwrap_or("error");
                    outcome = Some(Err(format!("{message} ({code})")));
                }
                _ => {}
            }
        },
    )
    .await?;
    if printed {
        println!();
    }
    match outcome {
        Some(Ok(())) => Ok(ExitCode::SUCCESS),
        Some(Err(e)) => {
            eprintln!("pa-tui: the run failed: {e}");
            Ok(ExitCode::from(2))
        }
        None => Err("the stream ended without the run's end".into()),
    }
}

/// What the I/O tasks and the key reader tell the UI loop.
enum Msg {
    Key(ratatui::crossterm::event::KeyEvent),
    Resize,
    Chats(Vec<Chat>),
    Models(Vec<String>),
    Messages(String, Vec<Message>),
    Started { chat_id: String, run_id: String },
    Event(Value),
    StreamEnded(Result<(), String>),
    Error(String),
    Info(String),
}

async fn interactive(api: Api, args: &Args) -> Result<ExitCode, BoxError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut app = App::new(args.model.as_deref().unwrap_or("auto"));
    spawn_load_chats(&api, &tx);
    {
        let (api, tx) = (api.clone(), tx.clone());
        tokio::spawn(async move {
            match api.list_models().await {
                Ok(m) => tx.send(Msg::Models(m)),
                Err(e) => tx.send(Msg::Error(format!("models: {e}"))),
            }
        });
    }
    if let Some(chat_id) = &args.chat {
        spawn_open_chat(&api, &tx, chat_id.clone());
    }
    // crossterm's reader blocks: it gets a thread of its own.
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            while let Ok(e) = event::read() {
                let msg = match e {
                    Event::Key(k) if k.kind != KeyEventKind::Release => Msg::Key(k),
                    Event::Resize(..) => Msg::Resize,
                    _ => continue,
                };
                if tx.send(msg).is_err() {
                    break;
                }
            }
        });
    }

    let mut terminal = ratatui::init();
    let result: Result<(), BoxError> = async {
        loop {
            terminal.draw(|f| ui::render(f, &app))?;
            let Some(msg) = rx.recv().await else { break };
            match msg {
                Msg::Key(key) => match app.handle_key(key) {
                    Some(Action::Quit) => break,
                    Some(action) => perform(&api, &tx, action),
                    None => {}
                },
                Msg::Resize => {}
                Msg::Chats(chats) => app.set_chats(chats),
                Msg::Models(models) => app.models = models,
                Msg::Messages(chat_id, messages) => app.show_messages(&chat_id, messages),
                Msg::Started { chat_id, run_id } => app.run_started(&chat_id, &run_id),
                Msg::Event(event) => app.handle_event(&event),
                Msg::StreamEnded(result) => {
                    match result {
                        Ok(()) => app.run_ended(),
                        Err(e) => {
                            app.error(e);
                            app.stream_lost();
                        }
                    }
                    spawn_load_chats(&api, &tx);
                }
                Msg::Error(e) => app.error(e),
                Msg::Info(i) => app.info(i),
            }
        }
        Ok(())
    }
    .await;
    ratatui::restore();
    result?;
    Ok(ExitCode::SUCCESS)
}

fn spawn_load_chats(api: &Api, tx: &mpsc::UnboundedSender<Msg>) {
    let (api, tx) = (api.clone(), tx.clone());
    tokio::spawn(async move {
        let _ = match api.list_chats().await {
            Ok(c) => tx.send(Msg::Chats(c)),
            Err(e) => tx.send(Msg::Error(format!("chats: {e}"))),
        };
    });
}

fn spawn_open_chat(api: &Api, tx: &mpsc::UnboundedSender<Msg>, chat_id: String) {
    let (api, tx) = (api.clone(), tx.clone());
    tokio::spawn(async move {
        let _ = match api.list_messages(&chat_id).await {
            Ok(m) => tx.send(Msg::Messages(chat_id, m)),
            Err(e) => tx.send(Msg::Error(format!("messages: {e}"))),
        };
    });
}

fn perform(api: &Api, tx: &mpsc::UnboundedSender<Msg>, action: Action) {
    let (api, tx) = (api.clone(), tx.clone());
    match action {
        Action::Quit => {}
        Action::OpenChat { chat_id } => spawn_open_chat(&api, &tx, chat_id),
        Action::Send {
            chat_id,
            message,
            model,
        } => {
            tokio::spawn(async move {
                let chat_id = match chat_id {
                    Some(id) => id,
                    None => match api.create_chat(&title_of(&message)).await {
                        Ok(c) => c.id,
                        Err(e) => return tx.send(Msg::Error(format!("new chat: {e}"))),
                    },
                };
                let run_id = match api.start_run(&chat_id, &message, &model).await {
                    Ok(id) => id,
                    Err(e) => return tx.send(Msg::Error(format!("the run was refused: {e}"))),
                };
                let _ = tx.send(Msg::Started {
                    chat_id,
                    run_id: run_id.clone(),
                });
                let result = sse::follow_run_events(
                    &api.http,
                    &api.events_url(&run_id),
                    api.token.as_deref(),
                    &run_id,
                    None,
                    &sse::FollowOptions::default(),
                    |event, _| {
                        let _ = tx.send(Msg::Event(event.clone()));
                    },
                )
                .await;
                tx.send(Msg::StreamEnded(
                    result.map(|_| ()).map_err(|e| e.to_string()),
                ))
            });
        }
        Action::Cancel { run_id } => {
            tokio::spawn(async move {
                let _ = match api.cancel_run(&run_id).await {
                    Ok(()) => tx.send(Msg::Info("Cancelling…".into())),
                    Err(e) => tx.send(Msg::Error(format!("cancel: {e}"))),
                };
            });
        }
        Action::Decide {
            run_id,
            tool_call_id,
            approve,
        } => {
            tokio::spawn(async move {
                let _ = match api.decide_approval(&run_id, &tool_call_id, approve).await {
                    Ok(()) => tx.send(Msg::Info(
                        if approve { "Approved." } else { "Denied." }.into(),
                    )),
                    Err(ApiError { status: 404, .. }) => tx.send(Msg::Error(
                        "This gateway does not take tool-call approvals \
                         (POST /v1/runs/{id}/approvals/{tool_call_id} answered 404)."
                            .into(),
                    )),
                    Err(e) => tx.send(Msg::Error(format!("approval: {e}"))),
                };
            });
        }
    }
}
