"""The price table: USD per million input and output tokens by provider and model pattern, and the
estimated cost of a call. The default table ships beside this module (prices.yaml, DEFAULT_PRICES);
users edit a copy of it.

A bad file is refused whole with one sentence (EbpftoolError) that names the file and the entry: a
cost computed from a half-read table would be wrong without anyone knowing.
"""
from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from ebpftool.config import load_yaml, read_bounded
from ebpftool.errors import EbpftoolError

DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")
MAX_ENTRIES = 10_000
_TAKEN = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")
_KEYS = {"taken", "currency", "prices"}
_ENTRY_KEYS = {"provider", "model", "input", "output", "cached_input"}
WHAT = "price table"


@dataclass(frozen=True)
class Price:
    provider: str          # a pattern of gen_ai.provider.name
    model: str             # a pattern of the model's name (lower case)
    input: float           # USD per million input tokens
    output: float          # USD per million output tokens
    cached_input: float | None = None   # USD per million input tokens read from the prompt cache


@dataclass(frozen=True)
class PriceTable:
    taken: str
    prices: tuple[Price, ...]
    path: str = ""

    def price(self, provider: str | None, model: str | None) -> Price | None:
        """The first entry matching the call, or None (unpriced)."""
        if not provider or not model:
            return None
        provider, model = provider.lower(), model.lower()
        for p in self.prices:
            if fnmatchcase(provider, p.provider) and fnmatchcase(model, p.model):
                return p
        return None

    def cost(self, provider: str | None, model: str | None, input_tokens: int | None,
             output_tokens: int | None, cache_read_tokens: int | None = None) -> float | None:
        """USD a call cost, or None when no entry prices its model. Input tokens read from the prompt cache
        (part of input_tokens) cost `cached_input` where the entry has one."""
        p = self.price(provider, model)
        if p is None:
            return None
        inp, out = max(0, input_tokens or 0), max(0, output_tokens or 0)
        cached = min(inp, max(0, cache_read_tokens or 0)) if p.cached_input is not None else 0
        return ((inp - cached) * p.input + cached * (p.cached_input or 0.0) + out * p.output) / 1e6


def load_price_table(path: str | Path = DEFAULT_PRICES) -> PriceTable:
    """Read and check a price table file; every problem is one EbpftoolError sentence."""
    path = str(path)
    data = load_yaml(read_bounded(path, WHAT), path, WHAT)
    return parse_price_table(data, path)


def parse_price_table(data: object, path: str = "<price table>") -> PriceTable:
    where = f"{WHAT} {path}"
    if not isinstance(data, dict):
        raise EbpftoolError(f"{where} must be a mapping with the keys taken, currency and prices")
    unknown = sorted(str(k) for k in set(data) - _KEYS)
    if unknown:
        raise EbpftoolError(f"{where} has unknown keys: {', '.join(unknown)} (known: currency, prices, taken)")
    taken = data.get("taken")
    if isinstance(taken, datetime.date):
        taken = taken.isoformat()
    if not isinstance(taken, str) or not _TAKEN.match(taken):
        raise EbpftoolError(f"{where} must say when its prices were taken, as `taken: YYYY-MM-DD` (or YYYY-MM)")
    if data.get("currency", "USD") != "USD":
        raise EbpftoolError(f"{where} has currency {data.get('currency')!r}, but ebpftool only knows USD")
    entries = data.get("prices")
    if not isinstance(entries, list) or not entries:
        raise EbpftoolError(f"{where} must have a non-empty list `prices`")
    if len(entries) > MAX_ENTRIES:
        raise EbpftoolError(f"{where} has more than {MAX_ENTRIES} prices")
    return PriceTable(taken, tuple(_entry(e, f"{where}, entry {i}") for i, e in enumerate(entries, 1)), path)


def _entry(e: object, where: str) -> Price:
    if not isinstance(e, dict):
        raise EbpftoolError(f"{where} must be a mapping with provider, model, input and output")
    unknown = sorted(str(k) for k in set(e) - _ENTRY_KEYS)
    if unknown:
        raise EbpftoolError(f"{where} has unknown keys: {', '.join(unknown)}")
    names = {}
    for key in ("provider", "model"):
        value = e.get(key)
        if not isinstance(value, str) or not value.strip() or len(value) > 256:
            raise EbpftoolError(f"{where}: `{key}` must be a name or pattern (text of 1 to 256 characters)")
        names[key] = value.strip().lower()
    numbers = {}
    for key in ("input", "output", "cached_input"):
        value = e.get(key)
        if value is None and key == "cached_input":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise EbpftoolError(f"{where}: `{key}` must be a number of USD per million tokens, 0 or more, "
                                f"not {value!r}")
        numbers[key] = float(value)
    return Price(names["provider"], names["model"], numbers["input"], numbers["output"], numbers.get("cached_input"))
