//! Exit 0 when the target is healthy, 1 otherwise (a container healthcheck).

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match pa_ops::Probe::parse(&args) {
        Ok(probe) if probe.check().await => std::process::ExitCode::SUCCESS,
        Ok(probe) => {
            eprintln!("unhealthy: {probe:?}");
            std::process::ExitCode::FAILURE
        }
        Err(usage) => {
            eprintln!("{usage}");
            std::process::ExitCode::from(2)
        }
    }
}
