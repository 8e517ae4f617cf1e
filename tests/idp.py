"""A real identity provider for tests: an HTTP server process serving OIDC discovery and JWKS.

``python -m tests.idp --port N`` serves any number of realms (path prefixes): for a realm ``/r``,
``/r/.well-known/openid-configuration`` names the issuer ``http://host:N/r`` and its
``jwks_uri`` ``/r/jwks.json``. The test process holds the private keys, signs the tokens, and
steers the server over ``POST /admin/realm`` (what a realm serves: keys, ``max-age``, a delay, a
huge body, an error status); ``GET /admin/counts`` says how many requests each path got. Going
down is the process stopping; coming back is a new process on the same port, told its realms again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.support import ROOT, free_port, wait_until

DISCOVERY = "/.well-known/openid-configuration"


# -- the server (its own process) ---------------------------------------------------------------


class _State:
    def __init__(self) -> None:
        self.realms: dict[str, dict[str, Any]] = {}
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    state: _State

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.state.lock:
            self.state.realms[body["prefix"]] = body
        self._send(200, b"{}")

    def do_GET(self) -> None:
        path = self.path
        if path == "/admin/counts":
            with self.state.lock:
                self._send(200, json.dumps(self.state.counts).encode())
            return
        with self.state.lock:
            self.state.counts[path] += 1
        prefix, kind = (path.removesuffix(DISCOVERY), "discovery") if path.endswith(DISCOVERY) else ("", "")
        if not kind and path.endswith("/jwks.json"):
            prefix, kind = path.removesuffix("/jwks.json"), "jwks"
        realm = self.state.realms.get(prefix or "/") or self.state.realms.get(prefix)
        if realm is None or not kind:
            self._send(404, b'{"error":"not found"}')
            return
        if realm.get("delay"):
            time.sleep(realm["delay"])
        if realm.get("status"):
            self._send(realm["status"], b'{"error":"unavailable"}')
            return
        if kind == "discovery":
            issuer = realm["issuer"]
            document = {"issuer": issuer, "jwks_uri": issuer.rstrip("/") + "/jwks.json"}
            self._send(200, json.dumps(document).encode())
            return
        if realm.get("huge"):
            self._send(200, b'{"keys":[],"pad":"' + b"x" * (2 << 20) + b'"}')
            return
        self._send(200, json.dumps({"keys": realm["keys"]}).encode(), {"Cache-Control": f"max-age={realm['max_age']}"})


def serve(port: int) -> None:
    _Handler.state = _State()
    ThreadingHTTPServer(("127.0.0.1", port), _Handler).serve_forever()


# -- the test side ------------------------------------------------------------------------------


def _public_jwk(key: Any, alg: str, kid: str) -> dict[str, Any]:
    algorithm = jwt.get_algorithm_by_name(alg)
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


class SigningKey:
    """A private key of one algorithm, as an identity provider holds it."""

    def __init__(self, alg: str, kid: str) -> None:
        self.alg, self.kid = alg, kid
        if alg.startswith(("RS", "PS")):
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
        elif alg == "EdDSA":
            self.private = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(alg)

    def jwk(self) -> dict[str, Any]:
        return _public_jwk(self.private, self.alg, self.kid)

    def private_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(jwt.get_algorithm_by_name(self.alg).to_jwk(self.private))
        return {**jwk, "kid": self.kid, "alg": self.alg}

    def public_pem(self) -> str:
        from cryptography.hazmat.primitives import serialization

        pem: bytes = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode()

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None, kid: str | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": kid or self.kid, **(headers or {})})


class IdentityProvider:
    """The server process and what its realms serve; survives its own restarts on one port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log_path = workdir / "idp.log"
        self.realms: dict[str, dict[str, Any]] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def issuer(self, prefix: str) -> str:
        return self.base + prefix

    def start(self) -> IdentityProvider:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            cmd = [sys.executable, "-m", "tests.idp", "--port", str(self.port)]
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: httpx.get(self.base + "/admin/counts", timeout=1).status_code == 200, 10, "the IdP")
        for realm in self.realms.values():
            self._push(realm)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def realm(self, prefix: str, keys: list[dict[str, Any]], *, max_age: int = 300, **behaviour: Any) -> None:
        """What realm ``prefix`` serves ("/" for an Auth0-style tenant, whose issuer ends in "/")."""
        issuer = self.base + "/" if prefix == "/" else self.base + prefix
        self.realms[prefix] = {"prefix": prefix, "issuer": issuer, "keys": keys, "max_age": max_age, **behaviour}
        if self.proc is not None:
            self._push(self.realms[prefix])

    def behave(self, prefix: str, **behaviour: Any) -> None:
        realm = {**self.realms[prefix], "delay": 0, "huge": False, "status": 0, **behaviour}
        self.realm(prefix, realm.pop("keys"), **{k: v for k, v in realm.items() if k not in ("prefix", "issuer")})

    def _push(self, realm: dict[str, Any]) -> None:
        httpx.post(self.base + "/admin/realm", json=realm, timeout=5).raise_for_status()

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = httpx.get(self.base + "/admin/counts", timeout=5).json()
        return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    serve(parser.parse_args().port)


if __name__ == "__main__":
    main()
