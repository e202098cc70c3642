"""pflnas derived networks as timm models: ``timm.create_model("pflnas", arch=..., **settings)``.

timm users get pflnas networks through the API they already use. The network is the very module
:func:`~pflnas.models.build_network` returns, its class switched to a subclass with the timm interface
(not wrapped), so ``state_dict`` keys and pflnas checkpoints stay the same and ``forward`` keeps the pflnas
contract. Settings, weights and tags are described on :func:`pflnas`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import (
    build_model_with_cfg,
    generate_default_cfgs,
    is_model,
    model_entrypoint,
    register_model,
)
from torch import Tensor, nn

from pflnas.arch.record import Architecture, load_architecture
from pflnas.data.specs import DATASETS
from pflnas.errors import ConfigError
from pflnas.models import (
    DATASET_PRESETS,
    NetworkCIFAR,
    NetworkConfig,
    NetworkImageNet,
    PiTBlockNet,
    ResNetBlockNet,
    TinyNetwork,
    ViTBlockNet,
)
from pflnas.models import build_from_config as _build_from_config
from pflnas.trained import (
    check_checkpoint_arch,
    checkpoint_network_config,
    load_network_state,
    read_checkpoint,
)

__all__ = ["pflnas", "register_timm_models"]


# --- the timm interface, added by subclassing the pflnas networks --------------------------------------
class _TimmAdapter:
    """What timm utilities expect of a classifier; mixed into a pflnas network class.

    Relies on the network's ``global_pooling`` and ``classifier`` (and ``auxiliary_head`` if it has one).
    """

    first_conv: str
    num_classes: int
    num_features: int
    head_hidden_size: int
    global_pooling: nn.Module
    classifier: nn.Module

    def forward_features(self, x: Tensor) -> Tensor:
        """The feature map before global pooling, ``[batch, num_features, h, w]``."""
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pooling(x).flatten(1)
        return x if pre_logits else self.classifier(x)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new linear classifier (an identity for ``num_classes=0``); the auxiliary head's too."""
        if global_pool not in (None, "avg"):
            raise ConfigError(f"pflnas networks pool by averaging only, got global_pool={global_pool!r}")
        self.num_classes = num_classes
        self.classifier = _linear(self.num_features, num_classes)
        aux = getattr(self, "auxiliary_head", None)
        if aux is not None:
            aux.classifier = _linear(aux.classifier.in_features, num_classes)


def _linear(features: int, classes: int) -> nn.Module:
    return nn.Linear(features, classes) if classes > 0 else nn.Identity()


class TimmNetworkCIFAR(_TimmAdapter, NetworkCIFAR):
    first_conv = "stem.0"

    def forward_features(self, x: Tensor) -> Tensor:
        s = self.stem(x)
        return self._run_cells(s, s)[0]


class TimmNetworkImageNet(_TimmAdapter, NetworkImageNet):
    first_conv = "stem0.0"

    def forward_features(self, x: Tensor) -> Tensor:
        s0 = self.stem0(x)
        return self._run_cells(s0, self.stem1(s0))[0]


class TimmTinyNetwork(_TimmAdapter, TinyNetwork):
    first_conv = "stem.0"

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.lastact(x)


class _BlockNetAdapter(_TimmAdapter):
    """The timm interface of the block-space networks, whose head is ``fc`` (ResNet) or ``head``."""

    head_name: str

    def _pool(self, x: Tensor) -> Tensor:
        return x.mean(dim=(1, 2))  # transformers: average over the [B, H, W, D] token grid

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self._pool(x)
        return x if pre_logits else getattr(self, self.head_name)(x)

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.head_name)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg"):
            raise ConfigError(f"pflnas networks pool by averaging only, got global_pool={global_pool!r}")
        self.num_classes = num_classes
        setattr(self, self.head_name, _linear(self.num_features, num_classes))


class TimmResNetBlockNet(_BlockNetAdapter, ResNetBlockNet):
    first_conv = "stem.0"
    head_name = "fc"
    forward_features = ResNetBlockNet.forward_features  # ahead of the adapter's abstract one

    def _pool(self, x: Tensor) -> Tensor:
        return self.global_pool(x).flatten(1)


class TimmViTBlockNet(_BlockNetAdapter, ViTBlockNet):
    first_conv = "patch_embed"
    head_name = "head"
    forward_features = ViTBlockNet.forward_features


class TimmPiTBlockNet(_BlockNetAdapter, PiTBlockNet):
    first_conv = "patch_embed"
    head_name = "head"
    forward_features = PiTBlockNet.forward_features


_ADAPTERS: dict[type[nn.Module], type[nn.Module]] = {
    NetworkCIFAR: TimmNetworkCIFAR,
    NetworkImageNet: TimmNetworkImageNet,
    TinyNetwork: TimmTinyNetwork,
    ResNetBlockNet: TimmResNetBlockNet,
    ViTBlockNet: TimmViTBlockNet,
    PiTBlockNet: TimmPiTBlockNet,
}


def as_timm_model(model: nn.Module) -> nn.Module:
    """Give a network built by pflnas the timm interface, in place (its ``state_dict`` is unchanged)."""
    adapter = _ADAPTERS.get(type(model))
    if adapter is None:
        if isinstance(model, _TimmAdapter):
            return model
        raise ConfigError(f"no timm interface for {type(model).__name__} networks")
    # Switching the class (rather than wrapping) keeps the parameter names, so pflnas checkpoints load.
    model.__class__ = adapter
    head = model.get_classifier()
    model.num_classes = head.out_features
    model.num_features = model.head_hidden_size = head.in_features
    return model


# --- pretrained (data) configs ----------------------------------------------------------------------
def _dataset_cfg(dataset: str, in_channels: int | None = None) -> dict[str, Any]:
    """timm's data config for networks built for ``dataset`` (no weights: pflnas has none to offer)."""
    preset = DATASET_PRESETS[dataset]
    channels = preset.in_channels if in_channels is None else in_channels
    spec = DATASETS.get(dataset)
    mean, std = (spec.mean, spec.std) if spec else (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    if len(mean) != channels:  # e.g. a 1-channel network for an RGB dataset: the average per channel
        mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
    imagenet = preset.family == "imagenet"
    pool = preset.image_size // (32 if imagenet else 4)  # stride of the stem(s) and the two reductions
    return dict(
        input_size=(channels, preset.image_size, preset.image_size),
        fixed_input_size=imagenet,  # NetworkImageNet ends in AvgPool2d(7): 224x224 only
        num_classes=preset.num_classes,
        mean=tuple(mean),
        std=tuple(std),
        interpolation="bilinear",
        crop_pct=0.875 if imagenet else 1.0,
        pool_size=(pool, pool),
        first_conv="stem0.0" if imagenet else "stem.0",
        classifier="classifier",
        license="apache-2.0",
    )


default_cfgs = generate_default_cfgs({f"pflnas.{name}": _dataset_cfg(name) for name in DATASET_PRESETS})


def _pretrained_cfg(config: NetworkConfig, model: nn.Module) -> dict[str, Any]:
    return dict(
        _dataset_cfg(config.dataset, config.in_channels),
        num_classes=config.num_classes,
        first_conv=model.first_conv,
        architecture="pflnas",
        tag=config.dataset,
    )


# --- the entrypoint ---------------------------------------------------------------------------------
def _create_pflnas(
    variant: str,
    pretrained: bool = False,
    *,
    arch: str | Path | Architecture | None = None,
    dataset: str | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    init_channels: int | None = None,
    layers: int | None = None,
    auxiliary: bool = False,
    drop_path: float | None = None,
    drop_path_rate: float | None = None,
    drop_rate: float = 0.0,
    global_pool: str | None = None,
    checkpoint: str | Path | None = None,
    pretrained_cfg: str | dict[str, Any] | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    cache_dir: Any = None,
    **unsupported: Any,
) -> nn.Module:
    if unsupported:
        raise ConfigError(f"timm model {variant!r} does not take {', '.join(sorted(unsupported))}")
    if arch is None:
        raise ConfigError(f"timm model {variant!r} needs arch=<found.json path or Architecture>")
    architecture = arch if isinstance(arch, Architecture) else load_architecture(arch)
    drop_path = _check_timm_options(drop_rate, global_pool, drop_path, drop_path_rate)
    if isinstance(pretrained_cfg, str):  # a tag: "pflnas.imagenet" means dataset="imagenet"
        dataset, pretrained_cfg = _dataset_of_tag(pretrained_cfg, dataset), None
    source = _weights_source(pretrained, checkpoint, pretrained_cfg_overlay)

    state = read_checkpoint(source) if source is not None else None
    if state is not None:
        check_checkpoint_arch(architecture, state, f"checkpoint {source}")
    config = checkpoint_network_config(
        architecture,
        state,
        dataset=dataset,
        num_classes=num_classes,
        in_channels=in_chans,
        init_channels=init_channels,
        layers=layers,
        auxiliary=auxiliary,
        drop_path=drop_path,
        origin=f"checkpoint {source}",
    )
    model = as_timm_model(_build_from_config(architecture, config))

    def built(**kwargs: Any) -> nn.Module:  # timm passes back num_classes / in_chans / img_size
        return model

    overlay = dict(pretrained_cfg_overlay or {}, **({"file": str(source)} if source else {}))
    model = build_model_with_cfg(
        built,
        variant,
        pretrained=False,  # weights are loaded below, by pflnas' checkpoint reader
        pretrained_cfg=pretrained_cfg or _pretrained_cfg(config, model),
        pretrained_cfg_overlay=overlay,
        cache_dir=cache_dir,
        num_classes=config.num_classes,
        in_chans=config.in_channels,
    )
    if state is not None:
        load_network_state(model, state["model"], f"checkpoint {source}")
    return model


def _check_timm_options(
    drop_rate: float, global_pool: str | None, drop_path: float | None, drop_path_rate: float | None
) -> float:
    """Refuse timm options pflnas networks lack; return the drop-path probability."""
    if drop_rate:
        raise ConfigError(f"pflnas networks have no classifier dropout, got drop_rate={drop_rate!r}")
    if global_pool not in (None, "avg"):
        raise ConfigError(f"pflnas networks pool by averaging only, got global_pool={global_pool!r}")
    if drop_path is not None and drop_path_rate is not None and drop_path != drop_path_rate:
        raise ConfigError(f"drop_path={drop_path!r} and drop_path_rate={drop_path_rate!r} disagree")
    return drop_path if drop_path is not None else drop_path_rate or 0.0


def _dataset_of_tag(tag: str, dataset: str | None) -> str:
    if tag not in DATASET_PRESETS:
        raise ConfigError(f"unknown tag 'pflnas.{tag}'; the tags are datasets: {', '.join(DATASET_PRESETS)}")
    if dataset not in (None, tag):
        raise ConfigError(f"tag 'pflnas.{tag}' and dataset={dataset!r} disagree")
    return tag


def _weights_source(
    pretrained: bool, checkpoint: str | Path | None, overlay: dict[str, Any] | None
) -> str | Path | None:
    file = (overlay or {}).get("file") if pretrained else None
    if checkpoint is not None and file is not None and Path(checkpoint) != Path(file):
        raise ConfigError(f"two checkpoints given: checkpoint={checkpoint!r} and file={file!r}")
    source = checkpoint if checkpoint is not None else file
    if pretrained and source is None:
        raise ConfigError(
            "pflnas networks have no pretrained weights; pass checkpoint=PATH (a 'pflnas retrain' "
            "checkpoint) or pretrained_cfg_overlay=dict(file=PATH)"
        )
    return source


def pflnas(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """The derived network of ``arch=`` (found.json path or Architecture).

    The settings are those of :func:`~pflnas.models.build_network` under timm's names where timm has one
    (``in_chans``; ``drop_path_rate`` is accepted as an alias of ``drop_path``). The timm interface is
    ``num_classes``, ``num_features``, ``forward_features``, ``forward_head``, ``get_classifier``,
    ``reset_classifier``; ``forward`` keeps the pflnas contract (an auxiliary head returns
    :class:`~pflnas.models.AuxOutput` in training mode).

    There are no pretrained weights. Weights come from a ``pflnas retrain`` checkpoint (see
    :mod:`pflnas.trained`), given as ``checkpoint=PATH`` or as ``pretrained=True,
    pretrained_cfg_overlay=dict(file=PATH)``; its stored network settings are used (others may repeat them,
    not contradict them) and auxiliary-head weights are optional. timm's own ``checkpoint_path=PATH`` (with
    ``pretrained=False``) also works when the network matches, auxiliary head included. The tags
    ``pflnas.cifar10``, ``pflnas.imagenet`` and ``pflnas.fashion-mnist`` pick the dataset.
    """
    return _create_pflnas("pflnas", pretrained=pretrained, **kwargs)


def register_timm_models() -> None:
    """Register the ``pflnas`` timm model. Idempotent: registering again changes nothing."""
    if not is_model("pflnas") or model_entrypoint("pflnas") is not pflnas:
        register_model(pflnas)


register_timm_models()
