"""What bpf/inference/inference.h defines (events, keys, constants), with the names user space gives its codes."""
from __future__ import annotations

from ebpftool.core.cstruct import load_header
from ebpftool.tracers.inference import parsers

STRUCTS, H = load_header("inference/inference.h")
METHOD_NAMES = {H[f"METHOD_{m}"]: m for m in parsers.METHODS}
OPERATIONS = {H["OP_CHAT"]: "chat", H["OP_TEXT_COMPLETION"]: "text_completion",
              H["OP_EMBEDDINGS"]: "embeddings", H["OP_STREAM"]: "generate_content"}
NO_RESPONSE = "no_response"  # error.type of a request closed before any response
