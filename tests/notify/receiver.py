"""A subscriber's rest-hook endpoint as a separate process, for end-to-end tests of notifications.

    python tests/notify/receiver.py --out received.jsonl [--port 0] [--hang-first S]

Appends every POSTed body (one JSON line each) to ``--out``, answers 200, prints ``listening on <port>``.
With ``--hang-first S`` the first request is held S seconds before it is answered (a worker can be killed then).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--hang-first", type=float, default=0.0)
    args = ap.parse_args()
    lock = threading.Lock()
    seen = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                seen[0] += 1
                n = seen[0]
            if n == 1 and args.hang_first:
                print(f"POST #{n} held", flush=True)
                time.sleep(args.hang_first)
            with lock, open(args.out, "ab") as fh:
                fh.write(body.replace(b"\n", b" ") + b"\n")
            print(f"POST #{n} stored", flush=True)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on {server.server_port}", flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
