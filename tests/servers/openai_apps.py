"""OpenAI-compatible apps on real servers from PyPI, for tests/test_real_servers.py.

One app per framework, each a module-level object, all answering the same API the way real inference
servers do (vLLM, llama-cpp-python, the OpenAI API):

- POST /v1/chat/completions and POST /v1/completions; GET /v1/models (200, for readiness); 404 for other
  paths; 400 for a body that is not JSON.
- Streamed (`"stream": true`): Server-Sent Events. Chat begins with a role-only chunk
  (`"delta":{"role":"assistant","content":""}`), completions with an empty-text chunk (except on aiohttp,
  whose completions begin with a token, written together with the response head); then one chunk per
  token (`max_tokens` of them, the first after `ttft_ms`, the next `tpot_ms` apart, jittered by the
  token's index), then a finish-only chunk (empty delta, `finish_reason`), a usage-only chunk
  (`"choices":[]`) when `stream_options.include_usage` is true (every chunk then carries `"usage":null`,
  as OpenAI's do), and `data: [DONE]`; these last ones right after the last token, or `end_gap_ms` apart
  (so that a proxy in front writes each in a frame of its own).
- Not streamed: one JSON object, `model` near its start and `usage` at its end (longer than 1,500 bytes
  when `max_tokens` is large).

The frameworks: FastAPI on uvicorn with sse-starlette's EventSourceResponse (`fastapi`), aiohttp's
web.Application with web.StreamResponse and web.json_response (`aiohttp`), and Ray Serve's HTTP proxy in
front of a FastAPI ingress deployment streaming with StreamingResponse (`ray`).

Each writes a JSON line per answer to the log named by $OPENAI_APPS_LOG (the server's own times, in ns
of CLOCK_REALTIME: when the handler began, when each token chunk was handed to the framework, the
client's port): a second opinion on the wire's truth.

`running(kind, port)` runs one as its own process (`python -m tests.servers.openai_apps KIND PORT`) and
yields the pid of the process that listens on the port once an answer to GET /v1/models says it is ready.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations (Request) at
# run time, and these are local names.
import asyncio
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

KINDS = ("fastapi", "aiohttp", "ray")
ROOT = Path(__file__).resolve().parents[2]
MODEL = "real-test-model"


# -- the answers, whatever the framework ----------------------------------------------------------------

class Plan:
    """What one request asks for, and the chunks that answer it."""

    def __init__(self, path: str, body: dict) -> None:
        self.chat = path.endswith("/chat/completions")
        self.model = body.get("model") or MODEL
        self.n = 8 if body.get("max_tokens") is None else int(body["max_tokens"])  # 0: a stream of no token
        self.stream = bool(body.get("stream"))
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.ttft = float(body.get("ttft_ms", 30)) / 1000
        self.tpot = float(body.get("tpot_ms", 10)) / 1000
        self.end_gap = float(body.get("end_gap_ms", 0)) / 1000
        self.prompt_tokens = len(json.dumps(body.get("messages") or body.get("prompt") or "").split())
        self.created = int(time.time())
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{time.monotonic_ns():x}"
        self.object = "chat.completion" if self.chat else "text_completion"

    async def end_pause(self) -> None:
        """The wait before each chunk after the last token (none by default)."""
        if self.end_gap:
            await asyncio.sleep(self.end_gap)

    def token(self, i: int) -> str:
        return f"tok{i} "

    def gap(self, i: int) -> float:
        """Seconds before token i: the time to first token, then tpot jittered by ±50%."""
        return self.ttft if i == 0 else self.tpot * (0.5 + ((i * 7) % 11) / 10)

    def _chunk(self, choice: dict | None, usage: dict | None = None, no_usage_field: bool = False) -> str:
        doc = {"id": self.id, "object": f"{self.object}.chunk" if self.chat else self.object,
               "created": self.created, "model": self.model, "choices": [choice] if choice else []}
        if self.include_usage and not no_usage_field:
            doc["usage"] = usage
        return json.dumps(doc, separators=(",", ":"))

    def first(self) -> str:
        """The role-only (chat) or empty-text (completions) chunk."""
        if self.chat:
            return self._chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                "finish_reason": None})
        return self._chunk({"index": 0, "text": "", "logprobs": None, "finish_reason": None})

    def content(self, i: int) -> str:
        if self.chat:
            return self._chunk({"index": 0, "delta": {"content": self.token(i)}, "logprobs": None,
                                "finish_reason": None})
        return self._chunk({"index": 0, "text": self.token(i), "logprobs": None, "finish_reason": None})

    def finish(self) -> str:
        if self.chat:
            return self._chunk({"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"})
        return self._chunk({"index": 0, "text": "", "logprobs": None, "finish_reason": "length"})

    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.n,
                "total_tokens": self.prompt_tokens + self.n}

    def usage_chunk(self) -> str:
        return self._chunk(None, self.usage())

    def whole(self) -> dict:
        """The answer not streamed: model first, usage last."""
        text = "".join(self.token(i) for i in range(self.n))
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                   "finish_reason": "length"} if self.chat else
                  {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"})
        return {"model": self.model, "id": self.id, "object": self.object, "created": self.created,
                "choices": [choice], "usage": self.usage()}


def log(entry: dict) -> None:
    path = os.environ.get("OPENAI_APPS_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), **entry}) + "\n")


def _json_or_none(raw: bytes):
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


BAD_JSON = {"error": {"message": "the body is not JSON", "type": "invalid_request_error", "code": 400}}
MODELS = {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "tests"}]}


# -- FastAPI (uvicorn, sse-starlette; also Ray Serve's ingress) ---------------------------------------------

def make_fastapi(sse_starlette: bool = True):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()

    async def answer(request: Request, kind: str):
        t_request = time.time_ns()
        plan_body = _json_or_none(await request.body())
        if plan_body is None:
            return JSONResponse(BAD_JSON, status_code=400)
        plan = Plan(request.url.path, plan_body)
        entry = {"server": kind, "path": request.url.path, "client_port": request.client.port if request.client else 0,
                 "stream": plan.stream, "n": plan.n, "t_request": t_request, "t_tokens": []}
        if not plan.stream:
            await asyncio.sleep(plan.ttft)
            entry["t_end"] = time.time_ns()
            log(entry)
            return JSONResponse(plan.whole())

        async def chunks():
            yield plan.first()
            for i in range(plan.n):
                await asyncio.sleep(plan.gap(i))
                entry["t_tokens"].append(time.time_ns())
                yield plan.content(i)
            await plan.end_pause()
            yield plan.finish()
            if plan.include_usage:
                await plan.end_pause()
                yield plan.usage_chunk()
            await plan.end_pause()
            yield "[DONE]"
            entry["t_end"] = time.time_ns()
            log(entry)

        if sse_starlette:
            from sse_starlette import EventSourceResponse
            return EventSourceResponse(({"data": c} async for c in chunks()))

        async def framed():
            async for c in chunks():
                yield f"data: {c}\n\n"
        return StreamingResponse(framed(), media_type="text/event-stream")

    return app, answer


def _fastapi_app():
    from fastapi import Request

    app, answer = make_fastapi(sse_starlette=True)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await answer(request, "fastapi")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await answer(request, "fastapi")

    @app.get("/v1/models")
    async def models():
        return MODELS

    return app


# -- aiohttp -----------------------------------------------------------------------------------------------

def _aiohttp_app():
    from aiohttp import web

    class HeadWithFirstWrite(web.StreamResponse):
        """A StreamResponse whose head waits for the first write and goes out with it in one send, as
        aiohttp's own web.Response does (aiohttp >= 3.10 sends a StreamResponse's head at prepare())."""
        _send_headers_immediately = False

    async def answer(request: web.Request) -> web.StreamResponse:
        t_request = time.time_ns()
        body = _json_or_none(await request.read())
        if body is None:
            return web.json_response(BAD_JSON, status=400)
        plan = Plan(request.path, body)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        entry = {"server": "aiohttp", "path": request.path, "client_port": peer[1] if peer else 0,
                 "stream": plan.stream, "n": plan.n, "t_request": t_request, "t_tokens": []}
        if not plan.stream:
            await asyncio.sleep(plan.ttft)
            entry["t_end"] = time.time_ns()
            log(entry)
            return web.json_response(plan.whole())  # head and body in one write
        resp = HeadWithFirstWrite(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        event = lambda c: f"data: {c}\n\n".encode()  # noqa: E731
        if plan.chat:
            await resp.prepare(request)             # the head waits ...
            await resp.write(event(plan.first()))  # ... and goes out with the role-only chunk
            start = 0
        else:
            # completions begin with a token, as OpenAI's do: the head goes out with the first token
            await asyncio.sleep(plan.gap(0))
            await resp.prepare(request)
            entry["t_tokens"].append(time.time_ns())
            await resp.write(event(plan.content(0)))
            start = 1
        for i in range(start, plan.n):
            await asyncio.sleep(plan.gap(i))
            entry["t_tokens"].append(time.time_ns())
            await resp.write(event(plan.content(i)))
        await plan.end_pause()
        await resp.write(event(plan.finish()))
        if plan.include_usage:
            await plan.end_pause()
            await resp.write(event(plan.usage_chunk()))
        await plan.end_pause()
        await resp.write(event("[DONE]"))
        await resp.write_eof()
        entry["t_end"] = time.time_ns()
        log(entry)
        return resp

    async def models(_request):
        return web.json_response(MODELS)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    app.router.add_post("/v1/completions", answer)
    app.router.add_get("/v1/models", models)
    return app


# -- Ray Serve ---------------------------------------------------------------------------------------------

def _ray_deployment():
    from fastapi import Request
    from ray import serve

    app, answer = make_fastapi(sse_starlette=False)

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    @serve.ingress(app)
    class OpenAICompatible:
        @app.post("/v1/chat/completions")
        async def chat(self, request: Request):
            return await answer(request, "ray")

        @app.post("/v1/completions")
        async def completions(self, request: Request):
            return await answer(request, "ray")

        @app.get("/v1/models")
        async def models(self):
            return MODELS

    return OpenAICompatible


def serve_ray(port: int) -> None:
    import ray
    from ray import serve

    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's sockets live under it
    env = {k: v for k, v in os.environ.items() if k == "OPENAI_APPS_LOG"}
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, _temp_dir=temp,
             runtime_env={"env_vars": env, "working_dir": None} if env else None,
             configure_logging=False)
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    serve.run(_ray_deployment().bind(), route_prefix="/", blocking=False)
    print("ready", flush=True)
    stop = asyncio.Event()

    def bye(*_a):
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        os._exit(0)
    signal.signal(signal.SIGTERM, bye)
    signal.signal(signal.SIGINT, bye)
    while not stop.is_set():
        signal.pause()


# -- running one -------------------------------------------------------------------------------------------

def __getattr__(name: str):
    """The module-level apps, made on first use (so that importing this module needs none of them)."""
    if name == "fastapi_app":
        return _fastapi_app()
    if name == "aiohttp_app":
        return _aiohttp_app()
    if name == "ray_deployment":
        return _ray_deployment()
    raise AttributeError(name)


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    # $OPENAI_APPS_TLS = "CERT:KEY": served over TLS by the framework's own TLS (asyncio's or uvloop's, on
    # OpenSSL memory BIOs)
    tls = os.environ.get("OPENAI_APPS_TLS", "").split(":") if os.environ.get("OPENAI_APPS_TLS") else None
    if kind == "fastapi":
        import uvicorn
        extra = {"ssl_certfile": tls[0], "ssl_keyfile": tls[1]} if tls else {}
        uvicorn.run(_fastapi_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False, **extra)
    elif kind == "aiohttp":
        import ssl
        from aiohttp import web
        context = None
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls[0], tls[1])
        web.run_app(_aiohttp_app(), host="127.0.0.1", port=port, print=None, access_log=None, ssl_context=context)
    elif kind == "ray":
        serve_ray(port)
    else:
        raise SystemExit(f"unknown server kind {kind!r} (one of {', '.join(KINDS)})")


def listener_pid(port: int) -> int | None:
    """The pid of the process holding the socket that listens on 127.0.0.1:port (IPv4 or IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{f[9]}]")
    if not inodes:
        return None
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            for fd in (d / "fd").iterdir():
                try:
                    if os.readlink(fd) in inodes:
                        return int(d.name)
                except OSError:
                    continue
        except OSError:
            continue
    return None


def ready(port: int, tls: bool = False) -> bool:
    try:
        if tls:
            import ssl
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=ssl._create_unverified_context())
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/v1/models")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False


def _ours(port: int, session: int) -> bool:
    """Whether the process listening on port is one the server started (its session): not another
    program that took the port first."""
    pid = listener_pid(port)
    try:
        return pid is not None and os.getsid(pid) == session
    except OSError:
        return False


@contextmanager
def running(kind: str, port: int, log_path: str | None = None, timeout: float | None = None,
            tls: tuple[str, str] | None = None):
    """The app of this kind served on 127.0.0.1:port by its own process, until the block ends; yields
    the pid of the process that listens (Ray Serve: its proxy actor). tls: (certificate, key) files to
    serve HTTPS with (fastapi, aiohttp)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    if tls:
        env["OPENAI_APPS_TLS"] = ":".join(tls)
    if log_path:
        env["OPENAI_APPS_LOG"] = log_path
    timeout = timeout or (120 if kind == "ray" else 30)
    err = tempfile.TemporaryFile()  # not a pipe: Ray says much, and a full pipe would stop it
    proc = subprocess.Popen([sys.executable, "-m", "tests.servers.openai_apps", kind, str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not (ready(port, tls is not None) and _ours(port, proc.pid)):
            if proc.poll() is not None:
                err.seek(0)
                raise RuntimeError(f"the {kind} server exited ({proc.returncode}): {err.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} server did not get ready on port {port} in {timeout:.0f} s")
            time.sleep(0.1)
        yield listener_pid(port)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # what the server started and left behind (Ray's processes)
        except (ProcessLookupError, PermissionError):
            pass
        err.close()


if __name__ == "__main__":
    main()
