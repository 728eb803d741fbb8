#!/usr/bin/env python3
"""A small HTTPS stand-in for Azure Key Vault and its token endpoints, for vaultdisk's tests.

No Azure can be reached from the test machines, and no installable Key Vault emulator has key
operations (ade-facts §3.4). This server serves the published request/response shapes on
127.0.0.1 with real RSA (the Python `cryptography` package, i.e. OpenSSL):

  POST /{tenant}/oauth2/v2.0/token      client credentials (Entra v2): form grant_type,
                                        client_id, client_secret, scope=<resource>/.default
  GET  /msi/token                       managed identity (App Service 2019-08-01 shape):
                                        header X-IDENTITY-HEADER, query resource
  GET  /secrets/{name}[/{version}]      SecretBundle {value, id, contentType, attributes, tags}
  POST /keys/{name}[/{version}]/unwrapkey  {"alg": RSA-OAEP|RSA-OAEP-256|RSA1_5, "value":
                                        base64url} -> {"kid", "value": base64url}

Key Vault errors use its {"error": {"code", "message"}} shape; a request without a bearer gets
401 with the WWW-Authenticate challenge; a token issued for another tenant gets 401 AKV10032.
Every data-plane call needs ?api-version=. The directory given holds cert.pem/key.pem (TLS),
keys/<name>.pem (RSA private keys, the KEKs) and secrets/<name>.json (the bundles without id).
Requests are logged to <dir>/requests.log (method, path, whether a bearer came; no secrets).

Usage: server.py DIR --tenant T --client-id C --client-secret-file F [--identity-header H]
       writes the port it listens on to DIR/port.
"""
import argparse
import base64
import json
import os
import secrets
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

VAULT_RESOURCE = "https://vault.azure.net"
TOKENS = {}  # token -> tenant
LOCK = threading.Lock()


def b64url_decode(text):
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Handler(BaseHTTPRequestHandler):
    server_version = "kv-test"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the request log below is enough
        pass

    def note(self, status):
        bearer = self.headers.get("Authorization", "").startswith("Bearer ")
        with LOCK, open(os.path.join(CFG.dir, "requests.log"), "a") as f:
            f.write(f"{self.command} {urlsplit(self.path).path} bearer={bearer} -> {status}\n")

    def reply(self, status, body, headers=()):
        raw = json.dumps(body).encode()
        self.note(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def kv_error(self, status, code, message, headers=()):
        self.reply(status, {"error": {"code": code, "message": message}}, headers)

    def body(self):
        n = int(self.headers.get("Content-Length", "0") or 0)
        return self.rfile.read(min(n, 1 << 20))

    def base(self):
        return f"https://{self.headers.get('Host', '127.0.0.1')}"

    # ---- tokens ----
    def issue(self, tenant, resource):
        tok = "kvtest." + secrets.token_hex(16)
        with LOCK:
            TOKENS[tok] = (tenant, resource)
        return tok

    def client_credentials(self, tenant):
        form = {k: v[0] for k, v in parse_qs(self.body().decode("utf-8", "replace")).items()}
        if tenant not in (CFG.tenant, "other-tenant"):
            return self.reply(400, {"error": "invalid_request",
                                    "error_description": f"AADSTS90002: Tenant '{tenant}' not found."})
        if form.get("grant_type") != "client_credentials":
            return self.reply(400, {"error": "unsupported_grant_type",
                                    "error_description": "AADSTS70003: grant_type not supported."})
        if form.get("client_id") != CFG.client_id:
            return self.reply(400, {"error": "unauthorized_client",
                                    "error_description": "AADSTS700016: Application not found in the directory."})
        if form.get("client_secret") != CFG.client_secret:
            return self.reply(401, {"error": "invalid_client",
                                    "error_description": "AADSTS7000215: Invalid client secret provided."})
        scope = form.get("scope", "")
        if not scope.endswith("/.default"):
            return self.reply(400, {"error": "invalid_scope",
                                    "error_description": "AADSTS1002012: The provided value for scope is not valid."})
        tok = self.issue(tenant, scope[: -len("/.default")])
        self.reply(200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                         "access_token": tok})

    def managed_identity(self, query):
        if not CFG.identity_header or self.headers.get("X-IDENTITY-HEADER") != CFG.identity_header:
            return self.reply(401, {"statusCode": 401, "message": "Unauthorized: missing or wrong X-IDENTITY-HEADER"})
        if query.get("api-version") != ["2019-08-01"] or "resource" not in query:
            return self.reply(400, {"statusCode": 400, "message": "resource and api-version=2019-08-01 are required"})
        resource = query["resource"][0]
        tok = self.issue(CFG.tenant, resource)
        self.reply(200, {"access_token": tok, "expires_on": "1900000000", "resource": resource,
                         "token_type": "Bearer", "client_id": CFG.client_id})

    def authorised(self):
        auth = self.headers.get("Authorization", "")
        challenge = [("WWW-Authenticate",
                      f'Bearer authorization="https://login.microsoftonline.com/{CFG.tenant}", '
                      f'resource="{VAULT_RESOURCE}"')]
        if not auth.startswith("Bearer "):
            self.kv_error(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.",
                          challenge)
            return False
        with LOCK:
            got = TOKENS.get(auth[len("Bearer "):])
        if got is None:
            self.kv_error(401, "Unauthorized", "AKV10022: Invalid audience or token.", challenge)
            return False
        tenant, resource = got
        if tenant != CFG.tenant:
            self.kv_error(401, "Unauthorized",
                          f"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{CFG.tenant}/, "
                          f"found https://sts.windows.net/{tenant}/.", challenge)
            return False
        if resource != VAULT_RESOURCE:
            self.kv_error(401, "Unauthorized", f"AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: {resource}.")
            return False
        return True

    # ---- data plane ----
    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [p for p in url.path.split("/") if p]
        if parts == ["msi", "token"]:
            return self.managed_identity(query)
        if not parts or parts[0] != "secrets" or len(parts) not in (2, 3):
            return self.kv_error(404, "NotFound", f"{url.path} is not a Key Vault object")
        if not self.authorised():
            return
        if "api-version" not in query:
            return self.kv_error(400, "BadParameter", "The request URI contains an invalid API version")
        path = os.path.join(CFG.dir, "secrets", os.path.basename(parts[1]) + ".json")
        if not os.path.isfile(path):
            return self.kv_error(404, "SecretNotFound",
                                 f"A secret with (name/id) {'/'.join(parts[1:])} was not found in this key vault.")
        with open(path) as f:
            bundle = json.load(f)
        version = parts[2] if len(parts) == 3 else "0123456789abcdef0123456789abcdef"
        bundle["id"] = f"{self.base()}/secrets/{parts[1]}/{version}"
        self.reply(200, bundle)

    def do_POST(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [p for p in url.path.split("/") if p]
        if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            return self.client_credentials(parts[0])
        if not parts or parts[0] != "keys" or parts[-1] != "unwrapkey" or len(parts) not in (3, 4):
            return self.kv_error(404, "NotFound", f"{url.path} is not a Key Vault operation")
        if not self.authorised():
            return
        if "api-version" not in query:
            return self.kv_error(400, "BadParameter", "The request URI contains an invalid API version")
        name = os.path.basename(parts[1])
        path = os.path.join(CFG.dir, "keys", name + ".pem")
        if not os.path.isfile(path):
            return self.kv_error(404, "KeyNotFound",
                                 f"A key with (name/id) {'/'.join(parts[1:-1])} was not found in this key vault.")
        try:
            req = json.loads(self.body())
            alg, value = req["alg"], b64url_decode(req["value"])
        except (ValueError, KeyError, TypeError):
            return self.kv_error(400, "BadParameter", "Property 'alg' and 'value' are required.")
        pads = {
            "RSA-OAEP": padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
            "RSA-OAEP-256": padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
            "RSA1_5": padding.PKCS1v15(),
        }
        if alg not in pads:
            return self.kv_error(400, "BadParameter", f"Invalid algorithm: {alg}")
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        try:
            plain = key.decrypt(value, pads[alg])
        except ValueError:
            return self.kv_error(400, "BadParameter", "Unable to decrypt the specified value with this key and algorithm.")
        version = parts[2] if len(parts) == 4 else "latest"
        self.reply(200, {"kid": f"{self.base()}/keys/{name}/{version}", "value": b64url(plain)})


def main():
    global CFG
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--tenant", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret-file", required=True)
    p.add_argument("--identity-header", default="")
    CFG = p.parse_args()
    with open(CFG.client_secret_file) as f:
        CFG.client_secret = f.read().strip()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(CFG.dir, "cert.pem"), os.path.join(CFG.dir, "key.pem"))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    with open(os.path.join(CFG.dir, "port.tmp"), "w") as f:
        f.write(str(httpd.server_address[1]))
    os.rename(os.path.join(CFG.dir, "port.tmp"), os.path.join(CFG.dir, "port"))
    sys.stdout.flush()
    httpd.serve_forever()


if __name__ == "__main__":
    main()
