"""Agents: the LLM API calls (and MCP tool calls) a node's processes make, seen from the client side.

tracer: the tracer (bpf/agents/agents.bpf.c hands it the plaintext of calls; docs/agents.md, "How the kernel
side works"), with events (the kernel's events put back together), measure (a finished call into metrics
and a span's attributes), plans (its attach plan) and figures (the live view and exit summary). The parsers
are pure Python, fed bytes:

calls: which call a request is (provider, operation, request model, stream), from its first bytes;
http1: an HTTP/1.x answer's status and body, unframed; answers: what the answer says (model, tokens,
chunks and their times, finish reason, error type), streamed or not, fed in pieces; connection: the
requests and answers of one kept-alive client connection, paired in order; prices: the price
table (prices.yaml) and the cost of a call; bounds: the top-N bound on models and hosts;
jsonscan: scalars at chosen places in JSON that may be cut anywhere.
"""
from ebpftool.tracers.agents.answers import Answer, AnswerReader
from ebpftool.tracers.agents.calls import Call, recognise

__all__ = ["Answer", "AnswerReader", "Call", "recognise"]
