-- Users' own provider keys (BYOK), one per tenant + user + provider. The key is stored only
-- envelope-encrypted (AES-256-GCM): `ciphertext`/`nonce` hold the key sealed under a per-row
-- random data key (DEK); `wrapped_dek`/`dek_nonce` hold that DEK sealed under the key-encryption
-- key (KEK) named by `kek_id`. Both are bound to the owner (tenant/user/provider) as associated
-- data, so a row copied to another owner does not decrypt. `last4` is the only plaintext hint.
CREATE TABLE user_keys (
    tenant_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    provider    TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    kek_id      TEXT NOT NULL,
    wrapped_dek BYTEA NOT NULL,
    dek_nonce   BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    nonce       BYTEA NOT NULL,
    last4       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id, provider)
);
