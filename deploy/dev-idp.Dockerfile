# syntax=docker/dockerfile:1.7
# The dev OpenID Provider (deploy/dev-idp) for the Compose stack; dev/test only.
#   docker build -f deploy/dev-idp.Dockerfile -t personal-agent/dev-idp .
ARG NODE_VERSION=20

FROM node:${NODE_VERSION}-bookworm-slim AS deps
WORKDIR /idp
COPY deploy/dev-idp/package.json deploy/dev-idp/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM node:${NODE_VERSION}-bookworm-slim AS runtime
WORKDIR /idp
COPY --from=deps /idp/node_modules ./node_modules
COPY deploy/dev-idp/package.json deploy/dev-idp/server.mjs deploy/dev-idp/realm.json ./
# Listen on every interface of the container; a fresh signing key per start.
ENV PA_IDP_HOST=0.0.0.0 PA_IDP_JWKS_FILE=memory
USER node
EXPOSE 8090
CMD ["node", "server.mjs"]
