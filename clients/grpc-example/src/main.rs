//! `pa-grpc-example [--url http://127.0.0.1:50050] [--model auto] <message…>`, with the token in
//! `PA_TOKEN` (an API key from `POST /v1/me/api-keys`, or an OIDC access token).

use std::process::ExitCode;

const USAGE: &str = "usage: PA_TOKEN=<api key or access token> pa-grpc-example [--url http://127.0.0.1:50050] [--model auto] <message…>";

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
    let mut stdout = std::io::stdout();
    match pa_grpc_example::chat_once(&url, &token, &words.join(" "), &model, &mut stdout).await {
        Ok(outcome) if outcome.last_event == "RUN_FINISHED" => ExitCode::SUCCESS,
        Ok(outcome) => {
            eprintln!("run {} ended with {}", outcome.run_id, outcome.last_event);
            ExitCode::FAILURE
        }
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
