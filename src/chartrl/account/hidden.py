"""Serialise a policy's recurrent hidden state to bytes + shape/dtype, and back.

A hidden state is None (stateless policy), one tensor (GRU: layers x batch x hidden) or a tuple of
tensors (LSTM: h, c). The bytes are the raw little-endian contents, so a restart resumes exactly.
"""

from __future__ import annotations

import json
from typing import Any


def pack_hidden(hidden: Any) -> tuple[str, bytes]:
    """(meta JSON, raw bytes) of ``hidden``."""
    import torch

    if hidden is None:
        return json.dumps({"kind": "none", "tensors": []}), b""
    if isinstance(hidden, torch.Tensor):
        kind, tensors = "tensor", [hidden]
    elif isinstance(hidden, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in hidden):
        kind, tensors = "tuple", list(hidden)
    else:
        raise TypeError(
            f"hidden state must be None, a tensor or a tuple of tensors, not {type(hidden).__name__}"
        )
    meta, chunks = [], []
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        # reshape(-1) first: a 0-d tensor cannot be viewed as bytes directly.
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        meta.append(
            {
                "shape": list(t.shape),
                "dtype": str(t.dtype).removeprefix("torch."),
                "nbytes": len(raw),
            }
        )
        chunks.append(raw)
    return json.dumps({"kind": kind, "tensors": meta}), b"".join(chunks)


def unpack_hidden(meta_json: str, data: bytes, device: Any = "cpu") -> Any:
    """The hidden state :func:`pack_hidden` stored, on ``device``."""
    import torch

    meta = json.loads(meta_json)
    if meta["kind"] == "none":
        return None
    out, offset = [], 0
    for m in meta["tensors"]:
        dtype = getattr(torch, m["dtype"])
        raw = bytearray(data[offset : offset + m["nbytes"]])
        offset += m["nbytes"]
        flat = (
            torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        )
        out.append(flat.view(dtype).reshape(m["shape"]).to(device))
    return out[0] if meta["kind"] == "tensor" else tuple(out)
