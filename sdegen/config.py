"""Training configuration: one frozen dataclass tree, loaded from JSON with typed `key=value` overrides.

`load_config("mnist")` reads a shipped recipe (sdegen/configs/mnist.json), `load_config(path)` any JSON
file; `overrides` like ["optim.lr=1e-4", "net.unet.channel_mult=1,2,2", "data.conditional=true"] are
parsed by the field's type. Unknown keys and bad values raise `ConfigError` naming the dotted key.
The config lives only here and in `sdegen.training`; the builders below (`make_sde`, `make_net`,
`make_score_model`) turn it into the explicit objects the library takes.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from sdegen import data as _data
from sdegen._checks import SEED_LIMIT, parse_key_value
from sdegen.losses import LOSSES
from sdegen.nets import NETS, build_net
from sdegen.score import Parametrisation, ScoreModel
from sdegen.sdes import SDES, AbstractSDE

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A bad configuration file, key or value."""


def _require(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {msg}")


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist"  # dataset name (sdegen.data.DATASETS); "mnist" = full MNIST if data/mnist has it
    root: str = ""  # directory of the MNIST IDX files; "" = data/mnist
    num_samples: int = 10000  # points drawn for a toy dataset (ignored for images)
    range: tuple[float, float] = (0.0, 1.0)  # images are rescaled to this range (stored in the model)
    val_size: int = 500  # examples held out (seeded split) for the validation loss
    conditional: bool = False  # train with class labels (and label dropout, for classifier-free guidance)
    dequantize: bool = False  # uniform dequantisation of 8-bit images, x = (round(255x) + u)/256: for likelihoods

    def __post_init__(self):
        _require(
            self.name in _data.DATASETS, "data.name", f"unknown dataset {self.name!r}; known: {list(_data.DATASETS)}"
        )
        _require(self.num_samples > 0 and self.val_size >= 0, "data", "num_samples must be > 0 and val_size >= 0")
        _require(self.range[0] < self.range[1], "data.range", f"need low < high, got {self.range}")


@dataclass(frozen=True)
class SDEConfig:
    name: str = "vp"  # one of sdegen.sdes.SDES: vp, subvp, ve, powerve
    beta_min: float = 0.1  # vp/subvp: β(0); 0.1 as in Song et al. 2021
    beta_max: float = 20.0  # vp/subvp: β(1); 20 makes alpha(1) ≈ 0.0066, so p_1 ≈ N(0, I)
    sigma_min: float = 0.01  # ve: smallest noise level
    sigma_max: float = 50.0  # ve: largest noise level, ≳ the largest distance between data points
    sigma: float = 25.0  # powerve: dx = sigma^t dw (the tutorial's 25)

    def __post_init__(self):
        _require(self.name in SDES, "sde.name", f"unknown SDE {self.name!r}; known: {sorted(SDES)}")


@dataclass(frozen=True)
class TutorialUNetConfig:
    channels: tuple[int, int, int, int] = (32, 64, 128, 256)  # the tutorial's widths (1.1 M parameters)
    embed_dim: int = 256  # time-embedding width
    fourier_scale: float = 16.0  # frequency std of the Fourier time features (16 for ln(sigma/alpha))
    padding: int = 0  # 0: the tutorial's unpadded convolutions; 1: padded, no border artefacts (nets.tutorial_unet)


@dataclass(frozen=True)
class UNetConfig:
    model_channels: int = 64  # width of the first level
    channel_mult: tuple[int, ...] = (1, 2, 2)  # 28 → 14 → 7 for MNIST
    num_res_blocks: int = 2  # residual blocks per level
    attention_resolutions: tuple[int, ...] = (7,)  # self-attention only at the coarsest MNIST level
    dropout: float = 0.1  # DDPM's CIFAR-10 value; regularises small data sets
    num_heads: int = 4  # attention heads
    fourier_scale: float = 16.0  # frequency std of the Fourier time features


@dataclass(frozen=True)
class MLPConfig:
    hidden: int = 256  # hidden width; enough for 2-D toys
    depth: int = 4  # residual blocks
    fourier_scale: float = 16.0  # frequency std of the Fourier time features


@dataclass(frozen=True)
class NetConfig:
    name: str = "unet"  # one of sdegen.nets.NETS: tutorial_unet, unet, mlp; only its section is used
    tutorial_unet: TutorialUNetConfig = field(default_factory=TutorialUNetConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    mlp: MLPConfig = field(default_factory=MLPConfig)

    def __post_init__(self):
        _require(self.name in NETS, "net.name", f"unknown network {self.name!r}; known: {sorted(NETS)}")


@dataclass(frozen=True)
class ScoreConfig:
    kind: str = "eps"  # what the net predicts: score, eps, x0 or v (sdegen.score)
    precondition: bool = True  # EDM input scaling c_in = 1/√(alpha²σ_d² + sigma²): unit-variance inputs
    sigma_data: float = 0.5  # σ_d, RMS of one data coordinate (MNIST in [0, 1]: 0.34)
    time_input: str = "log_sigma"  # network time input: ln(sigma/alpha) or the SDE time "t"
    input_frequencies: tuple[float, ...] = ()  # Fourier features sin/cos(2π·f·x/alpha) of the input (sdegen.score)
    self_condition: bool = False  # the net also sees its previous x0 estimate (zeroed for half the training batch)

    def __post_init__(self):
        try:
            Parametrisation(**dataclasses.asdict(self))  # the one place a parametrisation is validated
        except ValueError as err:
            raise ConfigError(f"score.{err}") from None


@dataclass(frozen=True)
class LossConfig:
    name: str = "eps_mse"  # one of sdegen.losses.LOSSES: dsm, eps_mse, x0_mse, v_mse, likelihood
    t_min: float = 1e-5  # smallest training time (Song et al. 2021 use 1e-5)
    label_dropout: float = 0.1  # conditional training: P(label → ∅), for classifier-free guidance

    def __post_init__(self):
        _require(self.name in LOSSES, "loss.name", f"unknown loss {self.name!r}; known: {sorted(LOSSES)}")
        _require(0 <= self.t_min < 1, "loss.t_min", f"must lie in [0, 1), got {self.t_min}")
        _require(0 <= self.label_dropout < 1, "loss.label_dropout", f"must lie in [0, 1), got {self.label_dropout}")


LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-4  # Adam learning rate after warm-up (DDPM's 2e-4)
    beta1: float = 0.9  # Adam β1
    beta2: float = 0.999  # Adam β2
    eps: float = 1e-8  # Adam ε
    weight_decay: float = 0.0  # L2 penalty (Adam's, not decoupled)
    warmup_steps: int = 1000  # linear warm-up from 0, then `schedule`
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    # after warm-up: "constant" holds lr (EMA does the annealing); "cosine" decays it to lr·final_lr_ratio at the
    # run's last step (the formula: sdegen.training.learning_rate)
    schedule: str = "constant"
    final_lr_ratio: float = 0.0  # "cosine": the lr reached at the last step, as a fraction of lr

    def __post_init__(self):
        _require(math.isfinite(self.lr) and self.lr > 0, "optim.lr", f"must be a finite number > 0, got {self.lr}")
        _require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "optim.beta1/beta2", "must lie in [0, 1)")
        _require(self.eps > 0 and self.weight_decay >= 0, "optim.eps/weight_decay", "need eps > 0, weight_decay >= 0")
        _require(self.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _require(self.grad_clip >= 0, "optim.grad_clip", f"must be >= 0, got {self.grad_clip}")
        _require(
            self.schedule in LR_SCHEDULES, "optim.schedule", f"unknown {self.schedule!r}; known: {list(LR_SCHEDULES)}"
        )
        ratio = self.final_lr_ratio
        _require(0 <= ratio <= 1, "optim.final_lr_ratio", f"must lie in [0, 1], got {ratio}")


@dataclass(frozen=True)
class ProcessConfig:
    # "" trains a score model (the sde/score/loss sections); a recipe name of sdegen.processes.recipes
    # (circle_mixture, rotation_curve, mnist_label) trains its x0-predictor by bridge diffusion instead.
    name: str = ""
    rate: float = 1.0  # rate of the recipe's forward process (diffusion, jump or OU reversion rate)
    t_min: float = 1e-3  # training times are log-uniform on [t_min, t_max], the bridge chain's grid
    t_max: float = 15.0  # the chain's start; the forward law must be near equilibrium there
    self_condition: bool = False  # feed the previous x0 estimate (50 % dropout in training)
    width: int = 128  # hidden width of the recipe's network

    def __post_init__(self):
        if self.name:
            from sdegen.processes.recipes import RECIPES  # late: the recipes import networks and data

            _require(self.name in RECIPES, "process.name", f"unknown recipe {self.name!r}; known: {sorted(RECIPES)}")
        _require(0 < self.t_min < self.t_max, "process.t_min/t_max", f"need 0 < t_min < t_max, got {self.t_min}")
        _require(self.rate > 0 and self.width > 0, "process.rate/width", "must be > 0")


@dataclass(frozen=True)
class ClassifierConfig:
    # true: train a noise-conditional classifier p(y | x_t, t) for classifier guidance (sdegen.classifier) on the
    # sde section's marginals, t ~ U[loss.t_min, 1], instead of a score model; needs labels, no label dropout.
    train: bool = False
    channels: tuple[int, ...] = (32, 64, 128)  # widths of the levels (28 → 14 → 7): ~0.3 M parameters, cheap to guide
    embed_dim: int = 128  # noise-embedding width
    fourier_scale: float = 1.0  # Fourier frequency std of ln(sigma/alpha): 1 keeps p(y | x_t, t) smooth in t

    def __post_init__(self):
        _require(
            len(self.channels) >= 1 and all(c > 0 for c in self.channels), "classifier.channels", "need widths > 0"
        )
        _require(self.embed_dim > 0 and self.embed_dim % 2 == 0, "classifier.embed_dim", "must be even and > 0")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    net: NetConfig = field(default_factory=NetConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)  # bridge-diffusion recipe (off by default)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)  # noise-conditional classifier (off)
    ema_decay: float = 0.999  # EMA of the weights, the weights that are shipped; half-life ≈ 700 steps
    batch_size: int = 256  # global batch size (split across data-parallel ranks)
    steps: int = 40000  # optimizer steps in total (a resumed run continues up to this)
    seed: int = 0  # seeds the init, the data split and order, t, noise, label dropout
    checkpoint_every: int = 2000  # steps between (atomic) checkpoints; the last step is always saved
    val_every: int = 1000  # steps between validation losses (EMA weights, fixed noise); 0 disables
    log_every: int = 100  # steps between metric lines (metrics.jsonl) and progress-bar updates
    out_dir: str = "runs/mnist"  # where checkpoint.pt, model.pt, metrics.jsonl and config.json go
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    precision: str = "fp32"  # "fp32" or "bf16" (autocast of the network forward)
    compile: bool = False  # torch.compile the training forward (GPU speed-up; first steps slower)
    # Fine-tuning: a checkpoint path or shipped model name whose EMA weights start this (fresh) run as both
    # the weights and their EMA; its sde, net and score sections and data shape must equal this config's.
    init_from: str = ""
    # Steps in a row whose loss or gradient is NaN/inf that are skipped (no update) before the run stops with
    # an error: a rare overflow is survivable, a diverged run is not; checkpoints are never written meanwhile.
    max_skipped_steps: int = 10

    def __post_init__(self):
        _require(0 <= self.ema_decay < 1, "ema_decay", f"must lie in [0, 1), got {self.ema_decay}")
        for key in ("batch_size", "steps", "checkpoint_every", "log_every"):
            _require(getattr(self, key) > 0, key, f"must be > 0, got {getattr(self, key)}")
        _require(self.val_every >= 0, "val_every", f"must be >= 0, got {self.val_every}")
        _require(self.max_skipped_steps >= 0, "max_skipped_steps", f"must be >= 0, got {self.max_skipped_steps}")
        # the run seeds generators with seed, seed + 1 and seed + 2
        _require(0 <= self.seed < SEED_LIMIT - 2, "seed", f"must lie in [0, 2**63 - 2), got {self.seed}")
        _require(self.precision in ("fp32", "bf16"), "precision", f"must be fp32 or bf16, got {self.precision!r}")
        if self.classifier.train:
            _require(self.data.conditional, "classifier.train", "needs labels: set data.conditional = true")
            _require(
                self.loss.label_dropout == 0, "classifier.train", "needs loss.label_dropout = 0 (every label seen)"
            )
            _require(not self.process.name and not self.init_from, "classifier.train", "takes no process or init_from")


# -- JSON and overrides ---------------------------------------------------------------------------------------
def config_to_dict(cfg) -> dict:
    """The config as nested plain dicts (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_to_json(cfg: TrainConfig, indent: int | None = 2) -> str:
    """The resolved config as a JSON string (what `--dry-run` prints and checkpoints store)."""
    return json.dumps(config_to_dict(cfg), indent=indent, sort_keys=False)


def _convert(value, tp, key: str):
    """Check/convert a JSON value to the annotated field type."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
            value = [json.loads(v) for v in value]
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]  # a single number for a one-element list, e.g. attention_resolutions=7
        _require(isinstance(value, list | tuple), key, f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], key) for v in value)
        _require(len(value) == len(args), key, f"expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, key) for v, a in zip(value, args, strict=True))
    if tp is bool:
        _require(isinstance(value, bool), key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        _require(isinstance(value, int) and not isinstance(value, bool), key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        _require(
            isinstance(value, int | float) and not isinstance(value, bool), key, f"expected a number, got {value!r}"
        )
        return float(value)
    if tp is str:
        _require(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {tp}")


def _from_dict(cls, d: dict, prefix: str = ""):
    _require(isinstance(d, dict), prefix.rstrip(".") or "config", f"expected an object, got {d!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in d.items():
        if key not in hints:
            raise ConfigError(f"unknown config key {prefix + key!r}; valid keys here: {names}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _from_dict(tp, value, prefix + key + ".")
        else:
            kwargs[key] = _convert(value, tp, prefix + key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {e}") from e


def _parse_override(text: str) -> tuple[list[str], object]:
    try:  # a bare string value (e.g. out_dir=runs/x) or a comma list for tuples stays a string
        key, value = parse_key_value(text, "override")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return key.split("."), value


def config_from_dict(d: dict, overrides: typing.Iterable[str] = ()) -> TrainConfig:
    """Build a TrainConfig from nested dicts plus `key=value` overrides (dotted keys, typed by the field)."""
    d = json.loads(json.dumps(d))
    for text in overrides:
        path, value = _parse_override(text)
        node, cls = d, TrainConfig
        for i, part in enumerate(path):
            hints = typing.get_type_hints(cls)
            if part not in hints:
                names = [f.name for f in dataclasses.fields(cls)]
                raise ConfigError(f"unknown config key {'.'.join(path[: i + 1])!r}; valid keys here: {names}")
            if i == len(path) - 1:
                if hints[part] is str and not isinstance(value, str):
                    value = text.split("=", 1)[1]
                node[part] = value
            else:
                cls = hints[part]
                if not dataclasses.is_dataclass(cls):
                    raise ConfigError(f"config key {'.'.join(path[: i + 1])!r} is not a section")
                node = node.setdefault(part, {})
    return _from_dict(TrainConfig, d)


def shipped_configs() -> list[str]:
    """Names of the recipes in sdegen/configs/."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(path_or_name: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> TrainConfig:
    """Load a TrainConfig from a JSON file or a shipped recipe name (None = defaults), then apply overrides."""
    if path_or_name is None:
        return config_from_dict({}, overrides)
    path = Path(path_or_name)
    if not path.is_file():
        if (CONFIG_DIR / f"{path_or_name}.json").is_file():
            path = CONFIG_DIR / f"{path_or_name}.json"
        else:
            raise ConfigError(
                f"config {str(path_or_name)!r} is neither a file nor a shipped recipe {shipped_configs()}"
            )
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON ({e})") from e
    try:
        return config_from_dict(d, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


# -- builders -------------------------------------------------------------------------------------------------
def make_sde(cfg: SDEConfig) -> AbstractSDE:
    """The forward SDE named by the config, with the parameters its constructor takes."""
    cls = SDES[cfg.name]
    return cls(**{k: getattr(cfg, k) for k in inspect.signature(cls).parameters})  # the SDE names its parameters


def make_net(cfg: NetConfig, data_shape: tuple[int, ...], num_classes: int | None, extra_in_channels: int = 0):
    """The network of the config for data of shape `data_shape` (images (C, H, W): channels and size from it).

    `extra_in_channels` input channels are not predicted (the input Fourier features and the self-conditioning
    input of `sdegen.score`).
    """
    kwargs = dataclasses.asdict(getattr(cfg, cfg.name))
    if cfg.name == "mlp":
        if extra_in_channels:
            raise ConfigError(
                "score.input_frequencies/self_condition: the mlp net takes no extra inputs; use an image net"
            )
        kwargs["data_shape"] = tuple(data_shape)
    else:
        if len(data_shape) != 3:
            raise ConfigError(f"net.name: {cfg.name} needs image data (C, H, W), got data shape {tuple(data_shape)}")
        kwargs["in_channels"] = data_shape[0]
        kwargs["extra_in_channels"] = extra_in_channels
        if cfg.name == "unet":
            kwargs["image_size"] = data_shape[-1]
    return build_net(cfg.name, num_classes=num_classes, **kwargs)


def make_score_model(cfg: TrainConfig, data_shape: tuple[int, ...], num_classes: int | None) -> ScoreModel:
    """Net + SDE + parametrisation of the config, as a `ScoreModel`."""
    param = Parametrisation(**dataclasses.asdict(cfg.score))
    net = make_net(cfg.net, data_shape, num_classes, param.extra_channels_per_channel * data_shape[0])
    return ScoreModel(net, make_sde(cfg.sde), param, num_classes=num_classes)
