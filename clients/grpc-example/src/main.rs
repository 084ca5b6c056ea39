//! `pa-grpc-example [--url http://127.0.0.1:50050] [--model auto] <message…>` streams a run;
//! `pa-grpc-example [--url …] memory <text…>` and `pa-grpc-example [--url …] integration
//! <name>` do a memory and an integration round trip. The token is in `PA_TOKEN` (an API key
//! from `POST /v1/me/api-keys`, or an OIDC access token).

use std::process::ExitCode;

const USAGE: &str = "usage: PA_TOKEN=<api key or access token> pa-grpc-example [--url http://127.0.0.1:50050] [--model auto] <message…> | memory <text…> | integration <name>";

#[tokio::main]
async fn main() -> ExitCode {
    let mut url = "http://127.0.0.1:50050".to_string();
    let mut model = "auto".to_string();
    let mut words = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--url" => url = args.next().unwrap_or_default(),
            "--model" => model = args.next().unwrap_or_default(),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => words.push(arg),
        }
    }
    let token = std::env::var("PA_TOKEN").unwrap_or_default();
    if words.is_empty() || token.is_empty() || url.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let outcome = match words[0].as_str() {
        "memory" if words.len() > 1 => {
            pa_grpc_example::memory_round_trip(&url, &token, &words[1..].join(" "))
                .await
                .map(|trip| {
                    println!(
                        "remembered {} ({}), found it {}, forgot {}",
                        trip.created.id,
                        trip.created.content,
                        if trip.found.first() == Some(&trip.created.id) {
                            "first"
                        } else {
                            "not first"
                        },
                        trip.forgotten
                    );
                    true
                })
        }
        "integration" if words.len() == 2 => {
            pa_grpc_example::integration_round_trip(&url, &token, &words[1])
                .await
                .map(|trip| {
                    println!(
                        "created {} ({}), selected for chat {}, switched off, deleted",
                        trip.created.id, trip.created.kind, trip.chat_id
                    );
                    true
                })
        }
        _ => {
            let mut stdout = std::io::stdout();
            pa_grpc_example::chat_once(&url, &token, &words.join(" "), &model, &mut stdout)
                .await
                .map(|outcome| {
                    if outcome.last_event != "RUN_FINISHED" {
                        eprintln!("run {} ended with {}", outcome.run_id, outcome.last_event);
                    }
                    outcome.last_event == "RUN_FINISHED"
                })
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            // A gRPC error carries the stable code in `x-pa-error-code`.
            match err.downcast_ref::<tonic::Status>() {
                Some(status) => eprintln!(
                    "error: {} ({})",
                    status.message(),
                    status
                        .metadata()
                        .get("x-pa-error-code")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("unknown")
                ),
                None => eprintln!("error: {err}"),
            }
            ExitCode::FAILURE
        }
    }
}
