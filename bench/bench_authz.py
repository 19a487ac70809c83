"""Benchmark: authorization overhead per request (target: p95 <= 1 ms added; verified tokens are cached).

Two measurements on a seeded SQLite store:
1. the authorization path alone, as a request pays it: cached bearer-token lookup, the route check
   (scope + role), and the visibility check of the resource returned (tenant tag, no database);
2. end to end through the Flask test client: GET /fhir/Patient/<id> in development mode (no token,
   local administrator) against the same request by a hospital with a token (audit off, so the
   difference is authorization, not the audit write); requests interleaved to share the machine's noise.
Prints the machine, the load, the size, median and p95 of each and of the difference.

    .venv/bin/python bench/bench_authz.py            # 3,000 requests each
    .venv/bin/python bench/bench_authz.py --n 500
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.api.app import create_app  # noqa: E402
from gateway.config import SecuritySettings, Settings, StoreSettings  # noqa: E402
from gateway.security.policy import Access  # noqa: E402
from tests.security import conftest as world  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def fmt(name: str, xs: list[float]) -> str:
    return f"{name:<44} median {statistics.median(xs) * 1000:7.3f} ms   p95 {pct(xs, 95) * 1000:7.3f} ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-authz-"))
    keys = world.Keys()
    world.write_clients(tmp / "clients", keys)
    os.environ.setdefault("GATEWAY_ALLOWED_HOSTS", "app.example.org")
    base = Settings(store=StoreSettings(f"sqlite:///{tmp / 'gw.sqlite3'}"), instance_path=tmp,
                    security=SecuritySettings(rate_limit=0))
    dev = create_app(base)
    idp = tmp / "idp-jwks.json"
    idp.write_text(json.dumps({"keys": [world.public_jwk(keys.idp, "idp-1")]}))
    secure = create_app(world.with_security(base, clients_path=tmp / "clients", audit="off",
                                            token_signing_key=world.pem(keys.gateway), idp_jwks_file=idp,
                                            idp_issuer=world.IDP_ISSUER, idp_audience=world.IDP_AUDIENCE))
    audited = create_app(world.with_security(secure.config["SETTINGS"], audit="on"))
    world.seed(dev.extensions["gateway.store"])  # one database file shared by the apps
    dc, sc = dev.test_client(), secure.test_client()
    token = world.get_token(sc, keys, "leeds-ehr")
    headers = world.bearer(token)

    # 1. the authorization path alone
    sec = secure.extensions["gateway.security"]
    store = secure.extensions["gateway.store"]
    patient = json.loads(store.read("Patient", "leeds-me").content)
    alone = []
    for _ in range(args.n):
        t0 = time.perf_counter()
        caller = sec.tokens.caller_for(token, "http://localhost/auth", "http://localhost/fhir")
        acc = Access(caller, store)
        acc.check("read", "Patient")
        assert acc.can_see(patient)
        alone.append(time.perf_counter() - t0)

    # 2. end to end, interleaved
    app_headers = world.bearer(world.idp_token(keys))
    ac = audited.test_client()
    d_times, s_times, p_times, a_times = [], [], [], []
    for _ in range(50):  # warm up
        dc.get("/fhir/Patient/leeds-me", headers=world.FHIR)
        sc.get("/fhir/Patient/leeds-me", headers=headers)
    for _ in range(args.n):
        t0 = time.perf_counter()
        r1 = dc.get("/fhir/Patient/leeds-me", headers=world.FHIR)
        t1 = time.perf_counter()
        r2 = sc.get("/fhir/Patient/leeds-me", headers=headers)
        t2 = time.perf_counter()
        assert r1.status_code == r2.status_code == 200
        r3 = sc.get("/fhir/Patient/leeds-me", headers=app_headers)
        t3 = time.perf_counter()
        assert r3.status_code == 200
        assert ac.get("/fhir/Patient/leeds-me", headers=headers).status_code == 200
        a_times.append(time.perf_counter() - t3)
        d_times.append(t1 - t0)
        s_times.append(t2 - t1)
        p_times.append(t3 - t2)

    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, "
          f"python {platform.python_version()}, load average {os.getloadavg()[0]:.2f} "
          f"{os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(f"size: {len(world.WORLD)} resources, {len(world.CLIENTS)} clients, {args.n} requests each, SQLite")
    print(fmt("authorization path alone (cached token)", alone))
    print(fmt("GET /fhir/Patient/id, development mode", d_times))
    print(fmt("GET /fhir/Patient/id, hospital token", s_times))
    print(fmt("GET /fhir/Patient/id, patient app (IdP token)", p_times))
    print(fmt("GET /fhir/Patient/id, hospital, audit on", a_times))
    for name, xs in (("hospital", s_times), ("patient app", p_times), ("hospital + audit", a_times)):
        print(f"{'added, ' + name + ' (p50 / p95 minus dev)':<44} "
              f"median {(statistics.median(xs) - statistics.median(d_times)) * 1000:7.3f} ms   "
              f"p95 {(pct(xs, 95) - pct(d_times, 95)) * 1000:7.3f} ms")
    for app in (dev, secure, audited):
        app.extensions["gateway.store"].engine.dispose()


if __name__ == "__main__":
    main()
