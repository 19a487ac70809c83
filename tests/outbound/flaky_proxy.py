"""A tiny HTTP proxy in front of a FHIR server, for end-to-end tests of delivery under failure.

    python tests/outbound/flaky_proxy.py --upstream http://127.0.0.1:8081 [--port 0]
        [--fail-posts N]      answer the first N POSTs with 500 (without forwarding them)
        [--hang-first-post S] hold the first POST for S seconds, then forward it anyway

Prints ``listening on <port>`` once bound and one line per request (method, path, what it did).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

FORWARD_REQUEST = ("Content-Type", "Accept", "If-None-Exist", "If-Match", "Authorization", "Prefer")
FORWARD_RESPONSE = ("Content-Type", "Location", "ETag", "Last-Modified", "Retry-After")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--fail-posts", type=int, default=0)
    ap.add_argument("--hang-first-post", type=float, default=0.0)
    args = ap.parse_args()
    lock = threading.Lock()
    state = {"posts": 0}

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            action = "forwarded"
            if self.command == "POST":
                with lock:
                    state["posts"] += 1
                    n = state["posts"]
                if n <= args.fail_posts:
                    self._say(f"POST #{n} -> 500")
                    self.send_response(500)
                    payload = (b'{"resourceType":"OperationOutcome","issue":[{"severity":"error",'
                               b'"code":"exception","diagnostics":"injected failure"}]}')
                    self.send_header("Content-Type", "application/fhir+json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if n == 1 and args.hang_first_post:
                    self._say(f"POST #{n} held for {args.hang_first_post}s")
                    time.sleep(args.hang_first_post)
                    action = "forwarded after hold"
            headers = {k: self.headers[k] for k in FORWARD_REQUEST if self.headers.get(k)}
            resp = requests.request(self.command, args.upstream.rstrip("/") + self.path, data=body or None,
                                    headers=headers, timeout=30, allow_redirects=False)
            self._say(f"{self.command} {self.path.split('?')[0]} {action} -> {resp.status_code}")
            try:
                self.send_response(resp.status_code)
                for k in FORWARD_RESPONSE:
                    if resp.headers.get(k):
                        self.send_header(k, resp.headers[k])
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)
            except (BrokenPipeError, ConnectionResetError):
                self._say("client went away")

        do_GET = do_POST = do_PUT = do_DELETE = _handle

        def _say(self, line: str) -> None:
            print(line, flush=True)

        def log_message(self, *a) -> None:  # quiet: we print our own lines
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on {server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
