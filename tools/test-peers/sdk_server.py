#!/usr/bin/env python3
"""An MCP server with the authorization server built into the official Python SDK (PyPI `mcp`).

`MCPServer` with `auth_server_provider=` mounts the SDK's own auth routes (RFC 8414 metadata,
DCR, authorize, token, revocation, RFC 9728 metadata) beside its streamable-HTTP endpoint, and
checks bearer tokens itself, as MCP servers with built-in auth ship it. This file supplies only
the in-memory provider the SDK asks for (codes, access and refresh tokens with rotation,
revocation); client authentication is the SDK's.

    tools/test-peers/.venv/bin/python tools/test-peers/sdk_server.py --port 0 [--access-ttl S]

Prints one JSON line on stdout once listening:
    {"ready":true,"issuer":"http://127.0.0.1:P/","url":"http://127.0.0.1:P/mcp",
     "admin":"http://127.0.0.1:P","metadata":{...the SDK's RFC 8414 document...}}
Consent is automatic: the authorize endpoint redirects back with a code for `sdk-user`.

Test admin API (loopback, same port, no auth):
    POST /__test/introspect {"token"} -> {"active": bool, "kind": "access"|"refresh"|null}
    GET  /__test/requests            -> [{"endpoint","grant_type","basic","client_id_in_body",
                                          "client_secret_in_body","status"}]
The log (stderr) never carries a token, a code or a query string.
"""

import argparse
import asyncio
import json
import logging
import secrets
import socket
import sys
import time
from urllib.parse import parse_qs

import uvicorn
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from starlette.requests import Request
from starlette.responses import JSONResponse

SCOPES = ["mcp:read", "mcp:write"]
USER = "sdk-user"


class Provider:
    """The SDK's `OAuthAuthorizationServerProvider`, in memory."""

    def __init__(self, access_ttl: int):
        self.access_ttl = access_ttl
        self.clients: dict[str, OAuthClientInformationFull] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.access: dict[str, tuple[AccessToken, str]] = {}
        self.refresh: dict[str, tuple[RefreshToken, str]] = {}
        self.grants: dict[str, set[str]] = {}

    async def get_client(self, client_id: str):
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        self.clients[client_info.client_id] = client_info

    async def authorize(self, client, params: AuthorizationParams) -> str:
        code = secrets.token_urlsafe(32)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=[s for s in (params.scopes or SCOPES) if s in SCOPES],
            expires_at=time.time() + 300,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject=USER,
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(self, client, authorization_code: str):
        code = self.codes.get(authorization_code)
        return code if code and code.client_id == client.client_id else None

    def _issue(self, client_id: str, scopes: list[str], resource, grant: str) -> OAuthToken:
        at, rt = "py-at-" + secrets.token_urlsafe(24), "py-rt-" + secrets.token_urlsafe(24)
        expires = int(time.time()) + self.access_ttl
        self.access[at] = (
            AccessToken(token=at, client_id=client_id, scopes=scopes, expires_at=expires, resource=resource, subject=USER),
            grant,
        )
        self.refresh[rt] = (
            RefreshToken(token=rt, client_id=client_id, scopes=scopes, resource=resource, subject=USER),
            grant,
        )
        self.grants.setdefault(grant, set()).update({at, rt})
        return OAuthToken(access_token=at, expires_in=self.access_ttl, scope=" ".join(scopes), refresh_token=rt)

    async def exchange_authorization_code(self, client, authorization_code: AuthorizationCode) -> OAuthToken:
        if self.codes.pop(authorization_code.code, None) is None:
            raise TokenError("invalid_grant", "authorization code already used")
        grant = secrets.token_hex(8)
        return self._issue(client.client_id, authorization_code.scopes, authorization_code.resource, grant)

    async def load_refresh_token(self, client, refresh_token: str):
        found = self.refresh.get(refresh_token)
        return found[0] if found and found[0].client_id == client.client_id else None

    async def exchange_refresh_token(self, client, refresh_token: RefreshToken, scopes: list[str]) -> OAuthToken:
        found = self.refresh.pop(refresh_token.token, None)  # rotation
        if found is None:
            raise TokenError("invalid_grant", "refresh token is not active")
        return self._issue(client.client_id, scopes or refresh_token.scopes, refresh_token.resource, found[1])

    async def load_access_token(self, token: str):
        found = self.access.get(token)
        if not found or (found[0].expires_at or 0) < time.time():
            return None
        return found[0]

    async def revoke_token(self, token) -> None:
        # Revoking either token ends the whole grant, as oidc-provider does.
        found = self.access.get(token.token) or self.refresh.get(token.token)
        if not found:
            return
        for other in self.grants.pop(found[1], set()):
            self.access.pop(other, None)
            self.refresh.pop(other, None)

    def status(self, token: str) -> dict:
        if token in self.refresh:
            return {"active": True, "kind": "refresh"}
        if self.access.get(token) and (self.access[token][0].expires_at or 0) >= time.time():
            return {"active": True, "kind": "access"}
        return {"active": False, "kind": None}


class RecordClientAuth:
    """ASGI wrapper: notes how each token and revocation request authenticated (no values)."""

    def __init__(self, app, requests: list):
        self.app, self.requests = app, requests

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in ("/token", "/revoke"):
            return await self.app(scope, receive, send)
        messages, body = [], b""
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        form = parse_qs(body.decode("utf-8", "replace"))
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        entry = {
            "endpoint": path.lstrip("/"),
            "grant_type": (form.get("grant_type") or [None])[0],
            "basic": headers.get("authorization", "").lower().startswith("basic "),
            "client_id_in_body": "client_id" in form,
            "client_secret_in_body": "client_secret" in form,
        }

        async def replay():
            return messages.pop(0) if messages else await receive()

        async def noting(message):
            if message["type"] == "http.response.start":
                self.requests.append({**entry, "status": message["status"]})
            await send(message)

        await self.app(scope, replay, noting)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--access-ttl", type=int, default=3600)
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"

    provider = Provider(args.access_ttl)
    server = MCPServer(
        "agp-sdk-py-peer",
        auth_server_provider=provider,
        auth=AuthSettings(
            issuer_url=base,
            resource_server_url=base + "/mcp",
            validate_token_resource=True,
            client_registration_options=ClientRegistrationOptions(enabled=True, valid_scopes=SCOPES),
            revocation_options=RevocationOptions(enabled=True),
        ),
    )

    @server.tool(description="Echoes its text.", annotations={"readOnlyHint": True})
    def echo(text: str) -> str:
        return text

    @server.tool(description="The client and scopes of the calling token (never the token).", annotations={"readOnlyHint": True})
    def whoami() -> str:
        token = get_access_token()
        return json.dumps({"client_id": token.client_id if token else None, "scopes": token.scopes if token else [], "user": USER})

    requests: list = []

    @server.custom_route("/__test/introspect", methods=["POST"])
    async def introspect(request: Request):
        body = await request.json()
        return JSONResponse(provider.status(str(body.get("token", ""))))

    @server.custom_route("/__test/requests", methods=["GET"])
    async def noted(_request: Request):
        return JSONResponse(requests)

    app = RecordClientAuth(server.streamable_http_app(host="127.0.0.1"), requests)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uv = uvicorn.Server(config)

    async def serve():
        task = asyncio.create_task(uv.serve(sockets=[sock]))
        while not uv.started:
            if task.done():
                task.result()
                return
            await asyncio.sleep(0.02)
        metadata = await asyncio.to_thread(_metadata, base)
        ready = {"ready": True, "issuer": metadata["issuer"], "url": base + "/mcp", "admin": base, "port": port, "metadata": metadata}
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        await task

    asyncio.run(serve())


def _metadata(base: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(base + "/.well-known/oauth-authorization-server", timeout=5) as r:
        return json.loads(r.read())


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    main()
