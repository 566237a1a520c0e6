"""User LoRAs on a diffusers FLUX pipeline (transformer + CLIP text encoder), per request, never merged into the base weights.

diffusers' PEFT backend (``load_lora_weights`` + ``set_adapters`` with weights, the calls of the
official InfiniteYou ``load_loras``; here its ``load_lora_into_*`` parts, see :func:`_load`) wraps each targeted Linear layer in a LoRA layer that adds
``weight · B(A(x))`` to the output of the untouched base layer. Around those calls:

* a LoRA file is read as ``.safetensors`` only (no pickle) and converted to diffusers' layout by
  the pipeline's own ``lora_state_dict`` (kohya, XLabs ... → diffusers), then **checked before
  anything loads** (:func:`check_fits`): every key names a Linear layer of a LoRA-loadable part
  (FLUX: the transformer, the CLIP text encoder) and the A / B shapes fit that layer exactly.
  diffusers would otherwise *widen* the base layer for a LoRA with wider inputs (its FLUX Control
  LoRA path) and leave it widened when the load then fails — a corrupted cached pipeline. LoRAs
  that overwrite base weights (FLUX Control norm weights) are refused for the same reason.
* :class:`LoraSet` keeps up to ``capacity`` adapters loaded (named by the file's path, size and
  modification time; the least recently used one is deleted with ``delete_adapters`` to make room)
  and for each request activates exactly the ones asked for, with their weights; a request with
  none disables every LoRA layer (``disable_lora``), which then returns its base layer's output
  itself: the image is the no-LoRA image bit for bit. Two requests with different LoRAs never add up.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceanchor.errors import InvalidInputError

#: ``<part>.<module path>.lora_A|lora_B.weight|bias`` — the diffusers layout after conversion.
_KEY = re.compile(r"^(?P<part>[A-Za-z0-9_]+)\.(?P<path>.+)\.(?P<ab>lora_A|lora_B)\.(?P<param>weight|bias)$")


@dataclass(frozen=True)
class LoraFile:
    """One resolved LoRA of a request: its local file, weight and the name results show."""

    path: Path
    weight: float
    name: str


def read_lora(path: Path, name: str) -> dict[str, Any]:
    """The tensors of a LoRA ``.safetensors`` file (CPU), or a one-line error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if path.suffix != ".safetensors":
        raise InvalidInputError(f"LoRA {name}: only .safetensors files are read (no pickled .bin / .pt / .ckpt)")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise InvalidInputError(f"LoRA {name} is not a readable .safetensors file: {_first_line(e)}") from None
    if not state:
        raise InvalidInputError(f"LoRA {name} holds no tensors")
    return state


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def converted(pipe: Any, state: dict[str, Any], name: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``state`` in diffusers' layout as the pipeline's own loader converts it (kohya, XLabs ...), and
    its network alphas."""
    try:
        sd, alphas = type(pipe).lora_state_dict(dict(state), return_alphas=True)
    except (ValueError, KeyError, RuntimeError, AssertionError) as e:
        raise InvalidInputError(f"LoRA {name} is in a layout diffusers cannot read: {_first_line(e)}") from None
    return sd, alphas


def check_fits(pipe: Any, state: dict[str, Any], name: str, required: str = "transformer") -> None:
    """Refuse, before loading, a LoRA (diffusers layout) whose keys or shapes do not fit ``pipe``'s
    LoRA-loadable parts, or that holds nothing for ``required``."""
    import torch

    parts = tuple(getattr(type(pipe), "_lora_loadable_modules", ()))
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for key, value in state.items():
        m = _KEY.match(key)
        if m is None:
            if any(n in key for n in ("norm_q", "norm_k", "norm_added_q", "norm_added_k", "query_norm", "key_norm")):
                raise InvalidInputError(f"LoRA {name} rewrites base weights ({key}: a FLUX Control LoRA); only LoRAs that add to the base are applied")
            raise InvalidInputError(f"LoRA {name} has a key no LoRA loader applies ({key}); give a LoRA in diffusers' or kohya's layout")
        if m["part"] not in parts or getattr(pipe, m["part"], None) is None:
            raise InvalidInputError(f"LoRA {name} targets {m['part']} ({key}); this pipeline takes LoRAs for {', '.join(parts)} only")
        pairs.setdefault((m["part"], m["path"]), {})[f"{m['ab']}.{m['param']}"] = value
    if not any(part == required for part, _ in pairs):
        raise InvalidInputError(f"LoRA {name} holds no weights for the {required}; it is not a LoRA for this model")
    for (part, path), t in pairs.items():
        where = f"{part}.{path}"
        try:
            layer = getattr(pipe, part).get_submodule(path)
        except AttributeError:
            raise InvalidInputError(f"LoRA {name} targets {where}, which this {part} does not have: it is a LoRA for another model") from None
        layer = getattr(layer, "base_layer", layer)  # already wrapped by another adapter
        if not isinstance(layer, torch.nn.Linear):
            raise InvalidInputError(f"LoRA {name} targets {where}, a {type(layer).__name__}; only Linear layers take LoRAs here")
        a, b = t.get("lora_A.weight"), t.get("lora_B.weight")
        if a is None or b is None or "lora_A.bias" in t:
            raise InvalidInputError(f"LoRA {name}: {where} needs one lora_A and one lora_B weight")
        bias = t.get("lora_B.bias")
        fits = (a.ndim == 2 and b.ndim == 2 and a.shape[1] == layer.in_features and b.shape[0] == layer.out_features
                and a.shape[0] == b.shape[1] and (bias is None or tuple(bias.shape) == (layer.out_features,)))
        if not fits:
            raise InvalidInputError(
                f"LoRA {name} does not fit {where}: A {tuple(a.shape)}, B {tuple(b.shape)} for a layer of "
                f"{layer.in_features} → {layer.out_features}; it is a LoRA for another model"
            )


def _adapter_name(path: Path) -> str:
    st = path.stat()
    digest = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return f"user_lora_{digest}"


class LoraSet:
    """The user LoRAs loaded into one pipeline, and which of them the current request uses."""

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self.loaded: OrderedDict[str, str] = OrderedDict()  # adapter name -> LoRA name, least recent first

    def apply(self, pipe: Any, loras: list[LoraFile]) -> None:
        """Make exactly ``loras`` (with their weights) active on ``pipe``; none: every LoRA layer off."""
        files = [lf.path.resolve() for lf in loras]
        if len(set(files)) != len(files):
            raise InvalidInputError("loras: the same LoRA file is given twice; give it once with one weight")
        try:
            names = [self._ensure(pipe, lf, keep={_adapter_name(x.path) for x in loras}) for lf in loras]
        except BaseException:
            self.deactivate(pipe)
            raise
        if not names:
            self.deactivate(pipe)
            return
        pipe.enable_lora()
        pipe.set_adapters(names, adapter_weights=[float(lf.weight) for lf in loras])

    def needs_loading(self, loras: list[LoraFile]) -> bool:
        """Whether any of ``loras`` is not loaded yet (switching weights alone loads nothing)."""
        return any(_adapter_name(lf.path) not in self.loaded for lf in loras)

    def deactivate(self, pipe: Any) -> None:
        if self.loaded:
            pipe.disable_lora()

    def _ensure(self, pipe: Any, lf: LoraFile, keep: set[str]) -> str:
        adapter = _adapter_name(lf.path)
        if adapter in self.loaded:
            self.loaded.move_to_end(adapter)
            return adapter
        state, alphas = converted(pipe, read_lora(lf.path, lf.name), lf.name)
        check_fits(pipe, state, lf.name)
        while len(self.loaded) >= self.capacity:
            old = next((a for a in self.loaded if a not in keep), None)
            if old is None:
                break
            pipe.delete_adapters([old])
            del self.loaded[old]
        try:
            with _quiet_diffusers():
                _load(pipe, state, alphas, adapter)
        except (ValueError, KeyError, RuntimeError) as e:
            with contextlib.suppress(Exception):
                pipe.delete_adapters([adapter])
            raise InvalidInputError(f"LoRA {lf.name} could not be loaded: {_first_line(e)}") from None
        self.loaded[adapter] = lf.name
        return adapter


def _load(pipe: Any, state: dict[str, Any], alphas: dict[str, Any] | None, adapter: str) -> None:
    """What ``load_lora_weights`` does for a checked LoRA, through the same diffusers calls
    (``load_lora_into_transformer`` / ``load_lora_into_text_encoder``) minus its shape-expansion pass:
    every shape already fits, and that pass cannot read quantised (8-bit quanto) transformer weights."""
    for part in getattr(type(pipe), "_lora_loadable_modules", ()):
        model = getattr(pipe, part, None)
        if model is None or not any(k.startswith(f"{part}.") for k in state):
            continue
        if part == "transformer":
            pipe.load_lora_into_transformer(state, network_alphas=alphas, transformer=model, adapter_name=adapter, _pipeline=pipe)
        else:  # FLUX: the CLIP text encoder
            pipe.load_lora_into_text_encoder(state, network_alphas=alphas, text_encoder=model, prefix=part, adapter_name=adapter,
                                             _pipeline=pipe)


@contextlib.contextmanager
def _quiet_diffusers():
    """diffusers logs a warning for each part a LoRA has nothing for (the text encoder) and PEFT warns
    that a second adapter makes several: both expected here; keep errors only."""
    import warnings

    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            yield
    finally:
        dlog.set_verbosity(level)
