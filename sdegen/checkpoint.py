"""The checkpoint file format: self-describing, checksummed, atomically written files of tensors + JSON.

A file is `torch.save` of a dict with only tensors, strings and numbers (so it loads with
`weights_only=True`): "format", "kind" (see `KINDS`), "config" (JSON: the resolved TrainConfig, or the
metadata of a classifier), "meta" (the JSON skeleton of the nested state with placeholders for tensors),
"tensors" (flat name → tensor) and "sha256", a checksum over kind, config, meta and every tensor's name,
dtype, shape and bytes. Loading recomputes the checksum, so a flipped byte is an error, not silently wrong
weights (torch.load alone accepts flipped data bytes). Files are written with `sdegen._io.atomic_torch_save`
(temporary file, fsync, os.replace), so a killed run never leaves a torn file.

A training checkpoint holds model, EMA weights, optimizer, step, generator states and the data order
(see `sdegen.training`); a model file (`export_ema`) keeps only the EMA weights and data description; a
classifier file holds the LeNet of `sdegen.metrics`. `sdegen.model.load_model` turns a training or model
file into a `Model` ready for sampling.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from sdegen._io import atomic_torch_save

FORMAT = "sdegen-checkpoint-v1"
KINDS = ("training", "model", "classifier")
# Names that moved to `sdegen.model` (the user-facing model); still importable from here.
_MOVED = ("MODEL_DIR", "Model", "load_model", "resolve_model_path", "shipped_models")


class CheckpointError(ValueError):
    """A checkpoint that is corrupt, foreign or does not match its own config."""


# -- nested state ↔ (JSON skeleton, flat tensors) ------------------------------------------------------------
def _flatten(obj, tensors: dict, prefix: str):
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):  # keys keep their type (optimizer state is keyed by int)
        for k in obj:
            if not isinstance(k, str | int) or isinstance(k, bool):
                raise TypeError(f"checkpoint state key {k!r} at {prefix!r} is not a str or int")
        return {"__dict__": [[k, _flatten(v, tensors, f"{prefix}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, list | tuple):
        return {"__list__": [_flatten(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} in a checkpoint")


def _unflatten(node, tensors: dict):
    if isinstance(node, dict):
        if "__tensor__" in node:
            return tensors[node["__tensor__"]]
        if "__dict__" in node:
            return {k: _unflatten(v, tensors) for k, v in node["__dict__"]}
        return [_unflatten(v, tensors) for v in node["__list__"]]
    return node


def _checksum(kind: str, config: str, meta: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for part in (FORMAT, kind, config, meta):
        h.update(part.encode())
        h.update(b"\0")
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, state: dict, config_json: str, kind: str = "training") -> str:
    """Write a nested `state` (dicts, lists, tensors, numbers, strings) and its config; returns the sha256.

    Args:
        path: the file, replaced atomically.
        state: the nested state.
        config_json: a JSON string (the resolved config, or a classifier's metadata).
        kind: one of `KINDS`.

    Raises:
        OSError: the file cannot be written, naming the path and the cause (e.g. no space left on device).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    tensors: dict[str, torch.Tensor] = {}
    meta = json.dumps(_flatten(state, tensors, "state"))
    digest = _checksum(kind, config_json, meta, tensors)
    payload = {
        "format": FORMAT,
        "kind": kind,
        "config": config_json,
        "meta": meta,
        "tensors": tensors,
        "sha256": digest,
    }
    atomic_torch_save(payload, path)
    return digest


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A verified checkpoint: `state` is the nested state as saved (tensors on CPU)."""

    path: Path
    kind: str
    config_json: str
    state: dict
    sha256: str


def read_checkpoint(path: str | os.PathLike, kind: str | tuple[str, ...] | None = None) -> Checkpoint:
    """Load and verify a checkpoint (weights_only=True; checksum recomputed).

    Args:
        path: the file.
        kind: the kind(s) the caller accepts (None: any of `KINDS`).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: naming the file, if it is not an sdegen checkpoint, its checksum does not match, or
            it is of another kind than asked for.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not an sdegen checkpoint (not a torch zip file; damaged or foreign)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's advice to retry with weights_only=False is not for us
        raise CheckpointError(
            f"{path}: not an sdegen checkpoint (it holds Python objects other than tensors, numbers and strings, "
            "which sdegen never unpickles)"
        ) from e
    except Exception as e:  # torch raises many types for damaged zips and pickles
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot be read as an sdegen checkpoint, the file is damaged ({first})") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an sdegen checkpoint (format {raw.get('format') if isinstance(raw, dict) else None!r})"
        )
    try:
        digest = _checksum(raw["kind"], raw["config"], raw["meta"], raw["tensors"])
        ok = digest == raw["sha256"]
        state = _unflatten(json.loads(raw["meta"]), raw["tensors"]) if ok else None
    except Exception as e:
        raise CheckpointError(f"{path}: damaged checkpoint structure ({e})") from e
    if not ok:
        raise CheckpointError(
            f"{path}: checksum mismatch, the file is corrupt "
            f"(stored sha256 {str(raw['sha256'])[:16]}…, computed {digest[:16]}…)"
        )
    wanted = (kind,) if isinstance(kind, str) else kind
    if wanted is not None and raw["kind"] not in wanted:
        what = {"training": "a training checkpoint", "model": "a model file (EMA weights only)",
                "classifier": "a classifier (LeNet) file"}.get(raw["kind"], f"a {raw['kind']!r} file")  # fmt: skip
        raise CheckpointError(f"{path}: is {what}, expected kind {' or '.join(wanted)}")
    return Checkpoint(path, raw["kind"], raw["config"], state, raw["sha256"])


def _head(path: str | os.PathLike) -> dict | None:
    """The file's dict without its tensors (read without running code); None for anything not an sdegen checkpoint."""
    try:
        with zipfile.ZipFile(path) as z:
            pickles = [n for n in z.namelist() if n.endswith("/data.pkl")]
            head = _Skeleton(io.BytesIO(z.read(pickles[0]))).load() if pickles else None
    except Exception:  # any damage or foreign content: not a readable sdegen checkpoint
        return None
    if not isinstance(head, dict) or head.get("format") != FORMAT or head.get("kind") not in KINDS:
        return None
    return head


def checkpoint_kind(path: str | os.PathLike) -> str | None:
    """The kind of an sdegen checkpoint file, read without loading tensors or running code; None for other files."""
    head = _head(path)
    return None if head is None else head["kind"]


def checkpoint_config(path: str | os.PathLike) -> dict | None:
    """The stored config (parsed JSON) of an sdegen checkpoint, read without loading tensors; None if unreadable."""
    head = _head(path)
    try:
        return json.loads(head["config"]) if head is not None else None
    except (TypeError, json.JSONDecodeError):
        return None


class _Skeleton(pickle.Unpickler):
    """Unpickles torch's data.pkl with every class and tensor storage replaced by None (no code runs)."""

    def find_class(self, module, name):
        return lambda *args, **kwargs: None

    def persistent_load(self, pid):
        return None


def export_ema(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike) -> str:
    """Strip a training checkpoint to a small model file (EMA weights + data description); returns its sha256."""
    ck = read_checkpoint(checkpoint_path)
    if ck.kind != "training":
        raise CheckpointError(f"{ck.path}: is a {ck.kind} file, not a training checkpoint")
    if not all(torch.isfinite(t).all() for t in _tensors(ck.state["ema"])):
        raise CheckpointError(f"{ck.path}: its EMA weights hold NaN or inf; no model file is written")
    keep = ("ema", "data_shape", "data_range", "num_classes", "step")
    return save_checkpoint(out_path, {k: ck.state[k] for k in keep}, ck.config_json, kind="model")


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors(v)


def __getattr__(name: str):
    if name in _MOVED:
        import sdegen.model

        return getattr(sdegen.model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
