"""A stand-in for API Gateway's IAM authorization, for the CLI's SigV4 tests (dev/tests/cli.rs).

It checks each request's AWS Signature Version 4 the way API Gateway does for an AWS_IAM route,
recomputing it with botocore (an implementation independent of the aws-sigv4 crate the CLI signs
with), and forwards the requests that pass to the local stack with its admin token, as API
Gateway forwards an IAM-authorized request to the management function. Refusals are API
Gateway's: 403 with {"message": ...}.

Usage: python sigv4_gateway.py UPSTREAM_URL UPSTREAM_TOKEN REGION
Credentials it accepts: GATEWAY_ACCESS_KEY_ID, GATEWAY_SECRET_ACCESS_KEY and, when set,
GATEWAY_SESSION_TOKEN (then required, as for temporary credentials). Prints the port it listens
on (loopback) as its first line.
"""

import datetime
import json
import os
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

UPSTREAM, UPSTREAM_TOKEN, REGION = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
ACCESS_KEY = os.environ["GATEWAY_ACCESS_KEY_ID"]
SECRET = os.environ["GATEWAY_SECRET_ACCESS_KEY"]
SESSION_TOKEN = os.environ.get("GATEWAY_SESSION_TOKEN") or None
SERVICE = "execute-api"
MAX_SKEW = datetime.timedelta(minutes=5)


def parse_authorization(value):
    """AWS4-HMAC-SHA256 Credential=AK/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b, Signature=hex"""
    algorithm, _, rest = value.partition(" ")
    if algorithm != "AWS4-HMAC-SHA256":
        return None
    fields = {}
    for part in rest.split(","):
        name, _, v = part.strip().partition("=")
        fields[name] = v
    if not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
        return None
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        return None
    return scope, fields["SignedHeaders"].split(";"), fields["Signature"]


class Gateway(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: the test prints what matters
        pass

    def refuse(self, message):
        body = json.dumps({"message": message}).encode()
        self.send_response(403)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("apigw-requestid", "sigv4-gateway")
        self.end_headers()
        self.wfile.write(body)

    def check(self, body):
        """None when the signature is valid; else API Gateway's message."""
        auth = self.headers.get("authorization")
        if not auth:
            return "Missing Authentication Token"
        parsed = parse_authorization(auth)
        if parsed is None:
            return "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders'."
        (access_key, day, region, service, _), signed_headers, signature = parsed
        if access_key != ACCESS_KEY:
            return "The security token included in the request is invalid."
        if service != SERVICE:
            return f"Credential should be scoped to correct service: '{SERVICE}'."
        if region != REGION:
            return f"Credential should be scoped to a valid region, not '{region}'."
        amz_date = self.headers.get("x-amz-date", "")
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            return "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        if abs(datetime.datetime.now(datetime.timezone.utc) - when) > MAX_SKEW or amz_date[:8] != day:
            return "Signature expired or not yet current."
        if "host" not in signed_headers or "x-amz-date" not in signed_headers:
            return "'Host' and 'X-Amz-Date' must be signed."
        if SESSION_TOKEN is not None and (
            self.headers.get("x-amz-security-token") != SESSION_TOKEN or "x-amz-security-token" not in signed_headers
        ):
            return "The security token included in the request is invalid."
        # Recompute: only the headers the client signed, the path and query as received.
        headers = {}
        for name in signed_headers:
            value = self.headers.get(name)
            if value is None:
                return f"The signed header '{name}' is missing."
            headers[name] = value
        request = AWSRequest(method=self.command, url=f"http://{headers['host']}{self.path}", headers=headers, data=body)
        request.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET, SESSION_TOKEN), SERVICE, REGION)
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if expected != signature:
            return (
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method."
            )
        return None

    def handle_any(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        refusal = self.check(body)
        if refusal is not None:
            return self.refuse(refusal)
        target = UPSTREAM + self.path
        forwarded = urllib.request.Request(target, data=body if body else None, method=self.command)
        for name in ("content-type", "accept"):
            if self.headers.get(name):
                forwarded.add_header(name, self.headers[name])
        forwarded.add_header("authorization", f"Bearer {UPSTREAM_TOKEN}")
        try:
            with urllib.request.urlopen(forwarded, timeout=30) as resp:
                status, resp_headers, resp_body = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            status, resp_headers, resp_body = e.code, e.headers, e.read()
        self.send_response(status)
        for name in ("content-type", "x-request-id", "location"):
            if resp_headers.get(name):
                self.send_header(name, resp_headers[name])
        self.send_header("content-length", str(len(resp_body)))
        self.end_headers()
        self.wfile.write(resp_body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = handle_any


def main():
    if urlsplit(UPSTREAM).scheme not in ("http", "https"):
        sys.exit(f"sigv4_gateway: upstream {UPSTREAM!r} is not a URL")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
