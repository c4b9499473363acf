"""Which model a name means: the built-in models, models registered in-process with `@register`, and
models that other installed packages declare in the `hcmbench.models` entry-point group.

Nothing is imported until a name is asked for, so `import hcmbench` stays light and no model module
imports this one back at load time. A package outside hcmbench makes its model available with, in its
setup.cfg,

    [options.entry_points]
    hcmbench.models =
        mymodel = mypackage.mymodel:MyModel

where `MyModel` subclasses `hcmbench.models.base.GenerativeModel`; `hcmbench train --model mymodel`
then finds it. The entry's name is the model's name.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any

from hcmbench.config import check_size
from hcmbench.errors import HcmbenchError

if TYPE_CHECKING:
    from hcmbench.models.base import GenerativeModel, Preset

ENTRY_POINT_GROUP = "hcmbench.models"
# The built-in models and the modules that define them, imported on first use.
BUILTIN: dict[str, str] = {
    "vae": "hcmbench.models.vae",
    "gan": "hcmbench.models.gan",
    "dcgan": "hcmbench.models.dcgan",
    "acgan": "hcmbench.models.acgan",
    "infogan": "hcmbench.models.infogan",
    "ddpm": "hcmbench.models.diffusion",
}

_REGISTRY: dict[str, type[GenerativeModel]] = {}


def register(name: str) -> Callable[[type[GenerativeModel]], type[GenerativeModel]]:
    """Class decorator: make a model buildable by `name` (lower case)."""

    def decorate(cls: type[GenerativeModel]) -> type[GenerativeModel]:
        key = name.lower()
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"model name {key!r} is already registered by {_REGISTRY[key].__name__}")
        _REGISTRY[key] = cls
        cls.name = key
        return cls

    return decorate


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name.lower(): ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_models() -> list[str]:
    """Names of every model that can be built: built-in, registered, or declared by an entry point; sorted."""
    return sorted(set(BUILTIN) | set(_REGISTRY) | set(_entry_points()))


def model_class(name: str) -> type[GenerativeModel]:
    """The class `name` means, importing its module on first use; an unknown name raises HcmbenchError
    listing the known ones."""
    from hcmbench.models.base import GenerativeModel

    key = name.lower()
    if key not in _REGISTRY and key in BUILTIN:
        importlib.import_module(BUILTIN[key])  # its @register fills the registry
    if key not in _REGISTRY:
        entry = _entry_points().get(key)
        if entry is None:
            raise HcmbenchError(f"unknown model {name!r}: choose from {', '.join(available_models())}")
        try:
            cls = entry.load()
        except Exception as exc:  # a broken plug-in is named, not a traceback
            raise HcmbenchError(f"model {key!r} ({entry.value}, entry point of {ENTRY_POINT_GROUP}) failed to "
                                f"load: {type(exc).__name__}: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, GenerativeModel)):
            raise HcmbenchError(f"model {key!r}: {entry.value} is not a GenerativeModel subclass")
        if _REGISTRY.get(key) is not cls:
            register(key)(cls)
    return _REGISTRY[key]


def model_defaults(name: str) -> dict[str, Any]:
    """A model's settings and their defaults, read from its constructor signature."""
    signature = inspect.signature(model_class(name).__init__)
    return {k: p.default for k, p in signature.parameters.items()
            if k != "self" and p.default is not inspect.Parameter.empty}


def model_preset(name: str, preset: str) -> Preset:
    """The preset `preset` of model `name`; an unknown one raises HcmbenchError listing the model's presets."""
    cls = model_class(name)
    if preset not in cls.presets:
        known = ", ".join(sorted(cls.presets)) or "none"
        raise HcmbenchError(f"{cls.name} has no preset {preset!r} (its presets: {known})")
    return cls.presets[preset]


_KINDS = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}
_SAID = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a text"}
_PLURAL = {"bool": "true or false values", "int": "integers", "float": "numbers", "str": "texts"}


def _expected(parameter: inspect.Parameter) -> tuple[str, str | None, bool] | None:
    """(kind, kind of its items for a tuple, None allowed) of a constructor argument, from its annotation
    (a string under `from __future__ import annotations`, or a type), else from its default; None when
    neither says (such a setting is not checked)."""
    annotation = parameter.annotation
    if annotation is inspect.Parameter.empty:
        text = ""
    elif isinstance(annotation, str):
        text = annotation
    else:
        text = getattr(annotation, "__name__", None) or str(annotation)
    parts = [part.strip() for part in text.replace("typing.", "").split("|")]
    optional = "None" in parts
    parts = [part for part in parts if part != "None"]
    if len(parts) == 1 and parts[0] in _KINDS:
        return parts[0], None, optional
    if len(parts) == 1 and parts[0].startswith("tuple"):
        item = parts[0].removeprefix("tuple").strip("[]").split(",")[0].strip()
        return "tuple", item if item in _KINDS else None, optional
    default = parameter.default
    for kind in ("bool", "int", "float", "str"):  # bool first: True is an int too
        if type(default) is _KINDS[kind][-1]:
            return kind, None, optional
    if isinstance(default, tuple):
        kinds = {type(item).__name__ for item in default}
        item = kinds.pop() if len(kinds) == 1 else None
        return "tuple", item if item in _KINDS else None, optional
    return None


def _fits(value: Any, kind: str) -> bool:
    return isinstance(value, _KINDS[kind]) and (kind == "bool" or not isinstance(value, bool))


def check_setting_types(cls: type[GenerativeModel], settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` with each value checked against its constructor argument's type (HcmbenchError, one line:
    "dcgan: width must be an integer, got 'abc'"); lists become tuples where a tuple is expected."""
    parameters = inspect.signature(cls.__init__).parameters
    checked = {}
    for key, value in settings.items():
        expected = _expected(parameters[key]) if key in parameters else None
        if expected is None or (value is None and expected[2]):
            checked[key] = value
            continue
        kind, item, _ = expected
        if kind != "tuple":
            if not _fits(value, kind):
                raise HcmbenchError(f"{cls.name}: {key} must be {_SAID[kind]}, got {value!r}")
        elif not isinstance(value, (tuple, list)) or (item is not None and not all(_fits(v, item) for v in value)):
            raise HcmbenchError(f"{cls.name}: {key} must be a list of {_PLURAL.get(item or '', 'values')}, "
                                f"got {tuple(value) if isinstance(value, list) else value!r}")
        else:
            value = tuple(value)
        checked[key] = value
    return checked


def check_settings(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """A model's settings, checked before it is built (so a command can refuse them before its data work):
    unknown names and values of the wrong type raise HcmbenchError; lists become tuples where expected."""
    cls = model_class(name)
    defaults = model_defaults(name)
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise HcmbenchError(f"unknown setting(s) {', '.join(unknown)} for model {cls.name}: "
                            f"known are {', '.join(sorted(defaults))}")
    return check_setting_types(cls, settings)


def build_model(name: str, image_size: int, num_classes: int = 0, **settings: Any) -> GenerativeModel:
    """Instantiate a model by name; unknown settings, or settings of the wrong type, raise HcmbenchError
    naming them.

    Every model takes `image_size` and `num_classes`; unconditional ones ignore the latter (a model
    may also be conditional by setting, like the DDPM's `class_conditional`: `model.conditional` is
    then an instance attribute). The full settings (defaults filled in) are stored on the model as
    `model.settings`, which is what checkpoints keep.
    """
    cls = model_class(name)
    defaults = model_defaults(name)
    settings = check_settings(name, settings)
    check_size(image_size, "image size")
    full = {**defaults, **settings, "image_size": image_size, "num_classes": num_classes}
    model = cls(**full)
    model.settings = full
    return model
