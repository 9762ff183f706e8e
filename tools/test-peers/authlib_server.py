#!/usr/bin/env python3
"""An OAuth 2.0 authorization server on authlib (PyPI `Authlib`, its Flask integration) and an
MCP server on the official Python SDK (PyPI `mcp`) that it protects, configurable to behave as
real providers do (issue 17, item 3: provider quirks).

Everything OAuth is authlib's: client authentication (`client_secret_post`,
`client_secret_basic`, `none`, as each client is registered), the authorization-code grant with
PKCE S256 required (RFC 7636), the refresh-token grant, revocation (RFC 7009). This file supplies
the in-memory models authlib asks for, the RFC 8414 metadata document, and the quirks. There is
no Dynamic Client Registration: clients are registered with `--client`, as at Slack, GitHub,
Google or Entra. The MCP server (streamable HTTP, the SDK's bearer check and RFC 9728 metadata)
validates tokens against the authorization server's token store (same process).

    tools/test-peers/.venv/bin/python tools/test-peers/authlib_server.py --port 0 \
        --client ID:SECRET:METHOD [--client …] [--redirect-uri URI …] [--access-ttl S] \
        [--no-refresh] [--no-expiry] [--no-rotate] [--refresh-requires K=V …] \
        [--refresh-needs-scope SCOPE] [--reject-resource] \
        [--token-type VALUE | --no-token-type] [--expires-in-string]

Quirks:
    --no-refresh             never issue a refresh token (GitHub OAuth apps)
    --no-expiry              access tokens never expire; no `expires_in` (GitHub OAuth apps)
    --no-rotate              a refresh response carries no new refresh token; the old one stays
    --refresh-requires K=V   a refresh token only when the authorization request carried K=V
                             (repeatable, all needed: Google's access_type=offline, prompt=consent)
    --refresh-needs-scope S  a refresh token only when scope S was granted (offline_access)
    --reject-resource        `resource` (RFC 8707) refused at the authorization endpoint
                             (redirect with invalid_target) and the token endpoint (Entra)
    --token-type VALUE       `token_type` as given (bearer, BEARER, mac …) in token responses
    --no-token-type          no `token_type` in token responses
    --expires-in-string      `expires_in` as a JSON string ("3600")

Prints one JSON line on stdout once both servers listen:
    {"ready":true,"issuer":"http://127.0.0.1:P","url":"http://127.0.0.1:Q/mcp",
     "admin":"http://127.0.0.1:P","metadata":{…RFC 8414…}}
Consent is automatic for the user `quirk-user` (no pages).

Test admin API (loopback, on the authorization server's port, no auth):
    POST /__test/introspect {"token"} -> {"active": bool, "kind": "access"|"refresh"|null}
    GET  /__test/authorize-requests   -> every authorization request's parameters (`state`,
                                         `code_challenge` as "<present>")
    GET  /__test/token-requests       -> every /token and /revoke request: endpoint, grant_type,
                                         basic, client_id_in_body, client_secret_in_body,
                                         resource, status (no token, code or secret)
    POST /__test/revoke-all           -> every token is revoked (a user revoking the app)
The log (stderr) never carries a token, a code or a query string.
"""

import argparse
import asyncio
import json
import logging
import secrets
import socket
import sys
import threading
import time
import warnings
from urllib.parse import urlencode, urlparse

import uvicorn
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, jsonify, redirect, request
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from werkzeug.serving import make_server

SCOPES = ["mcp:read", "mcp:write"]
USER = "quirk-user"
LOCK = threading.Lock()


class Client(ClientMixin):
    def __init__(self, client_id, secret, method, redirect_uris):
        self.client_id, self.secret, self.method = client_id, secret, method
        self.redirect_uris = redirect_uris

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope):
        allowed = set(SCOPES) | set(OPTS.extra_scopes)
        asked = (scope or "").split()
        return " ".join(s for s in asked if s in allowed) if asked else " ".join(SCOPES)

    def check_redirect_uri(self, redirect_uri):
        if self.redirect_uris:
            return redirect_uri in self.redirect_uris
        # No list given: AGP's callback on any loopback port (the test knows its port late).
        u = urlparse(redirect_uri)
        return u.scheme == "http" and u.hostname == "127.0.0.1" and u.path == "/connect/callback"

    def check_client_secret(self, client_secret):
        return self.secret is not None and secrets.compare_digest(self.secret, client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return method == self.method

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type in ("authorization_code", "refresh_token")


class Code:
    def __init__(self, code, client_id, redirect_uri, scope, challenge, method, resource, params):
        self.code, self.client_id, self.redirect_uri, self.scope = code, client_id, redirect_uri, scope
        self.code_challenge, self.code_challenge_method = challenge, method
        self.resource, self.params = resource, params
        self.expires_at = time.time() + 300

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope


class Token:
    """An access or refresh token of one grant (the family), in memory."""

    def __init__(self, value, kind, client_id, scope, resource, expires_at, grant):
        self.value, self.kind, self.client_id, self.scope = value, kind, client_id, scope
        self.resource, self.expires_at, self.grant = resource, expires_at, grant
        self.revoked = False

    def active(self):
        return not self.revoked and (self.expires_at is None or self.expires_at > time.time())

    # authlib's TokenMixin, for the refresh grant and revocation.
    def check_client(self, client):
        return client.get_client_id() == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return 0 if self.expires_at is None else int(self.expires_at - time.time())

    def is_expired(self):
        return self.expires_at is not None and self.expires_at <= time.time()

    def is_revoked(self):
        return self.revoked

    def get_user(self):
        return USER

    def get_client(self):
        return CLIENTS.get(self.client_id)


CLIENTS: dict[str, Client] = {}
CODES: dict[str, Code] = {}
TOKENS: dict[str, Token] = {}
AUTHORIZE_REQUESTS: list = []
TOKEN_REQUESTS: list = []
OPTS = None


def refresh_allowed(params: dict, scope: str) -> bool:
    if OPTS.no_refresh:
        return False
    for kv in OPTS.refresh_requires:
        k, _, v = kv.partition("=")
        if params.get(k) != v:
            return False
    if OPTS.refresh_needs_scope and OPTS.refresh_needs_scope not in scope.split():
        return False
    return True


def record_tokens(token: dict, client_id: str, scope: str, resource, grant: str, with_refresh: bool):
    """Stores what was issued and shapes the response dict as the quirks say (authlib returns
    this very dict)."""
    expires_at = None if OPTS.no_expiry else time.time() + OPTS.access_ttl
    with LOCK:
        TOKENS[token["access_token"]] = Token(token["access_token"], "access", client_id, scope, resource, expires_at, grant)
        if with_refresh and token.get("refresh_token"):
            TOKENS[token["refresh_token"]] = Token(token["refresh_token"], "refresh", client_id, scope, resource, None, grant)
        else:
            token.pop("refresh_token", None)
    if OPTS.no_expiry:
        token.pop("expires_in", None)
    elif OPTS.expires_in_string:
        token["expires_in"] = str(OPTS.access_ttl)
    else:
        token["expires_in"] = OPTS.access_ttl
    if OPTS.no_token_type:
        token.pop("token_type", None)
    elif OPTS.token_type is not None:
        token["token_type"] = OPTS.token_type


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def save_authorization_code(self, code, req):
        data = req.payload.data
        CODES[code] = Code(
            code,
            req.client.get_client_id(),
            req.payload.redirect_uri,
            req.client.get_allowed_scope(req.payload.scope),
            data.get("code_challenge"),
            data.get("code_challenge_method"),
            data.get("resource"),
            {k: v for k, v in data.items()},
        )

    def query_authorization_code(self, code, client):
        c = CODES.get(code)
        if c and c.client_id == client.get_client_id() and c.expires_at > time.time():
            return c
        return None

    def delete_authorization_code(self, authorization_code):
        CODES.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code):
        return USER

    def save_token(self, token):
        code = self.request.authorization_code
        grant = secrets.token_hex(8)
        record_tokens(token, code.client_id, code.scope, code.resource, grant, refresh_allowed(code.params, code.scope))


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    @property
    def INCLUDE_NEW_REFRESH_TOKEN(self):  # noqa: N802 (authlib's name)
        return not OPTS.no_rotate

    def authenticate_refresh_token(self, refresh_token):
        with LOCK:
            t = TOKENS.get(refresh_token)
        return t if t and t.kind == "refresh" and t.active() else None

    def authenticate_user(self, refresh_token):
        return USER

    def save_token(self, token):
        old = self.request.refresh_token
        record_tokens(token, old.client_id, old.scope, old.resource, old.grant, not OPTS.no_rotate)

    def revoke_old_credential(self, refresh_token):
        if not OPTS.no_rotate:
            refresh_token.revoked = True


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def query_token(self, token_string, token_type_hint):
        with LOCK:
            return TOKENS.get(token_string)

    def revoke_token(self, token, req):
        # Revoking either token ends the whole grant, as oidc-provider does.
        with LOCK:
            for t in TOKENS.values():
                if t.grant == token.grant:
                    t.revoked = True


def client_auth_shape(form) -> dict:
    h = request.headers.get("Authorization", "")
    return {
        "basic": h.lower().startswith("basic "),
        "client_id_in_body": "client_id" in form,
        "client_secret_in_body": "client_secret" in form,
        "resource": form.get("resource"),
    }


def make_app(issuer: str, mcp_url: str, methods: list) -> Flask:
    app = Flask("authlib-quirks-as")
    # authlib's Flask integration issues no refresh tokens unless told to.
    app.config["OAUTH2_REFRESH_TOKEN_GENERATOR"] = True
    server = AuthorizationServer(app, query_client=CLIENTS.get, save_token=lambda token, req: None)
    server.register_grant(AuthorizationCodeGrant, [CodeChallenge(required=True)])
    server.register_grant(RefreshTokenGrant)
    server.register_endpoint(Revocation)
    metadata = {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/authorize",
        "token_endpoint": issuer + "/token",
        "revocation_endpoint": issuer + "/revoke",
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_methods_supported": methods,
        "scopes_supported": SCOPES + OPTS.extra_scopes,
    }
    app.config["METADATA"] = metadata

    @app.get("/.well-known/oauth-authorization-server")
    def well_known():
        return jsonify(metadata)

    @app.get("/authorize")
    def authorize():
        params = request.args.to_dict()
        shown = {k: ("<present>" if k in ("state", "code_challenge") else v) for k, v in params.items()}
        AUTHORIZE_REQUESTS.append(shown)
        if OPTS.reject_resource and "resource" in params:
            # Only after the client and redirect URI are known good (never redirect elsewhere).
            client = CLIENTS.get(params.get("client_id", ""))
            target = params.get("redirect_uri", "")
            if client is None or not client.check_redirect_uri(target):
                return jsonify({"error": "invalid_request"}), 400
            q = {"error": "invalid_target", "error_description": "The 'resource' request parameter is not supported."}
            if "state" in params:
                q["state"] = params["state"]
            return redirect(target + ("&" if "?" in target else "?") + urlencode(q), code=302)
        return server.create_authorization_response(grant_user=USER)

    @app.post("/token")
    def token():
        entry = {"endpoint": "token", "grant_type": request.form.get("grant_type"), **client_auth_shape(request.form)}
        if OPTS.reject_resource and "resource" in request.form:
            response = server.handle_error_response(None, InvalidRequestError("The 'resource' request parameter is not supported."))
        else:
            response = server.create_token_response()
        TOKEN_REQUESTS.append({**entry, "status": response.status_code})
        return response

    @app.post("/revoke")
    def revoke():
        entry = {"endpoint": "revoke", "grant_type": None, **client_auth_shape(request.form)}
        response = server.create_endpoint_response(Revocation.ENDPOINT_NAME)
        TOKEN_REQUESTS.append({**entry, "status": response.status_code})
        return response

    @app.post("/__test/introspect")
    def introspect():
        value = str((request.get_json(silent=True) or {}).get("token", ""))
        with LOCK:
            t = TOKENS.get(value)
            if t and t.active():
                return jsonify({"active": True, "kind": t.kind})
        return jsonify({"active": False, "kind": None})

    @app.get("/__test/authorize-requests")
    def authorize_requests():
        return jsonify(AUTHORIZE_REQUESTS)

    @app.get("/__test/token-requests")
    def token_requests():
        return jsonify(TOKEN_REQUESTS)

    @app.post("/__test/revoke-all")
    def revoke_all():
        with LOCK:
            for t in TOKENS.values():
                t.revoked = True
        return jsonify({"revoked": True})

    return app


class StoreVerifier:
    """The MCP server's token check: the authorization server's own store (same process)."""

    def __init__(self, mcp_url: str):
        self.mcp_url = mcp_url

    async def verify_token(self, token: str):
        with LOCK:
            t = TOKENS.get(token)
            if not t or t.kind != "access" or not t.active():
                return None
            # A token issued for a resource must be for this one; one issued without (an AS that
            # refuses RFC 8707, like Entra) is for every resource of this AS.
            if t.resource is not None and t.resource != self.mcp_url:
                return None
            return AccessToken(
                token=token,
                client_id=t.client_id,
                scopes=t.scope.split(),
                expires_at=int(t.expires_at) if t.expires_at else None,
                resource=t.resource,
                subject=USER,
            )


def bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def main() -> None:
    global OPTS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mcp-port", type=int, default=0)
    parser.add_argument("--client", action="append", default=[], help="ID:SECRET:METHOD (METHOD none: ID::none)")
    parser.add_argument("--redirect-uri", action="append", default=[])
    parser.add_argument("--access-ttl", type=int, default=3600)
    parser.add_argument("--no-refresh", action="store_true")
    parser.add_argument("--no-expiry", action="store_true")
    parser.add_argument("--no-rotate", action="store_true")
    parser.add_argument("--refresh-requires", action="append", default=[])
    parser.add_argument("--refresh-needs-scope")
    parser.add_argument("--reject-resource", action="store_true")
    parser.add_argument("--token-type")
    parser.add_argument("--no-token-type", action="store_true")
    parser.add_argument("--expires-in-string", action="store_true")
    OPTS = parser.parse_args()
    OPTS.extra_scopes = [OPTS.refresh_needs_scope] if OPTS.refresh_needs_scope else []

    methods = []
    for spec in OPTS.client:
        client_id, secret, method = spec.split(":", 2)
        CLIENTS[client_id] = Client(client_id, secret or None, method, OPTS.redirect_uri)
        if method not in methods:
            methods.append(method)
    methods = methods or ["client_secret_basic"]

    as_sock, mcp_sock = bind(OPTS.port), bind(OPTS.mcp_port)
    issuer = f"http://127.0.0.1:{as_sock.getsockname()[1]}"
    mcp_url = f"http://127.0.0.1:{mcp_sock.getsockname()[1]}/mcp"

    app = make_app(issuer, mcp_url, methods)
    as_sock.listen(64)
    http = make_server("127.0.0.1", 0, app, threaded=True, fd=as_sock.fileno())
    threading.Thread(target=http.serve_forever, daemon=True).start()

    mcp = MCPServer(
        "agp-authlib-quirks-peer",
        token_verifier=StoreVerifier(mcp_url),
        auth=AuthSettings(issuer_url=issuer, resource_server_url=mcp_url, validate_token_resource=False),
    )

    @mcp.tool(description="Echoes its text.", annotations={"readOnlyHint": True})
    def echo(text: str) -> str:
        return text

    @mcp.tool(description="The client and scopes of the calling token (never the token).", annotations={"readOnlyHint": True})
    def whoami() -> str:
        t = get_access_token()
        return json.dumps({"client_id": t.client_id if t else None, "scopes": t.scopes if t else [], "user": USER})

    config = uvicorn.Config(mcp.streamable_http_app(host="127.0.0.1"), log_level="warning", access_log=False, lifespan="on")
    uv = uvicorn.Server(config)

    async def serve():
        task = asyncio.create_task(uv.serve(sockets=[mcp_sock]))
        while not uv.started:
            if task.done():
                task.result()
                return
            await asyncio.sleep(0.02)
        ready = {"ready": True, "issuer": issuer, "url": mcp_url, "admin": issuer, "metadata": app.config["METADATA"]}
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="authlib")
    main()
