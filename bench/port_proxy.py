"""Published-port throughput: HTTP requests per second through a userland proxy from 127.0.0.1
to a server inside a network namespace this script makes (veth pair, 10.232.x/30), ours
(asyncdock.networks.portproxy, on the event loop, as the engine runs it) against Docker's own
`docker-proxy` run by hand as the peer in the same run when the binary exists.

Bounded: --seconds per round (default 5), --rounds (default 3), --concurrency (default 16),
one new TCP connection per request (what -p serves most: short HTTP exchanges). Loopback only.

  python bench/port_proxy.py [--seconds 5] [--rounds 3] [--concurrency 16] [--docker-proxy PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


REQ = b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n"


def setup_netns() -> tuple[str, str, str]:
    r = os.getpid() % 250
    ns, veth = f"adbench{os.getpid()}", f"adb{os.getpid() % 100000}"
    host_ip, ns_ip = f"10.232.{r}.1", f"10.232.{r}.2"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns], check=True)
    subprocess.run(["ip", "addr", "add", f"{host_ip}/30", "dev", veth], check=True)
    subprocess.run(["ip", "link", "set", veth, "up"], check=True)
    for cmd in (["link", "set", "lo", "up"], ["addr", "add", f"{ns_ip}/30", "dev", "eth0"], ["link", "set", "eth0", "up"]):
        subprocess.run(["ip", "-n", ns, *cmd], check=True)
    return ns, veth, ns_ip


def teardown_netns(ns: str, veth: str) -> None:
    subprocess.run(["ip", "link", "del", veth], capture_output=True)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(port: int, seconds: float, concurrency: int) -> tuple[int, list[float]]:
    deadline = time.monotonic() + seconds
    done = 0
    lat: list[float] = []

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                w.write(REQ)
                data = await asyncio.wait_for(r.read(), 5)
                w.close()
            except (OSError, asyncio.TimeoutError):
                continue
            if data.startswith(b"HTTP/1.") and b" 200 " in data[:16]:
                done += 1
                lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, lat


async def wait_port(port: int) -> None:
    for _ in range(100):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


async def run_ours(ns_ip: str, seconds: float, conc: int) -> tuple[int, list[float]]:
    """Ours in a separate process, like the engine's loop (not sharing the load generator's)."""
    port = free_port()
    code = ("import asyncio,sys;sys.path.insert(0,%r)\n"
            "from asyncdock.networks.portproxy import TcpProxy\n"
            "async def m():\n p=TcpProxy('127.0.0.1',%d,%r,80); await p.start(); await asyncio.sleep(%d)\n"
            "asyncio.run(m())\n") % (str(Path(__file__).resolve().parents[1]), port, ns_ip, int(seconds) + 30)
    try:
        import uvloop  # noqa: F401
        code = code.replace("asyncio.run(m())", "import uvloop; uvloop.run(m())")
    except ImportError:
        pass
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
    try:
        await wait_port(port)
        return await load(port, seconds, conc)
    finally:
        proc.kill()
        await proc.wait()


async def run_docker_proxy(binary: str, ns_ip: str, seconds: float, conc: int) -> tuple[int, list[float]]:
    port = free_port()
    # dockerd starts docker-proxy with a pipe on fd 3 where the proxy reports that it listens;
    # without one, the proxy's own listening socket lands on fd 3 and is closed by that report.
    # (subprocess closes every fd above 2 after preexec_fn, so the shell opens fd 3 instead.)
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", 'exec "$0" "$@" 3>/dev/null', binary, "-proto", "tcp", "-host-ip", "127.0.0.1",
        "-host-port", str(port), "-container-ip", ns_ip, "-container-port", "80")
    try:
        await wait_port(port)
        return await load(port, seconds, conc)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--docker-proxy", default=shutil.which("docker-proxy") or "/usr/sbin/docker-proxy")
    a = ap.parse_args()
    a.seconds, a.rounds, a.concurrency = min(a.seconds, 30), min(a.rounds, 10), min(a.concurrency, 128)
    have_peer = os.access(a.docker_proxy, os.X_OK)
    if not have_peer:
        print(f"# docker-proxy not found at {a.docker_proxy}: measuring asyncdock's proxy alone")
    ns, veth, ns_ip = setup_netns()
    www = Path(tempfile.mkdtemp(prefix="adbench"))
    (www / "index.html").write_text("x" * 512)
    httpd = subprocess.Popen(["ip", "netns", "exec", ns, "busybox", "httpd", "-f", "-p", f"{ns_ip}:80", "-h", str(www)])
    results: dict[str, list[float]] = {"asyncdock": [], "docker-proxy": []}
    lats: dict[str, list[float]] = {"asyncdock": [], "docker-proxy": []}
    try:
        time.sleep(0.3)
        for rnd in range(a.rounds):  # interleaved A/B
            n, lat = await run_ours(ns_ip, a.seconds, a.concurrency)
            results["asyncdock"].append(n / a.seconds)
            lats["asyncdock"] += lat
            line = f"round {rnd + 1}: asyncdock {n / a.seconds:8.0f} req/s"
            if have_peer:
                n2, lat2 = await run_docker_proxy(a.docker_proxy, ns_ip, a.seconds, a.concurrency)
                results["docker-proxy"].append(n2 / a.seconds)
                lats["docker-proxy"] += lat2
                line += f"   docker-proxy {n2 / a.seconds:8.0f} req/s   ratio {n / max(n2, 1):.2f}"
            print(line, flush=True)
    finally:
        httpd.kill()
        httpd.wait()
        teardown_netns(ns, veth)
        shutil.rmtree(www, ignore_errors=True)
    for k, v in results.items():
        if v:
            ls = sorted(lats[k])
            p50 = ls[len(ls) // 2] * 1000 if ls else 0
            p90 = ls[int(len(ls) * 0.9)] * 1000 if ls else 0
            print(f"{k:13s} median {statistics.median(v):8.0f} req/s  (rounds: {', '.join(f'{x:.0f}' for x in v)})"
                  f"  latency p50 {p50:.2f} ms p90 {p90:.2f} ms")
    if have_peer and results["docker-proxy"]:
        print(f"ratio asyncdock/docker-proxy (median): "
              f"{statistics.median(results['asyncdock']) / statistics.median(results['docker-proxy']):.2f}")


if __name__ == "__main__":
    asyncio.run(main())
