"""Turn a model reference into local files.

Order of the search for a registry model (:func:`resolve_model`):

1. an explicit reference that is an existing local directory or file (it always wins);
2. ``<home>/models/<name>/`` and ``<home>/models/<org>/<repo>/`` laid out as the repository;
3. the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
   ``~/.cache/huggingface/hub``) and ``<home>/models/hub`` (the same cache layout);
4. a download with ``huggingface_hub`` into the Hugging Face cache, unless ``HF_HUB_OFFLINE``
   is set or ``download=False``.

Face packs are looked for in ``<insightface_root>/models/<pack>`` and
``<home>/models/insightface/<pack>``; the ``dlib`` pack comes from the installed
``face_recognition_models`` package. For every file, ``.safetensors`` spellings are tried before
``.bin`` ones. A model that cannot be found raises :class:`~faceanchor.errors.ModelNotFoundError`
naming the repository, the files and how to get them.

Environment variables are read when a function is called, never at import.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from faceanchor.errors import CheckpointError, InvalidInputError, ModelNotFoundError
from faceanchor.models.registry import (
    BASE_FOR,
    ModelFile,
    ModelSpec,
    Registry,
    _base_files,
    default_registry,
)

if TYPE_CHECKING:
    from faceanchor.config import Settings

_TRUE = {"1", "on", "yes", "true"}


# ----------------------------------------------------------------------------- environment


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache as huggingface_hub computes it, read from the environment now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hf_cache_dirs(settings: "Settings") -> list[Path]:
    """Every hub-cache-layout directory searched: the HF cache, then ``<home>/models/hub``."""
    out = [hf_cache_dir(), settings.models_dir / "hub"]
    return list(dict.fromkeys(out))


def local_dirs(spec: ModelSpec, settings: "Settings") -> list[Path]:
    """Plain directories searched for ``spec``'s files (laid out as in the repository)."""
    if spec.source == "insightface":
        return [settings.insightface_root / "models" / spec.name, settings.models_dir / "insightface" / spec.name]
    if spec.source == "package":
        d = _package_dir(spec)
        return [d] if d is not None else []
    dirs = [settings.models_dir / spec.name]
    if spec.repo_id:
        dirs.append(settings.models_dir / spec.repo_id)
    return dirs


def _package_dir(spec: ModelSpec) -> Path | None:
    if spec.name != "dlib":
        return None
    import importlib.util

    found = importlib.util.find_spec("face_recognition_models")
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / "models"


def default_download_dir(spec: ModelSpec, settings: "Settings") -> Path:
    """Where ``pull`` puts files that do not go to the Hugging Face cache, and where users may."""
    return local_dirs(spec, settings)[-1 if spec.source == "insightface" else 0]


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ResolvedModel:
    """A model found on disk.

    ``files`` maps each registry file name (``ModelFile.path``) to the local file found for it
    (perhaps its ``.safetensors`` sibling). ``root`` is the directory the files hang from;
    :attr:`load_dir` is the folder a diffusers/transformers loader should open.
    ``source`` is ``local``, ``hf-cache``, ``download`` or ``package``.
    """

    spec: ModelSpec
    root: Path
    files: dict[str, Path]
    source: str
    missing_optional: tuple[str, ...] = ()

    def path(self, name: str | None = None) -> Path:
        """The local file for registry file ``name`` (default: the first required file)."""
        if name is None:
            name = self.spec.required_files[0].path
        if name in self.files:
            return self.files[name]
        raise ModelNotFoundError(f"model '{self.spec.name}' has no file '{name}' at {self.root}")

    @property
    def load_dir(self) -> Path:
        """Directory for ``from_pretrained``: ``root/<subfolder>`` (or wherever its config was)."""
        if self.spec.subfolder:
            cfg = self.files.get(f"{self.spec.subfolder}/config.json")
            if cfg is not None:
                return cfg.parent
            return self.root / self.spec.subfolder
        return self.root


@dataclass(frozen=True)
class Location:
    """One place a model was (or would be) looked for, for ``faceanchor models list``."""

    kind: str  # "local", "hf-cache", "package"
    path: Path
    found: bool


@dataclass(frozen=True)
class FileCheck:
    """The verdict of :func:`verify_model` for one file."""

    name: str
    path: Path | None
    sha256: str | None
    expected: str | None
    status: str  # "ok", "mismatch", "unchecked" (no recorded sum), "missing", "missing-optional"


# ----------------------------------------------------------------------------- lookup


def _find_in_dir(directory: Path, f: ModelFile, subfolder: str | None) -> Path | None:
    for cand in f.candidates():
        p = directory / cand
        if p.is_file():
            return p
        # A directory that *is* the subfolder (e.g. the ControlNetModel folder itself).
        if subfolder and cand.startswith(subfolder + "/"):
            p = directory / cand[len(subfolder) + 1 :]
            if p.is_file():
                return p
    return None


def _find_in_cache(cache: Path, repo_id: str, revision: str, f: ModelFile) -> Path | None:
    if not (cache / ("models--" + repo_id.replace("/", "--"))).is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    for cand in f.candidates():
        got = try_to_load_from_cache(repo_id, cand, cache_dir=str(cache), revision=revision)
        if isinstance(got, str) and os.path.isfile(got):
            return Path(got)
    return None


def _collect(spec: ModelSpec, finder: Callable[[ModelFile], Path | None]) -> tuple[dict[str, Path], list[str]] | None:
    """Files found by ``finder``; None when a required one is absent."""
    files: dict[str, Path] = {}
    missing_opt: list[str] = []
    for f in spec.files:
        p = finder(f)
        if p is None:
            if f.required:
                return None
            missing_opt.append(f.path)
        else:
            files[f.path] = p
    return files, missing_opt


def _root_of(files: dict[str, Path], spec: ModelSpec, fallback: Path) -> Path:
    first = spec.required_files[0] if spec.required_files else None
    if first is None or first.path not in files:
        return fallback
    p = files[first.path]
    depth = first.path.count("/")
    for _ in range(depth + 1):
        p = p.parent
    return p


def _from_ref_path(spec: ModelSpec, ref: Path) -> ResolvedModel:
    """Resolve ``spec`` from a user-given existing path (directory or single file)."""
    if ref.is_file():
        req = spec.required_files
        if len(req) != 1:
            raise InvalidInputError(
                f"model '{spec.name}' needs a folder with {', '.join(f.path for f in req)}; got the single file {ref}"
            )
        return ResolvedModel(spec, ref.parent, {req[0].path: ref}, "local")
    got = _collect(spec, lambda f: _find_in_dir(ref, f, spec.subfolder))
    if got is None:
        missing = [f.path for f in spec.required_files if _find_in_dir(ref, f, spec.subfolder) is None]
        raise ModelNotFoundError(f"model '{spec.name}': the folder {ref} lacks {', '.join(missing)}")
    files, miss = got
    return ResolvedModel(spec, ref, files, "local", tuple(miss))


def find_model(
    spec: ModelSpec, settings: "Settings", ref: str | os.PathLike | None = None
) -> ResolvedModel | None:
    """Look for ``spec`` on disk only (no network); None when it is not there.

    ``ref`` may be an existing local directory/file (it wins, and errors if incomplete) or a
    hub repo id that replaces ``spec.repo_id``.
    """
    spec = _with_ref(spec, ref)
    if ref is not None and Path(os.fspath(ref)).expanduser().exists():
        return _from_ref_path(spec, Path(os.fspath(ref)).expanduser())
    for d in local_dirs(spec, settings):
        if d.is_dir():
            got = _collect(spec, lambda f, d=d: _find_in_dir(d, f, spec.subfolder))
            if got is not None:
                files, miss = got
                return ResolvedModel(spec, d, files, "package" if spec.source == "package" else "local", tuple(miss))
    if spec.source == "hub" and spec.repo_id:
        for cache in hf_cache_dirs(settings):
            got = _collect(spec, lambda f, c=cache: _find_in_cache(c, spec.repo_id, spec.revision, f))
            if got is not None:
                files, miss = got
                return ResolvedModel(spec, _root_of(files, spec, cache), files, "hf-cache", tuple(miss))
    return None


def _with_ref(spec: ModelSpec, ref: str | os.PathLike | None) -> ModelSpec:
    if ref is None:
        return spec
    s = os.fspath(ref)
    if Path(s).expanduser().exists():
        return spec
    if _looks_like_repo_id(s):
        from dataclasses import replace

        return replace(spec, repo_id=s, source="hub")
    raise ModelNotFoundError(f"model '{spec.name}': '{s}' is neither an existing path nor a hub repo id (org/name)")


def _looks_like_repo_id(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts) and not s.startswith((".", "~")) and not s.endswith((".safetensors", ".bin", ".ckpt"))


def search_locations(spec: ModelSpec, settings: "Settings") -> list[Location]:
    """Every place ``spec`` is looked for, each marked found when all its required files are there."""
    out: list[Location] = []
    for d in local_dirs(spec, settings):
        found = d.is_dir() and _collect(spec, lambda f, d=d: _find_in_dir(d, f, spec.subfolder)) is not None
        out.append(Location("package" if spec.source == "package" else "local", d, found))
    if spec.source == "hub" and spec.repo_id:
        for cache in hf_cache_dirs(settings):
            found = _collect(spec, lambda f, c=cache: _find_in_cache(c, spec.repo_id, spec.revision, f)) is not None
            out.append(Location("hf-cache", cache / ("models--" + spec.repo_id.replace("/", "--")), found))
    return out


def missing_message(spec: ModelSpec, settings: "Settings", reason: str | None = None) -> str:
    """One sentence: which files of which repo are missing and how to get them."""
    files = ", ".join(f.path for f in spec.required_files)
    put = default_download_dir(spec, settings) if local_dirs(spec, settings) else None
    if spec.source == "package":
        return f"model '{spec.name}' is missing: the files {files} of the face_recognition_models package were not found; pip install face-recognition-models"
    where = f"from {spec.repo_id} " if spec.repo_id else ""
    how = []
    if spec.repo_id or spec.url:
        how.append(f"run `faceanchor models pull {spec.name}`")
    if put is not None:
        how.append(f"put the files in {put}")
    why = f" ({reason})" if reason else ""
    return f"model '{spec.name}' is missing: files {files} {where}were not found{why}; {' or '.join(how)}"


# ----------------------------------------------------------------------------- resolve / pull


def resolve_model(
    model: str | ModelSpec,
    settings: "Settings",
    ref: str | os.PathLike | None = None,
    *,
    download: bool | None = None,
    verify: bool = False,
    registry: Registry | None = None,
) -> ResolvedModel:
    """Local files of registry model ``model`` (a name or a spec).

    ``ref`` overrides where it comes from: an existing path (wins) or a hub id.
    ``download`` None means "download when not offline"; False never touches the network.
    ``verify`` checks recorded sha256 sums (slow for big files) and raises CheckpointError.
    Raises :class:`ModelNotFoundError` with the files and how to get them.
    """
    spec = model if isinstance(model, ModelSpec) else (registry or default_registry()).get(model)
    found = find_model(spec, settings, ref)
    if found is None:
        spec = _with_ref(spec, ref)
        allowed = (not is_offline()) if download is None else (download and not is_offline())
        if allowed and (spec.repo_id or spec.url):
            found = pull_model(spec, settings)
        else:
            reason = "offline: HF_HUB_OFFLINE is set" if is_offline() else None
            raise ModelNotFoundError(missing_message(spec, settings, reason))
    if verify:
        bad = [c for c in verify_model(found) if c.status == "mismatch"]
        if bad:
            raise CheckpointError(
                f"model '{spec.name}': sha256 of {bad[0].path} is {bad[0].sha256}, expected {bad[0].expected}; delete it and pull again"
            )
    return found


def pull_model(
    model: str | ModelSpec,
    settings: "Settings",
    *,
    include_optional: bool = True,
    registry: Registry | None = None,
) -> ResolvedModel:
    """Download ``model``'s files (hub models into the Hugging Face cache; archives into
    ``<home>/models/insightface``). Offline or unreachable → ModelNotFoundError, one line."""
    spec = model if isinstance(model, ModelSpec) else (registry or default_registry()).get(model)
    if is_offline():
        raise ModelNotFoundError(f"cannot pull '{spec.name}': HF_HUB_OFFLINE is set; unset it or copy the files in by hand")
    if spec.source == "package":
        found = find_model(spec, settings)
        if found is None:
            raise ModelNotFoundError(missing_message(spec, settings))
        return found
    if spec.repo_id:
        return _pull_hub(spec, settings, include_optional)
    if spec.url:
        return _pull_archive(spec, settings)
    raise ModelNotFoundError(
        f"model '{spec.name}' has no official download; put the files {', '.join(f.path for f in spec.required_files)} "
        f"in {default_download_dir(spec, settings)}"
    )


def _pull_hub(spec: ModelSpec, settings: "Settings", include_optional: bool) -> ResolvedModel:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    hf_hub_download = huggingface_hub.hf_hub_download
    cache = hf_cache_dir()
    files: dict[str, Path] = {}
    missing_opt: list[str] = []
    for f in spec.files:
        if not f.required and not include_optional:
            missing_opt.append(f.path)
            continue
        got: Path | None = None
        for cand in f.candidates():
            try:
                with _quiet_hub():
                    got = Path(hf_hub_download(spec.repo_id, cand, revision=spec.revision, cache_dir=str(cache)))
                break
            except LocalEntryNotFoundError:  # the hub could not be reached and nothing is cached
                raise ModelNotFoundError(
                    f"cannot download {cand} from {spec.repo_id}: the Hugging Face hub is unreachable; check the network "
                    f"or put the files in {default_download_dir(spec, settings)}"
                ) from None
            except RemoteEntryNotFoundError:  # 404: try the next spelling (.bin after .safetensors)
                continue
            except Exception as e:  # network, auth, gated repo ...
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ModelNotFoundError(
                    f"cannot download {cand} from {spec.repo_id}: {first[:200]}; check the network or put the files in "
                    f"{default_download_dir(spec, settings)}"
                ) from None
        if got is None:
            if f.required:
                raise ModelNotFoundError(f"{spec.repo_id} has no file {f.path} (revision {spec.revision})")
            missing_opt.append(f.path)
        else:
            files[f.path] = got
    root = _root_of(files, spec, cache)
    return ResolvedModel(spec, root, files, "download", tuple(missing_opt))


@contextlib.contextmanager
def _quiet_hub():
    """Silence huggingface_hub's retry warnings so a failure stays one line for the CLI."""
    import logging

    log = logging.getLogger("huggingface_hub")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _pull_archive(spec: ModelSpec, settings: "Settings") -> ResolvedModel:
    import io
    import zipfile

    import httpx

    dest = default_download_dir(spec, settings)
    try:
        resp = httpx.get(spec.url, follow_redirects=True, timeout=60.0)
        resp.raise_for_status()
    except Exception as e:
        raise ModelNotFoundError(f"cannot download {spec.url}: {type(e).__name__}; put the files in {dest}") from None
    wanted = {Path(f.path).name for f in spec.files}
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        for info in zf.infolist():
            name = Path(info.filename).name
            if name in wanted:
                (dest / name).write_bytes(zf.read(info))
    found = find_model(spec, settings, dest)
    if found is None:
        raise ModelNotFoundError(missing_message(spec, settings, f"the archive {spec.url} lacked them"))
    return found


# ----------------------------------------------------------------------------- checksums


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def verify_model(resolved: ResolvedModel, *, compute: bool = True) -> list[FileCheck]:
    """Check every file of a found model against its recorded sha256.

    A file found under a different name than the registry's (its ``.safetensors`` sibling)
    has no recorded sum and is ``unchecked``. ``compute=False`` skips hashing unrecorded files.
    """
    out: list[FileCheck] = []
    for f in resolved.spec.files:
        p = resolved.files.get(f.path)
        if p is None:
            out.append(FileCheck(f.path, None, None, f.sha256, "missing" if f.required else "missing-optional"))
            continue
        same_name = p.name == Path(f.path).name
        expected = f.sha256 if same_name else None
        digest = sha256_file(p) if (compute or expected) else None
        if expected is None:
            status = "unchecked"
        else:
            status = "ok" if digest == expected.lower() else "mismatch"
        out.append(FileCheck(f.path, p, digest, expected, status))
    return out


# ----------------------------------------------------------------------------- base models


@dataclass(frozen=True)
class BaseModel:
    """Where a base model is: a diffusers folder (``from_pretrained(path)``) or one file
    (``from_single_file(path, config=config_dir)``). ``config_dir`` is a diffusers folder
    whose configs/tokenizers describe the single file (the family's default base, when found
    locally), so single files load offline; None means diffusers will need the network."""

    path: Path
    family: str
    single_file: bool
    source: str
    name: str
    config_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)


_SINGLE_FILE_EXT = (".safetensors", ".ckpt")


def resolve_base(
    ref: str | os.PathLike | None,
    family: str,
    settings: "Settings",
    *,
    download: bool | None = None,
    registry: Registry | None = None,
) -> BaseModel:
    """Resolve a base model reference for ``family`` (``sdxl``/``sd15``).

    ``ref``: None (the registry default), a hub repo id, a local diffusers folder (must hold
    ``model_index.json``) or a single ``.safetensors``/``.ckpt`` file.
    """
    if family not in BASE_FOR:
        raise InvalidInputError(f"unknown base family '{family}'; use sdxl or sd15")
    reg = registry or default_registry()
    default = reg.get(BASE_FOR[family])
    if ref is None:
        r = resolve_model(default, settings, download=download)
        return BaseModel(r.root, family, False, r.source, default.repo_id or default.name, None, r.files)
    s = os.fspath(ref)
    p = Path(s).expanduser()
    if p.is_file():
        if not p.name.endswith(_SINGLE_FILE_EXT):
            raise InvalidInputError(f"base model file {p.name} is not a .safetensors or .ckpt checkpoint")
        cfg = _config_only(default, settings)
        return BaseModel(p, family, True, "local", str(p), cfg)
    if p.is_dir():
        if not (p / "model_index.json").is_file():
            raise InvalidInputError(f"base model folder {p} has no model_index.json; give a diffusers folder or one .safetensors file")
        return BaseModel(p, family, False, "local", str(p))
    if s.endswith(_SINGLE_FILE_EXT):
        raise ModelNotFoundError(f"base model file {s} does not exist")
    from dataclasses import replace

    spec = replace(default, name=s, repo_id=s, files=_base_files(family), revision="main")
    if not _looks_like_repo_id(s):
        raise ModelNotFoundError(f"base model '{s}' is neither an existing path nor a hub repo id (org/name)")
    r = resolve_model(spec, settings, download=download)
    return BaseModel(r.root, family, False, r.source, s, None, r.files)


def _config_only(default: ModelSpec, settings: "Settings") -> Path | None:
    """A local folder holding the default base's configs and tokenizers (weights not needed)."""
    from dataclasses import replace

    cfg_files = tuple(ModelFile(f.path) for f in default.files if f.path.endswith((".json", ".txt")))
    found = find_model(replace(default, files=cfg_files), settings)
    return found.root if found is not None else None


def iter_status(settings: "Settings", specs: Iterable[ModelSpec]) -> list[tuple[ModelSpec, ResolvedModel | None]]:
    """Each spec with where it was found (or None), without network."""
    return [(s, find_model(s, settings)) for s in specs]


# ----------------------------------------------------------------------------- user LoRAs

#: The file a diffusers-trained LoRA folder or hub repo holds when it holds one.
DEFAULT_LORA_FILE = "pytorch_lora_weights.safetensors"


def resolve_lora(
    ref: str,
    settings: "Settings",
    *,
    weight_name: str | None = None,
    registry: Registry | None = None,
    aliases: dict[str, str] | None = None,
    download: bool | None = None,
) -> tuple[Path, str]:
    """The local ``.safetensors`` file of a user LoRA and the name results show for it.

    ``ref``: a ``kind="lora"`` registry name (found like every registry model: ``FACEANCHOR_HOME``,
    the HF cache, the hub unless offline), an existing ``.safetensors`` file, a folder holding one
    (``weight_name``, else its only ``.safetensors``, else ``pytorch_lora_weights.safetensors``), or a
    hub repo id (its ``weight_name`` or ``pytorch_lora_weights.safetensors``, through the HF cache).
    A path that does not exist is an :class:`InvalidInputError` (the caller's to fix); a registry or
    hub LoRA that is not there a :class:`ModelNotFoundError` naming how to get it. ``aliases``: short
    names of registry LoRAs (``realism`` → ``infiniteyou-realism-lora``)."""
    reg = registry or default_registry()
    aliases = aliases or {}
    short, ref = ref, aliases.get(ref, ref)
    if ref in reg and reg.get(ref).kind == "lora":
        spec = reg.get(ref)
        r = resolve_model(spec, settings, download=download)
        return r.path(), f"{spec.repo_id or spec.name}:{spec.required_files[0].path}"
    p = Path(ref).expanduser()
    if p.is_file():
        if p.suffix != ".safetensors":
            raise InvalidInputError(f"LoRA {ref}: only .safetensors files are read (no pickled .bin / .pt / .ckpt)")
        return p, str(p)
    if p.is_dir():
        if weight_name:
            f = p / weight_name
            if not f.is_file():
                raise InvalidInputError(f"LoRA folder {p} has no {weight_name}")
            return f, str(f)
        files = sorted(p.glob("*.safetensors"))
        if len(files) == 1:
            return files[0], str(files[0])
        if (p / DEFAULT_LORA_FILE).is_file():
            return p / DEFAULT_LORA_FILE, str(p / DEFAULT_LORA_FILE)
        what = f"{len(files)} .safetensors files" if files else "no .safetensors file"
        raise InvalidInputError(f"LoRA folder {p} holds {what}; name the file (weight_name) or give the file itself")
    if _looks_like_repo_id(ref):
        file = weight_name or DEFAULT_LORA_FILE
        spec = ModelSpec(name=ref, kind="lora", description=f"LoRA {ref}", repo_id=ref, files=(ModelFile(file),), optional=True)
        r = resolve_model(spec, settings, download=download)
        return r.path(), f"{ref}:{file}"
    check_lora_ref(short, registry=reg, aliases=aliases)
    raise AssertionError("unreachable")  # check_lora_ref raises for what is none of the above


def check_lora_ref(ref: str, *, registry: Registry | None = None, aliases: dict[str, str] | None = None) -> None:
    """Refuse at once (no network, nothing loaded) a LoRA reference that is no registry LoRA, no
    existing path and no hub repo id: a mistyped path is the caller's error, found before any model loads."""
    reg = registry or default_registry()
    aliases = aliases or {}
    name = aliases.get(ref, ref)
    if (name in reg and reg.get(name).kind == "lora") or Path(ref).expanduser().exists() or _looks_like_repo_id(ref):
        return
    known = list(aliases) or [s.name for s in reg if s.kind == "lora"]
    raise InvalidInputError(
        f"LoRA {ref!r}: no such file or folder, and neither a registry LoRA ({', '.join(known) or 'none'}) nor a hub repo id (org/name)"
    )
