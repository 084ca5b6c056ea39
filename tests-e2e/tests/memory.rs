//! Memory end to end: world vs chat scope, isolation between users and tenants, forget, hybrid
//! search (a rare keyword vector search misses, a paraphrase full text misses), dedup on write,
//! the REST surface and chat documents — with the real offline embedder (all-MiniLM-L6-v2).

use pa_proto::v1::memory_service_client::MemoryServiceClient;
use pa_proto::v1::{
    ForgetMemoryRequest, MemoryItem, MemoryKind, MemoryScope, MemorySource, SearchMemoryRequest,
    SearchMode, UpsertMemoryRequest,
};
use serde_json::{Value, json};
use tests_e2e::Mesh;
use tonic::transport::Channel;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MINILM: &str = "offline/all-MiniLM-L6-v2";

async fn mesh() -> Result<(Mesh, MemoryServiceClient<Channel>), BoxError> {
    // The real embedder: extract the model first if this machine lacks it.
    pa_testkit::embed_model_dir()?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mesh = Mesh::builder().start().await?;
    let client = MemoryServiceClient::connect(mesh.memory_url.clone()).await?;
    Ok((mesh, client))
}

fn world(text: &str) -> MemoryItem {
    MemoryItem {
        scope: MemoryScope::World as i32,
        content: text.into(),
        ..Default::default()
    }
}

async fn remember(
    mesh: &Mesh,
    client: &mut MemoryServiceClient<Channel>,
    who: (&str, &str),
    item: MemoryItem,
) -> Result<MemoryItem, BoxError> {
    let identity = Mesh::identity(who.0, who.1);
    let request = UpsertMemoryRequest {
        item: Some(item),
        no_dedup: false,
    };
    Ok(client
        .upsert(mesh.auth.request(&identity, request))
        .await?
        .into_inner())
}

async fn search(
    mesh: &Mesh,
    client: &mut MemoryServiceClient<Channel>,
    who: (&str, &str),
    request: SearchMemoryRequest,
) -> Result<Vec<MemoryItem>, BoxError> {
    let identity = Mesh::identity(who.0, who.1);
    Ok(client
        .search(mesh.auth.request(&identity, request))
        .await?
        .into_inner()
        .results
        .into_iter()
        .filter_map(|r| r.item)
        .collect())
}

fn query(text: &str) -> SearchMemoryRequest {
    SearchMemoryRequest {
        query: text.into(),
        limit: 5,
        ..Default::default()
    }
}

fn texts(items: &[MemoryItem]) -> Vec<&str> {
    items.iter().map(|i| i.content.as_str()).collect()
}

const ME: (&str, &str) = ("acme", "alice");

/// Recall runs at every run start: a search with nothing in reach answers from one lookup and
/// computes no embedding; once something is stored, the query is embedded and ranked.
#[tokio::test]
async fn a_search_with_nothing_in_reach_computes_no_embedding() -> R {
    let (mesh, mut client) = mesh().await?;
    let embeds = || mesh.grpc_calls(&mesh.models_url, "personal_agent.v1.ModelService", "Embed");
    let before = embeds().await?;
    let identity = Mesh::identity(ME.0, ME.1);
    let empty = client
        .search(
            mesh.auth
                .request(&identity, query("what is my daughter called?")),
        )
        .await?
        .into_inner();
    assert!(empty.results.is_empty());
    assert_eq!(empty.embedding_model, "", "nothing was embedded");
    assert_eq!(embeds().await?, before, "no Embed call for an empty search");

    // Someone else's memory is not in reach either.
    remember(
        &mesh,
        &mut client,
        ("acme", "bob"),
        world("Bob's daughter is Ada."),
    )
    .await?;
    let stored = embeds().await?;
    assert!(stored > before, "storing a memory embeds it");
    let still = client
        .search(
            mesh.auth
                .request(&identity, query("what is my daughter called?")),
        )
        .await?
        .into_inner();
    assert!(still.results.is_empty());
    assert_eq!(embeds().await?, stored);

    remember(
        &mesh,
        &mut client,
        ME,
        world("My daughter's name is Matilda."),
    )
    .await?;
    let mine = embeds().await?;
    let found = client
        .search(
            mesh.auth
                .request(&identity, query("what is my daughter called?")),
        )
        .await?
        .into_inner();
    assert_eq!(found.embedding_model, MINILM);
    assert_eq!(embeds().await?, mine + 1.0, "the query was embedded");
    let found: Vec<_> = found.results.into_iter().filter_map(|r| r.item).collect();
    assert_eq!(texts(&found), ["My daughter's name is Matilda."]);
    mesh.stop().await
}

#[tokio::test]
async fn world_memory_from_one_chat_is_recalled_in_another_but_chat_memory_is_not() -> R {
    let (mesh, mut client) = mesh().await?;
    let mut item = world("My daughter's name is Matilda and she turns seven in June.");
    item.kind = MemoryKind::Fact as i32;
    item.source = Some(MemorySource {
        chat_id: "chat-1".into(),
        run_id: "run-1".into(),
        message_id: "msg-1".into(),
        ..Default::default()
    });
    let stored = remember(&mesh, &mut client, ME, item).await?;
    assert_eq!(stored.embedding_model, MINILM);
    assert_eq!(stored.embedding_dims, 384);
    assert_eq!(
        stored.source.as_ref().map(|s| s.run_id.as_str()),
        Some("run-1")
    );
    let chat_only = MemoryItem {
        scope: MemoryScope::Chat as i32,
        chat_id: Some("chat-1".into()),
        content: "In this chat we are planning Matilda's birthday party at the zoo.".into(),
        ..Default::default()
    };
    remember(&mesh, &mut client, ME, chat_only).await?;

    // Chat 2 sees the world memory (a paraphrased question) but not chat 1's memory.
    let mut q = query("what is my kid called?");
    q.chat_id = Some("chat-2".into());
    let found = search(&mesh, &mut client, ME, q).await?;
    assert_eq!(
        texts(&found),
        vec!["My daughter's name is Matilda and she turns seven in June."]
    );
    // Chat 1 sees both.
    let mut q = query("Matilda birthday");
    q.chat_id = Some("chat-1".into());
    assert_eq!(search(&mesh, &mut client, ME, q).await?.len(), 2);
    // Scope CHAT of chat 2: nothing; WORLD: only the world one.
    let mut q = query("Matilda birthday");
    q.scope = MemoryScope::Chat as i32;
    q.chat_id = Some("chat-2".into());
    assert!(search(&mesh, &mut client, ME, q).await?.is_empty());
    let mut q = query("Matilda birthday");
    q.scope = MemoryScope::World as i32;
    assert_eq!(search(&mesh, &mut client, ME, q).await?.len(), 1);
    mesh.stop().await
}

#[tokio::test]
async fn forget_removes_a_memory_from_search() -> R {
    let (mesh, mut client) = mesh().await?;
    let item = remember(&mesh, &mut client, ME, world("I am vegetarian.")).await?;
    assert_eq!(
        search(&mesh, &mut client, ME, query("vegetarian"))
            .await?
            .len(),
        1
    );
    let identity = Mesh::identity(ME.0, ME.1);
    let forget = ForgetMemoryRequest {
        id: item.id.clone(),
        ..Default::default()
    };
    client
        .forget(mesh.auth.request(&identity, forget.clone()))
        .await?;
    assert!(
        search(&mesh, &mut client, ME, query("vegetarian"))
            .await?
            .is_empty()
    );
    // Twice: not found.
    let again = client.forget(mesh.auth.request(&identity, forget)).await;
    assert_eq!(again.map(|_| ()).unwrap_err().code(), tonic::Code::NotFound);
    mesh.stop().await
}

#[tokio::test]
async fn hybrid_search_finds_a_rare_keyword_and_a_paraphrase() -> R {
    let (mesh, mut client) = mesh().await?;
    let keyword =
        "Weekend groceries: eggs, oat milk, flour, butter, apples and the spare part ZX-4471.";
    let allergy = "I have a severe allergy to peanuts.";
    let mut all = vec![keyword.to_string(), allergy.to_string()];
    // Distractors that look like the keyword query to an embedding model (short codes) and
    // share no word with either query.
    for (code, what) in [
        ("AB-1234", "is in drawer three"),
        ("QR-5521", "shipped on Tuesday"),
        ("KT-9082", "was returned"),
        ("PL-3310", "is the office door badge"),
        ("MN-7765", "belongs to the blue bicycle"),
        ("CX-2048", "is the printer toner"),
        ("WD-6117", "is the warranty number"),
        ("TR-4402", "is the train reservation"),
    ] {
        all.push(format!("Item {code} {what}."));
    }
    all.push("The office is closed on public holidays.".into());
    all.push("Meetings with the design team happen on Thursdays.".into());
    for text in &all {
        remember(&mesh, &mut client, ME, world(text)).await?;
    }
    let mode = |text: &str, mode: SearchMode, limit: u32| SearchMemoryRequest {
        query: text.into(),
        limit,
        mode: mode as i32,
        ..Default::default()
    };
    // The rare keyword: full text has it, vector search alone does not rank it near the top.
    let vector = search(
        &mesh,
        &mut client,
        ME,
        mode("ZX-4471", SearchMode::Vector, 3),
    )
    .await?;
    assert!(!texts(&vector).contains(&keyword), "{:?}", texts(&vector));
    let hybrid = search(
        &mesh,
        &mut client,
        ME,
        mode("ZX-4471", SearchMode::Hybrid, 3),
    )
    .await?;
    assert_eq!(
        texts(&hybrid).first(),
        Some(&keyword),
        "{:?}",
        texts(&hybrid)
    );
    // The paraphrase: no shared word, so full text misses it; vector and hybrid find it first.
    let question = "which nuts should I avoid eating?";
    let text = search(&mesh, &mut client, ME, mode(question, SearchMode::Text, 3)).await?;
    assert!(!texts(&text).contains(&allergy), "{:?}", texts(&text));
    let hybrid = search(
        &mesh,
        &mut client,
        ME,
        mode(question, SearchMode::Hybrid, 3),
    )
    .await?;
    assert_eq!(
        texts(&hybrid).first(),
        Some(&allergy),
        "{:?}",
        texts(&hybrid)
    );
    // min_score drops weaker semantic matches: set it between the best and the second best.
    let identity = Mesh::identity(ME.0, ME.1);
    let all = client
        .search(
            mesh.auth
                .request(&identity, mode(question, SearchMode::Vector, 10)),
        )
        .await?
        .into_inner()
        .results;
    assert!(all.len() > 2 && all[0].similarity > all[1].similarity);
    let mut strict = mode(question, SearchMode::Vector, 10);
    strict.min_score = (all[0].similarity + all[1].similarity) / 2.0;
    assert_eq!(
        texts(&search(&mesh, &mut client, ME, strict).await?),
        vec![allergy]
    );
    mesh.stop().await
}

#[tokio::test]
async fn near_duplicates_update_instead_of_insert() -> R {
    let (mesh, mut client) = mesh().await?;
    let first = remember(&mesh, &mut client, ME, world("I live in Berlin.")).await?;
    let second = remember(&mesh, &mut client, ME, world("I live in Berlin")).await?;
    assert_eq!(first.id, second.id);
    assert_eq!(second.content, "I live in Berlin");
    let other = remember(&mesh, &mut client, ME, world("I work in Hamburg.")).await?;
    assert_ne!(other.id, first.id);
    // The same text in a chat is a different memory (another scope).
    let chat = MemoryItem {
        scope: MemoryScope::Chat as i32,
        chat_id: Some("c1".into()),
        content: "I live in Berlin".into(),
        ..Default::default()
    };
    assert_ne!(remember(&mesh, &mut client, ME, chat).await?.id, first.id);
    // no_dedup inserts anyway.
    let identity = Mesh::identity(ME.0, ME.1);
    let forced = client
        .upsert(mesh.auth.request(
            &identity,
            UpsertMemoryRequest {
                item: Some(world("I live in Berlin")),
                no_dedup: true,
            },
        ))
        .await?
        .into_inner();
    assert_ne!(forced.id, first.id);
    mesh.stop().await
}

// ---- REST ------------------------------------------------------------------------------

async fn call(
    mesh: &Mesh,
    method: reqwest::Method,
    path: &str,
    who: (&str, &str),
    body: Option<Value>,
) -> Result<(u16, Value), BoxError> {
    let mut request = mesh
        .http
        .request(method, mesh.url(path))
        .header("x-pa-dev-tenant", who.0)
        .header("x-pa-dev-user", who.1)
        .header("x-pa-dev-roles", "user");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn item_texts(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["text"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn rest_memories_list_search_edit_pin_delete_and_stay_private() -> R {
    let (mesh, _client) = mesh().await?;
    use reqwest::Method as M;
    let alice = ("acme", "alice");
    let bob = ("acme", "bob");
    let carol = ("globex", "alice"); // same user id, other tenant
    for text in [
        "I prefer tea over coffee.",
        "My car is a green Volvo.",
        "I play the cello.",
    ] {
        let (status, body) = call(
            &mesh,
            M::POST,
            "/v1/me/memories",
            alice,
            Some(json!({"text": text})),
        )
        .await?;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["scope"], "world");
        assert_eq!(body["embedding_model"], MINILM);
    }
    // Paging: two then one, newest first.
    let (_, page1) = call(&mesh, M::GET, "/v1/me/memories?limit=2", alice, None).await?;
    assert_eq!(
        item_texts(&page1),
        vec!["I play the cello.", "My car is a green Volvo."]
    );
    let cursor = page1["next_cursor"]
        .as_str()
        .ok_or("a next page")?
        .to_string();
    let (_, page2) = call(
        &mesh,
        M::GET,
        &format!("/v1/me/memories?limit=2&cursor={cursor}"),
        alice,
        None,
    )
    .await?;
    assert_eq!(item_texts(&page2), vec!["I prefer tea over coffee."]);
    assert!(page2["next_cursor"].is_null());
    // Search.
    let (_, found) = call(
        &mesh,
        M::GET,
        "/v1/me/memories?q=which%20instrument%20do%20I%20play&limit=1",
        alice,
        None,
    )
    .await?;
    assert_eq!(item_texts(&found), vec!["I play the cello."]);
    let id = found["items"][0]["id"].as_str().ok_or("id")?.to_string();
    // Others see nothing of it and cannot touch it.
    for other in [bob, carol] {
        let (_, list) = call(&mesh, M::GET, "/v1/me/memories", other, None).await?;
        assert!(item_texts(&list).is_empty(), "{list}");
        let (_, found) = call(&mesh, M::GET, "/v1/me/memories?q=cello", other, None).await?;
        assert!(item_texts(&found).is_empty(), "{found}");
        let (status, _) = call(
            &mesh,
            M::PATCH,
            &format!("/v1/me/memories/{id}"),
            other,
            Some(json!({"text": "hacked"})),
        )
        .await?;
        assert_eq!(status, 404);
        let (status, _) = call(
            &mesh,
            M::DELETE,
            &format!("/v1/me/memories/{id}"),
            other,
            None,
        )
        .await?;
        assert_eq!(status, 404);
    }
    // Bob's own memory stays his.
    call(
        &mesh,
        M::POST,
        "/v1/me/memories",
        bob,
        Some(json!({"text": "I play the cello too."})),
    )
    .await?;
    let (_, mine) = call(&mesh, M::GET, "/v1/me/memories?q=cello", alice, None).await?;
    let mine = item_texts(&mine);
    assert_eq!(mine.first().map(String::as_str), Some("I play the cello."));
    assert!(!mine.iter().any(|t| t.contains("too")), "{mine:?}");
    // Edit (re-embedded: the new text is what search finds) and pin.
    let (status, edited) = call(
        &mesh,
        M::PATCH,
        &format!("/v1/me/memories/{id}"),
        alice,
        Some(json!({"text": "I play the violin.", "pinned": true})),
    )
    .await?;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["pinned"], true);
    let (_, found) = call(
        &mesh,
        M::GET,
        "/v1/me/memories?q=violin&limit=1",
        alice,
        None,
    )
    .await?;
    assert_eq!(item_texts(&found), vec!["I play the violin."]);
    let (_, pinned) = call(&mesh, M::GET, "/v1/me/memories?pinned=true", alice, None).await?;
    assert_eq!(item_texts(&pinned), vec!["I play the violin."]);
    // Delete.
    let (status, _) = call(
        &mesh,
        M::DELETE,
        &format!("/v1/me/memories/{id}"),
        alice,
        None,
    )
    .await?;
    assert_eq!(status, 204);
    let (_, list) = call(&mesh, M::GET, "/v1/me/memories", alice, None).await?;
    assert_eq!(item_texts(&list).len(), 2);
    // Bad input is a problem+json 400.
    let (status, problem) = call(
        &mesh,
        M::POST,
        "/v1/me/memories",
        alice,
        Some(json!({"text": "  "})),
    )
    .await?;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, _) = call(
        &mesh,
        M::GET,
        "/v1/me/memories?cursor=nonsense",
        alice,
        None,
    )
    .await?;
    assert_eq!(status, 400);
    let (status, _) = call(&mesh, M::GET, "/v1/me/memories?scope=chat", alice, None).await?;
    assert_eq!(status, 400, "scope chat needs chat_id");
    mesh.stop().await
}

/// A one-page PDF whose text is `text` (Helvetica), with a correct cross-reference table.
fn pdf(text: &str) -> Vec<u8> {
    let stream = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_string(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

async fn upload(
    mesh: &Mesh,
    chat: &str,
    name: &str,
    content_type: &str,
    data: Vec<u8>,
) -> Result<(u16, Value), BoxError> {
    let response = mesh
        .http
        .post(mesh.url(&format!("/v1/chats/{chat}/files?filename={name}")))
        .header("content-type", content_type)
        .body(data)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn chat_documents_are_chunked_embedded_and_searchable_in_their_chat() -> R {
    let (mesh, mut client) = mesh().await?;
    let chat = mesh.create_chat("docs").await?;
    let other = mesh.create_chat("other").await?;
    // Markdown long enough for several chunks; the fact is in the middle.
    let mut md = String::from("# Travel handbook\n\n");
    for i in 0..15 {
        md.push_str(&format!("Section {i}. General advice about packing light, keeping receipts and arriving early at stations.\n\n"));
    }
    md.push_str("The emergency contact for the Lisbon trip is Senhora Duarte, reachable at extension 7781.\n\n");
    for i in 15..30 {
        md.push_str(&format!(
            "Section {i}. More general advice about luggage, tickets and timetables.\n\n"
        ));
    }
    let (status, doc) = upload(
        &mesh,
        &chat,
        "handbook.md",
        "text/markdown",
        md.into_bytes(),
    )
    .await?;
    assert_eq!(status, 201, "{doc}");
    assert!(doc["chunks"].as_u64().unwrap_or(0) >= 3, "{doc}");
    assert_eq!(doc["embedding_model"], MINILM);
    let (status, doc2) = upload(
        &mesh,
        &chat,
        "memo.pdf",
        "application/pdf",
        pdf("The office wifi password is marmalade-42."),
    )
    .await?;
    assert_eq!(status, 201, "{doc2}");
    assert_eq!(doc2["chunks"], 1);

    let ask = |q: &str, chat: &str| {
        let mut r = query(q);
        r.chat_id = Some(chat.to_string());
        r.limit = 3;
        r
    };
    let dev = ("dev", "dev-user");
    let found = search(
        &mesh,
        &mut client,
        dev,
        ask("who do I call in an emergency in Lisbon?", &chat),
    )
    .await?;
    let top = found.first().ok_or("a result")?;
    assert!(
        top.content.contains("Senhora Duarte"),
        "{:?}",
        texts(&found)
    );
    assert_eq!(top.kind, MemoryKind::DocumentChunk as i32);
    let source = top.source.clone().unwrap_or_default();
    assert_eq!(source.document_name, "handbook.md");
    assert_eq!(source.chat_id, chat);
    let found = search(&mesh, &mut client, dev, ask("wifi password", &chat)).await?;
    assert!(
        found
            .first()
            .is_some_and(|m| m.content.contains("marmalade-42")),
        "{:?}",
        texts(&found)
    );
    // Not in another chat.
    let found = search(
        &mesh,
        &mut client,
        dev,
        ask("Senhora Duarte emergency contact Lisbon", &other),
    )
    .await?;
    assert!(
        found.iter().all(|m| !m.content.contains("Duarte")),
        "{:?}",
        texts(&found)
    );
    // Forget the document: all its chunks go.
    let identity = Mesh::identity(dev.0, dev.1);
    let gone = client
        .forget(mesh.auth.request(
            &identity,
            ForgetMemoryRequest {
                document_id: doc["document_id"].as_str().unwrap_or_default().into(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    assert_eq!(
        u64::from(gone.forgotten),
        doc["chunks"].as_u64().unwrap_or(0)
    );
    let found = search(&mesh, &mut client, dev, ask("Senhora Duarte", &chat)).await?;
    assert!(found.iter().all(|m| !m.content.contains("Duarte")));
    // Bad uploads are clear 4xx.
    let (status, problem) = upload(&mesh, &chat, "x.png", "image/png", vec![1, 2, 3]).await?;
    assert_eq!(status, 400, "{problem}");
    let (status, _) = upload(
        &mesh,
        &chat,
        "bad.pdf",
        "application/pdf",
        b"%PDF-1.4 garbage".to_vec(),
    )
    .await?;
    assert_eq!(status, 400);
    let (status, _) = upload(
        &mesh,
        "no-such-chat",
        "a.txt",
        "text/plain",
        b"hello".to_vec(),
    )
    .await?;
    assert_eq!(status, 404);
    let (status, _) = upload(
        &mesh,
        &chat,
        "big.txt",
        "text/plain",
        vec![b'a'; 11 * 1024 * 1024],
    )
    .await?;
    assert_eq!(status, 413, "over the upload limit: payload_too_large");
    mesh.stop().await
}
