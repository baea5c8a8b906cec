"""Throughput of the LLM judge's client against a real OpenAI-compatible server, by requests in flight; run by hand.

Starts llama-cpp-python's server with the embedded SmolLM2-135M GGUF on loopback
(wsae_utils.autointerp.llm_server), or uses `--base-url` / `--model` of a server you run, and sends detection
prompts shaped like the protocol's (5 excerpts of 24 words, the labels schema, logprobs) through `OpenAIChat` with
1, 4 and 16 requests in flight, every request distinct and uncached. Prints (and with --out writes) requests/s,
latencies and the server's CPU seconds per request per level, then the request count of Table 1 at the paper's
size (config/paper.yaml) and what it would take at each measured rate.

    .venv/bin/python benchmarks/llm_concurrency.py
    .venv/bin/python benchmarks/llm_concurrency.py --levels 1 4 16 --out benchmarks/RESULTS_llm_concurrency.md

The load average and the CPU seconds other processes used during the run are printed: a contended machine shows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from wsae_utils.autointerp import llm_judge as J
from wsae_utils.autointerp import llm_server as S
from wsae_utils.autointerp.llm_client import OpenAIChat
from wsae_utils.hardware import machine_summary
from wsae_utils.run.config import resolve_config

WORDS = ("the a of and to in was she he it her his had not be with for as said at Elliot Anne Wentworth Musgrove "
         "Russell Mary house letter walk morning sea garden party evening sister friend 1 2 3 , . \"").split()


def _cpu_busy() -> float:
    with open("/proc/stat") as f:
        parts = [float(x) for x in f.readline().split()[1:]]
    return (sum(parts) - parts[3] - parts[4]) / os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) a process has used so far; 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")


def prompts(n: int, seed: int, per_prompt: int = 5, words: int = 24) -> list[list[dict[str, str]]]:
    """n distinct detection prompts of `per_prompt` excerpts (about 32 tokens each), like the protocol's."""
    rng = np.random.default_rng(seed)
    return [J.detection_messages(f"feature {seed}-{i}: names of people",
                                 [" ".join(rng.choice(WORDS, words)) for _ in range(per_prompt)]) for i in range(n)]


def run_level(client: OpenAIChat, in_flight: int, n: int, seed: int, server_pid: int | None = None) -> dict[str, float]:
    """Send n distinct prompts with `in_flight` concurrent requests; wall time, rate, latencies, and the server's CPU
    seconds per request (steadier than wall time on a shared machine)."""
    from concurrent.futures import ThreadPoolExecutor

    convs = prompts(n, seed)
    schema = J.labels_schema(5)

    def one(c: list[dict[str, str]]) -> tuple[float, bool]:
        t0 = time.perf_counter()
        reply = client.complete(c, schema)
        return time.perf_counter() - t0, J.parse_labels(reply["content"], 5) is not None

    t0, busy0, own0, srv0 = time.perf_counter(), _cpu_busy(), time.process_time(), _proc_cpu(server_pid)
    with ThreadPoolExecutor(in_flight) as pool:
        got = list(pool.map(one, convs))
    wall = time.perf_counter() - t0
    lat = sorted(x for x, _ in got)
    return {"in_flight": in_flight, "requests": n, "wall_s": wall, "req_per_s": n / wall,
            "latency_mean_s": statistics.mean(lat), "latency_p50_s": lat[len(lat) // 2],
            "latency_p90_s": lat[min(len(lat) - 1, int(0.9 * len(lat)))], "read": sum(ok for _, ok in got),
            "machine_busy_cpu_s": _cpu_busy() - busy0, "client_cpu_s": time.process_time() - own0,
            "server_cpu_s_per_request": (_proc_cpu(server_pid) - srv0) / n if server_pid else float("nan")}


def paper_requests() -> tuple[int, str]:
    """Table 1's requests at the paper's size (config/paper.yaml), before retries, and how they are counted."""
    import yaml

    raw = yaml.safe_load(Path("config/paper.yaml").read_text())
    cfg = resolve_config({k: raw[k] for k in ("lm", "autointerp")})  # not vision: its ImageNet folder may be absent
    ai, lm = cfg["autointerp"], cfg["lm"]
    layer = ai["layer"]
    n_saes = len(lm["alphas"]) + len([e for e in layer["extra_saes"]
                                      if not e.startswith(lm["train"]["downstream_variant"] + "/")]) + 1
    n_test = ai["checks"]["n_test_act"] + ai["checks"]["n_test_non"]
    per_layer = J.expected_requests(n_saes, layer["n_llm_latents"], n_test, layer["per_prompt"])
    how = (f"{len(lm['layers'])} layers × {n_saes} SAEs (α ∈ {lm['alphas']} and the random-weight floor) × "
           f"{layer['n_llm_latents']} latents × (1 explanation + 2 kinds × 2 (real, shuffled) × ⌈{n_test} / "
           f"{layer['per_prompt']}⌉ prompts)")
    return len(lm["layers"]) * per_layer, how


def main() -> None:
    """Measure, print, optionally write markdown."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--per-level", type=int, default=0, help="requests per level (default: max(8, 2 × in flight))")
    ap.add_argument("--base-url", default="", help="use this server instead of starting llama.cpp")
    ap.add_argument("--model", default="")
    ap.add_argument("--n-threads", type=int, default=0, help="threads of the started server (0: llama.cpp default)")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    load0 = os.getloadavg()
    server = None
    if not a.base_url:
        server = S.start_server(n_threads=a.n_threads, log_path=Path("results/bench/llm_concurrency/server.log"))
        base_url, model, what = server.base_url, server.model_id, (
            f"llama-cpp-python {server.info()['llama_cpp_python']} server, {S.EMBEDDED_GGUF} "
            f"(up in {server.startup_s:.1f} s), n_threads {a.n_threads or 'default'}")
    else:
        base_url, model, what = a.base_url, a.model, f"server at {a.base_url}, model {a.model}"
    try:
        rows = []
        for lv in a.levels:
            client = OpenAIChat(base_url, model, concurrency=lv, timeout_s=600, cache_dir=None)
            client.complete(prompts(1, 999)[0], J.labels_schema(5))  # negotiation and warm-up, not timed
            rows.append(run_level(client, lv, a.per_level or max(8, 2 * lv), seed=lv,
                                  server_pid=server.proc.pid if server is not None else None))
            print(rows[-1], file=sys.stderr, flush=True)
        fmt = client.settings()["format_used"]
    finally:
        if server is not None:
            server.stop()
    n_paper, how = paper_requests()
    lines = [f"# LLM judge client: requests/s by requests in flight ({dt.date.today()})", "",
             f"`benchmarks/llm_concurrency.py {' '.join(sys.argv[1:])}` on {machine_summary()}.", "",
             f"Server: {what}; answer format {fmt}, logprobs asked. Prompts: detection, 5 excerpts of 24 words "
             "(~300 prompt tokens), labels schema, distinct and uncached. Load average before the run "
             f"{load0[0]:.2f}, after {os.getloadavg()[0]:.2f}.", "",
             "| in flight | requests | wall s | requests/s | latency mean s | p50 s | p90 s | answers read | "
             "server CPU s / request | machine busy CPU s |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['in_flight']} | {r['requests']} | {r['wall_s']:.1f} | {r['req_per_s']:.2f} | "
              f"{r['latency_mean_s']:.2f} | {r['latency_p50_s']:.2f} | {r['latency_p90_s']:.2f} | "
              f"{r['read']}/{r['requests']} | {r['server_cpu_s_per_request']:.2f} | {r['machine_busy_cpu_s']:.0f} |"
              for r in rows]
    lines += ["", f"Table 1 at the paper's size: **{n_paper:,} requests** before retries ({how}).", ""]
    lines += [f"- at {r['req_per_s']:.2f} requests/s ({r['in_flight']} in flight, this server): "
              f"{n_paper / r['req_per_s'] / 3600:,.0f} hours" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
