"""Checkpoints: self-describing, checksummed, atomically written files of tensors + a JSON config.

A file is `torch.save` of a dict with only tensors, strings and numbers (so it loads with
`weights_only=True`): "format", "kind" ("training" or "model"), "config" (the resolved TrainConfig as
JSON), "meta" (the JSON skeleton of the nested state with placeholders for tensors), "tensors" (flat
name → tensor) and "sha256", a checksum over config, meta and every tensor's name, dtype, shape and
bytes. Loading recomputes the checksum, so a flipped byte is an error, not silently wrong weights
(torch.load alone accepts flipped data bytes). Files are written to a temporary file in the same
directory, fsync'ed and moved into place with os.replace, so a killed run never leaves a torn file.

A training checkpoint holds model, EMA weights, optimizer, step, generator states and the data order
(see `sdegen.training`); a model file (`export_ema`) keeps only the EMA weights and data description.
`load_model` turns either into a `Model` ready for sampling; shipped models live in sdegen/models/.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

FORMAT = "sdegen-checkpoint-v1"
MODEL_DIR = Path(__file__).parent / "models"


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside `path`, fsync, then os.replace (and fsync the directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(path: str | os.PathLike, state: dict, config_json: str, kind: str = "training") -> str:
    """Write a nested `state` (dicts, lists, tensors, numbers, strings) and its config; returns the sha256."""
    if kind not in ("training", "model"):
        raise ValueError(f"kind must be 'training' or 'model', got {kind!r}")
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


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load and verify a checkpoint (weights_only=True; checksum recomputed).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: naming the file, if it is not an sdegen checkpoint or its checksum does not match.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged zips and pickles
        raise CheckpointError(f"{path}: cannot be read as an sdegen checkpoint, the file is damaged ({e})") from e
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
    return Checkpoint(path, raw["kind"], raw["config"], state, raw["sha256"])


# -- models -----------------------------------------------------------------------------------------------------
class Model:
    """A trained score model loaded from a checkpoint or model file (EMA weights, eval mode, no grad).

    Attributes:
        sde: the forward SDE it was trained with.
        net: the network with the EMA weights.
        score_model: the `sdegen.score.ScoreModel` (net + SDE + parametrisation).
        config: the resolved `TrainConfig`.
        data_shape: shape of one sample, e.g. (1, 28, 28).
        data_range: (low, high) of the training data, or None (unbounded toy data).
        num_classes: number of classes for conditional models, else None.
        sha256: checksum of the file's payload (use it as `score_source`).
        path: the file it came from; step: the training step of the weights.
    """

    def __init__(self, score_model, config, *, data_shape, data_range, num_classes, sha256, path, step):
        self.score_model = score_model
        self.sde = score_model.sde
        self.net = score_model.net
        self.config = config
        self.data_shape = tuple(data_shape)
        self.data_range = None if data_range is None else (float(data_range[0]), float(data_range[1]))
        self.num_classes = num_classes
        self.sha256 = sha256
        self.path = Path(path)
        self.step = step

    def score_fn(self, labels: int | torch.Tensor | None = None, guidance: float = 0.0):
        """score(x, t) for samplers; with labels, classifier-free guidance weight `guidance`."""
        return self.score_model.score_fn(labels, guidance)

    def denoise(self, x: torch.Tensor, t, labels: int | torch.Tensor | None = None) -> torch.Tensor:
        """E[x0 | x_t = x] (Tweedie), shaped like x."""
        return self.score_model.denoise(x, t, self.score_model._labels(labels, x))

    def __repr__(self) -> str:
        return (
            f"Model({self.path.name}, sde={self.sde!r}, net={type(self.net).__name__}, "
            f"data_shape={self.data_shape}, num_classes={self.num_classes}, step={self.step})"
        )


def _is_sdegen_file(path: Path) -> bool:
    """Cheap test for an sdegen checkpoint: its pickle (a small zip member, tensors are separate) names FORMAT."""
    try:
        with zipfile.ZipFile(path) as z:
            pickles = [n for n in z.namelist() if n.endswith("/data.pkl")]
            return bool(pickles) and FORMAT.encode() in z.read(pickles[0])
    except (OSError, zipfile.BadZipFile):
        return False


def shipped_models() -> list[str]:
    """Names of the score models shipped in sdegen/models/ (other files there, e.g. the LeNet, are skipped)."""
    return sorted(p.stem for p in MODEL_DIR.glob("*.pt") if _is_sdegen_file(p))


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint path as given, or sdegen/models/<name>.pt for a shipped name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if (MODEL_DIR / f"{name_or_path}.pt").is_file():
        return MODEL_DIR / f"{name_or_path}.pt"
    raise FileNotFoundError(
        f"{str(name_or_path)!r} is neither a checkpoint file nor a shipped model; shipped: {shipped_models()}"
    )


def load_model(name_or_path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Model:
    """Load a training checkpoint or model file (or a shipped model by name) as a `Model` with EMA weights.

    Raises:
        FileNotFoundError: unknown name (the message lists the shipped models).
        CheckpointError: corrupt file, invalid stored config, or weights that do not fit the config's
            network (strict state-dict loading), naming the file.
    """
    from sdegen.config import ConfigError, config_from_dict, make_score_model

    ck = read_checkpoint(resolve_model_path(name_or_path))
    try:
        config = config_from_dict(json.loads(ck.config_json))
    except (ConfigError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{ck.path}: stored config is invalid ({e})") from e
    st = ck.state
    try:
        with torch.random.fork_rng(devices=[]):  # the throw-away init must not advance the caller's global RNG
            model = make_score_model(config, tuple(st["data_shape"]), st["num_classes"])
        model.load_state_dict(st["ema"], strict=True)
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{ck.path}: weights do not match the network of its config ({e})") from e
    model.eval().requires_grad_(False).to(map_location)
    return Model(
        model,
        config,
        data_shape=st["data_shape"],
        data_range=st["data_range"],
        num_classes=st["num_classes"],
        sha256=ck.sha256,
        path=ck.path,
        step=st["step"],
    )


def export_ema(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike) -> str:
    """Strip a training checkpoint to a small model file (EMA weights + data description); returns its sha256."""
    ck = read_checkpoint(checkpoint_path)
    if ck.kind != "training":
        raise CheckpointError(f"{ck.path}: is a {ck.kind} file, not a training checkpoint")
    keep = ("ema", "data_shape", "data_range", "num_classes", "step")
    return save_checkpoint(out_path, {k: ck.state[k] for k in keep}, ck.config_json, kind="model")
