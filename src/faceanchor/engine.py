"""The generation engine: what every method shares, around one call into the method.

``Engine(settings, weights=...)`` keeps the loaded models between calls and runs
:meth:`Engine.generate` for any :class:`~faceanchor.types.GenerationRequest`. The method comes
from the registry (:mod:`faceanchor.methods`); the engine does, for every method alike, each
stage timed into ``result.timings``:

1. ``face``: decode the references, pick a face (largest or ``face_index``), embed, combine
   several references, apply the method's normalisation; or take precomputed embedding(s) +
   keypoints (characters).
2. ``load``: the method's models, through the engine's weights loader (cached after the first call).
3. the method's ``run``: its own stages (``controls``, ``prompt``, ``denoise``, ``decode``), with
   per-step progress and cancellation between denoising steps through one diffusers-shaped
   ``callback_on_step_end``.
4. ``score``: the face encoder on every output, cosine to the reference (``best_of`` keeps
   the best candidates), then the optional face-detail pass.
"""

from __future__ import annotations

import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from faceanchor import cancel as cancellation
from faceanchor.errors import Cancelled, EmbeddingMismatchError, FaceAnchorError, InvalidInputError
from faceanchor.methods.contract import Loaded, Method, RunContext, Tools
from faceanchor.types import (
    CancelCheck,
    Face,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    Identity,
    ProgressCallback,
    ProgressEvent,
)

__all__ = ["Engine", "Identity", "models_used"]


def _label(src: Any, fallback: str) -> str:
    """A readable name for an image input: its path when it is one, else ``fallback``."""
    from pathlib import Path

    if isinstance(src, str) and len(src) < 260 and not src.startswith("data:"):
        try:
            if Path(src).expanduser().exists():
                return src
        except OSError:
            pass
    return fallback


def progress_callback(notify: ProgressCallback, cancel: CancelCheck, chunk: int = 0, steps: int = 0) -> Any:
    """The one ``callback_on_step_end`` of every pipeline: a progress event after each step, then a
    cancel check (raising :class:`Cancelled` there stops the denoising loop between two steps).
    The total is the pipeline's ``num_timesteps`` (what really runs), else ``steps``."""
    from faceanchor.pipelines.callbacks import step_callback

    def on_step(step: int, total: int | None) -> None:
        total = total or steps
        notify(ProgressEvent(stage="denoise", step=step, total=total, sample=chunk, message=f"step {step}/{total}"))

    return step_callback(on_step=on_step, cancel=cancel)


# Scoring an output tries the detector's first scales only: an output without a face (a
# landscape, a failed sample) must not cost the whole retry ladder on the worker's critical path.
SCORE_DETECT_ATTEMPTS = 2

class Engine:
    """Loads models once and serves :meth:`generate` calls (thread-safe: one at a time).

    ``weights``: ``real`` (official checkpoints; each method's real weights need the embedding
    space they were trained on: antelopev2 for InstantID, buffalo_l for FaceID), ``dummy``
    (full-size random) or ``tiny`` (tiny random). ``face_pack`` overrides the pack: dummy/tiny
    adapters take the encoder's dimension, so the offline ``dlib`` pack runs the whole path.
    """

    def __init__(
        self,
        settings: Any,
        *,
        weights: str | None = None,
        face_pack: str | None = None,
        device: str | None = None,
        dtype: Any = None,
        seed: int = 0,
        analyzer: Any = None,
    ):
        from faceanchor.config import resolve_device, resolve_dtype
        from faceanchor.pipelines.loading import make_loader

        self.settings = settings
        self.device = device or resolve_device(settings.device)
        self.dtype = dtype or resolve_dtype(settings.dtype, self.device)
        self.seed = seed
        self.loader = make_loader(weights or getattr(settings, "weights", "real"), settings, self.device, self.dtype, seed)
        self.weights = self.loader.kind
        self.render_size = self.loader.render_size
        self.face_pack = face_pack
        self._analyzers: dict[str, Any] = {}
        if analyzer is not None:
            self._analyzers[analyzer.pack] = analyzer
        self._loaded: dict[tuple[Any, ...], Loaded] = {}
        self._controlnets: dict[str, tuple[Any, str]] = {}
        #: One generation (or one whole character operation) at a time; re-entrant.
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ methods & faces

    @staticmethod
    def method(name: str) -> Method:
        from faceanchor.methods.registry import get

        return get(name)

    def pack_for(self, method: str | Method) -> str:
        """The face pack this engine analyses faces with for ``method``."""
        if self.face_pack:
            return self.face_pack
        m = self.method(method) if isinstance(method, str) else method
        return self.loader.required_space(m) or getattr(self.settings, "face_pack", "dlib") or "dlib"

    def analyzer(self, pack: str | None = None) -> Any:
        """The (prepared) face analyzer of ``pack``, created once."""
        from faceanchor.face.analyzer import FaceAnalyzer

        pack = pack or getattr(self.settings, "face_pack", "dlib")
        if pack not in self._analyzers:
            self._analyzers[pack] = FaceAnalyzer(self.settings, pack)
        return self._analyzers[pack].prepare()

    def identity(self, request: GenerationRequest) -> Identity:
        """The reference identity (photos or precomputed), normalised by the method's rule."""
        method = self.method(request.method)
        required = self.loader.required_space(method)
        refs = request.references
        if request.precomputed:
            rows = [request.face_embedding] if request.face_embedding is not None else request.face_embeddings
            embs = [np.asarray(r, dtype=np.float32) for r in rows]
            space = request.face_embedding_space or self.pack_for(method)
            if required and space != required:
                raise EmbeddingMismatchError(
                    f"real {method.name} weights need embeddings of the {required} space, got {space}; "
                    f"analyse the photo with the {required} face pack"
                )
            self._check_references(method, len(embs))
            kps = np.asarray(request.face_kps, dtype=np.float32) if request.face_kps is not None else None
            size = tuple(request.face_image_size) if request.face_image_size else None
            bbox = np.asarray(request.face_bbox, dtype=np.float32) if request.face_bbox is not None else None
            if bbox is None and kps is not None:  # no stored box: pad the keypoints' extent
                lo, hi = kps.min(0), kps.max(0)
                pad = (hi - lo) * 0.6
                bbox = np.concatenate([lo - pad, hi + pad])
            crop = None
            if request.face_crop is not None:
                from faceanchor.imageio import ImageLimits, load_image

                crop = load_image(request.face_crop, name="face_crop", limits=ImageLimits.from_settings(self.settings))
            self._same_person(request, embs, space, [f"embedding {i + 1}" for i in range(len(embs))])
            emb, ref = self._combine(method, request, embs)
            return Identity(method.normalise(emb), space, kps, bbox, size, ref, face_crop=crop)
        if not refs:
            raise InvalidInputError("give a face image (face_image) or a precomputed face_embedding")
        self._check_references(method, len(refs))
        pack = self.pack_for(method)
        if required and pack != required:
            raise EmbeddingMismatchError(
                f"real {method.name} weights need the {required} embedding space; the {pack} face pack gives {pack} embeddings"
            )
        an = self.analyzer(pack)
        faces: list[Face] = []
        images = []
        for i, src in enumerate(refs):
            cancellation.checkpoint("face analysis")
            name = _label(src, f"face image {i + 1}")
            img = an.load(src, name=name)
            faces.append(an.get_face(img, index=request.face_index if i == 0 else None, name=name))
            images.append(img)
        self._same_person(request, [f.embedding for f in faces], an.space, [_label(src, f"face image {i + 1}") for i, src in enumerate(refs)])
        emb, ref = self._combine(method, request, [f.embedding for f in faces])
        main = faces[0]
        return Identity(method.normalise(emb), an.space, main.kps, main.bbox, images[0].size, ref, images[0], tuple(faces))

    @staticmethod
    def _same_person(request: GenerationRequest, embs: list[np.ndarray], space: str, names: list[str]) -> None:
        """Several references must be one person (faceanchor.face.same_person), unless overridden."""
        from faceanchor.face.same_person import check_same_person

        if len(embs) > 1 and request.combine == "concat" and embs[0].shape != embs[1].shape:
            return
        check_same_person(embs, space, names, allow=request.allow_different_people)

    @staticmethod
    def _check_references(method: Method, n: int) -> None:
        if n > method.max_references:
            raise InvalidInputError(f"{method.name} takes at most {method.max_references} references")

    @staticmethod
    def _combine(method: Method, request: GenerationRequest, embs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The method's input embedding(s) (raw) and the raw reference outputs are scored against."""
        from faceanchor.face.combine import combine_embeddings

        if method.separate_references or (len(embs) > 1 and request.combine == "concat"):
            emb = np.stack(embs)  # one token group per reference
        elif len(embs) == 1:
            emb = embs[0]
        else:
            emb = combine_embeddings(embs, request.combine)
        ref = combine_embeddings(embs, "average") if len(embs) > 1 else embs[0]
        return np.asarray(emb, np.float32), np.asarray(ref, np.float32)

    def score(self, images: list[Any], identity: Identity) -> list[tuple[float | None, str | None]]:
        """Identity score of each image: cosine of its largest face to the reference."""
        from faceanchor.face.similarity import identity_score

        try:
            an = self.analyzer(identity.space)
        except FaceAnchorError as e:
            return [(None, f"no face encoder for space {identity.space}: {e}")] * len(images)
        cancellation.checkpoint("scoring")
        # every output at once: one detector call per retry scale, one encoder call (where the models take a batch)
        found = an.detect_many(images, max_attempts=SCORE_DETECT_ATTEMPTS)
        cancellation.checkpoint("scoring")
        with_face = [i for i, faces in enumerate(found) if faces]
        embedded = dict(zip(with_face, an.embed_many([(images[i], found[i][0]) for i in with_face], with_quality=False)))
        out: list[tuple[float | None, str | None]] = []
        for i in range(len(images)):
            f = embedded.get(i)
            if f is None:
                out.append((None, "no face found in the output"))
            elif f.embedding.shape != identity.reference.shape:
                out.append((None, f"output embedding has {f.embedding.shape[0]} dims, reference {identity.reference.shape[0]}"))
            else:
                out.append((round(float(identity_score(f.embedding, identity.reference)), 4), None))
        return out

    def _more_identities(self, method: Method, request: GenerationRequest, first: Identity) -> list[tuple[Identity, Any]]:
        """The identities of ``request.more_identities``, each built like the request's own."""
        if not request.more_identities:
            return []
        if 1 + len(request.more_identities) > method.max_identities:
            able = [m.name for m in _registry_methods() if m.max_identities > 1]
            raise InvalidInputError(
                f"{method.name} puts one person in a picture; several people need {' or '.join(able) or 'another method'}"
            )
        out = []
        for j, placed in enumerate(request.more_identities, start=2):
            sub = request.model_copy(update=dict(
                face_image=placed.face_image, face_images=[], face_embedding=placed.face_embedding, face_embeddings=None,
                face_embedding_space=placed.face_embedding_space or request.face_embedding_space, face_kps=placed.face_kps,
                face_bbox=placed.face_bbox, face_image_size=placed.face_image_size, face_index=placed.face_index,
                face_crop=None, more_identities=[], face_box=None,
            ))
            ident = self.identity(sub)
            if ident.space != first.space or ident.embedding.shape[-1] != first.embedding.shape[-1]:
                raise EmbeddingMismatchError(
                    f"person {j} has a {ident.space} embedding ({ident.embedding.shape[-1]}-D), person 1 {first.space} "
                    f"({first.embedding.shape[-1]}-D); give every person in one embedding space"
                )
            out.append((ident, placed))
        return out

    def _score_people(self, images: list[Any], seeds: list[int], people: list[Identity], regions: list[Any] | None) -> list[GeneratedImage]:
        """One score per person: the largest face whose centre lies in that person's region,
        cosine to that person's reference; an image's identity_score is the lowest of them."""
        from faceanchor.face.similarity import identity_score

        an = self.analyzer(people[0].space)
        outs = []
        cancellation.checkpoint("scoring")
        found = an.detect_many(images, max_attempts=SCORE_DETECT_ATTEMPTS)
        for img, seed, faces in zip(images, seeds, found):
            cancellation.checkpoint("scoring")
            scores: list[float | None] = []
            why = None
            for j, (person, box) in enumerate(zip(people, regions or [None] * len(people)), start=1):
                inside = [f for f in faces if box is None or _centre_in(f.bbox, box)]
                if not inside:
                    scores.append(None)
                    why = why or f"no face found in person {j}'s region"
                    continue
                f = an.embed(img, inside[0], with_quality=False)
                scores.append(round(float(identity_score(f.embedding, person.reference)), 4))
            low = min(scores) if all(s is not None for s in scores) else None
            outs.append(GeneratedImage(img, seed, low, why, identity_scores=scores))
        return outs

    # ------------------------------------------------------------------ models

    def family_for(self, request: GenerationRequest) -> str:
        return self.method(request.method).family_for(request)

    def _load(self, method: Method, family: str, request: GenerationRequest, id_dim: int) -> Loaded:
        key = method.cache_key(family, request, id_dim, self.loader)
        if key not in self._loaded:
            # one loaded pipeline per family: drop others of the same family first (memory)
            for k in [k for k in self._loaded if k[1] == family]:
                del self._loaded[k]
            self.loader.check_fits(method, family)  # e.g. full-size random weights on a CPU: refuse early
            loaded = method.load(self.loader, family, request, id_dim)
            from faceanchor.pipelines.acceleration import SpeedOptions, accelerate

            accelerate(loaded.pipe, SpeedOptions.from_settings(self.settings), self.device)
            self._loaded[key] = loaded
        return self._loaded[key]

    def _cancellable(self, loaded: Loaded) -> Any:
        """Every model layer of ``loaded`` (and the extra ControlNets) checks the cancel scope first."""
        from faceanchor.pipelines.callbacks import cancellable, torch_modules

        modules = torch_modules(loaded.pipe)
        modules.update({f"controlnet_{k}": cn for k, (cn, _) in self._controlnets.items()})
        return cancellable(modules)

    def _controlnet(self, name: str) -> tuple[Any, str]:
        if name not in self._controlnets:
            self._controlnets[name] = self.loader.extra_controlnet(name)
        return self._controlnets[name]

    def _set_scheduler(self, loaded: Loaded, request: GenerationRequest, pipe: Any) -> None:
        from faceanchor.pipelines.loading import make_scheduler

        pipe.scheduler = make_scheduler(request.scheduler, loaded.scheduler_config)
        from faceanchor.models.few_step import PRESETS

        preset = PRESETS.get(request.scheduler)  # few-step: its LoRA (real weights; random ones have none)
        if preset is not None and preset.name not in loaded.few_step_loras:
            name = self.loader.few_step_lora(getattr(loaded.pipe, "pipe", loaded.pipe), loaded.family, preset)
            if name is not None:
                loaded.models[f"{preset.name}_lora"] = name
                loaded.few_step_loras.add(preset.name)
        if loaded.few_step_loras:
            names = sorted(loaded.few_step_loras)
            pipe.set_adapters(names, adapter_weights=[1.0 if n == request.scheduler else 0.0 for n in names])

    @staticmethod
    def _generators(seeds: list[int]) -> list[Any]:
        import torch

        return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

    def _tools(self, method: Method) -> Tools:
        return Tools(
            settings=self.settings, loader=self.loader, analyzer=self.analyzer, pack=lambda: self.pack_for(method),
            controlnet=self._controlnet, set_scheduler=self._set_scheduler, generators=self._generators,
        )

    def warmup(self, methods: tuple[str, ...] = ("instantid",)) -> "Engine":
        """Load the face pack and the models of ``methods`` now (servers call this at start-up)."""
        with self.lock:
            for name in methods:
                m = self.method(name)
                an = self.analyzer(self.pack_for(m))
                self._load(m, m.families[0], GenerationRequest(method=name), an.dim)
        return self

    # ------------------------------------------------------------------ generate

    def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> GenerationResult:
        """Run one request; raises FaceAnchorError subclasses for anything the caller can fix.

        ``cancel`` (and any enclosing :func:`faceanchor.cancel.scope`) is checked at every stage,
        between the layers of every model call too: :class:`Cancelled` lands within a second."""
        with self.lock, cancellation.scope(cancel):
            return self._generate(request, on_progress, cancellation.current())

    def _generate(self, request: GenerationRequest, on_progress: ProgressCallback | None, cancel: CancelCheck | None) -> GenerationResult:
        prep = self._prepare(request, on_progress, cancel)
        with self._cancellable(prep.loaded):
            images = prep.method.run(prep.loaded, prep.ctx)
        return self._finish(prep, images)

    def _prepare(self, request: GenerationRequest, on_progress: ProgressCallback | None, cancel: CancelCheck | None,
                 shared_cancel: CancelCheck | None = None) -> "_Prepared":
        """Everything before the method's run: fields, face, models, seeds, prompt, the run context.

        ``shared_cancel`` (a batch): the check the context's stages and steps use, so one
        request's cancel does not stop the call it shares with others."""
        from faceanchor.styles import apply_style

        timings: dict[str, float] = {}
        notify = on_progress or (lambda e: None)
        check = cancel or (lambda: False)
        run_check = shared_cancel or check

        @contextmanager
        def stage(name: str) -> Iterator[None]:
            if run_check():
                raise Cancelled(f"cancelled before {name}")
            notify(ProgressEvent(stage=name, message=f"{name} started"))
            t0 = time.perf_counter()
            yield
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0

        method = self.method(request.method)
        method.check_fields(request)
        family = method.family_for(request)
        warnings: list[str] = []
        if request.model_name is not None and not self.loader.honours_model_name:
            warnings.append(f"model_name {request.model_name!r} is not used with {self.weights} weights (seeded random models)")
        cap = method.work_pixels(family, self.settings, self.loader)
        if request.width and request.height and request.width * request.height > cap:
            warnings.append(f"{request.width}x{request.height} is over the working-size cap of {cap / 1e6:.2f} MP; "
                            "generated at a smaller size of the same aspect (settings work_megapixels_*)")
        with stage("face"):
            ident = self.identity(request)
            more = self._more_identities(method, request, ident)
        with stage("load"):
            loaded = self._load(method, family, request, int(ident.embedding.shape[-1]))
        seed = request.seed if request.seed >= 0 else secrets.randbelow(2**32)
        seeds = [seed + i for i in range(request.samples * request.best_of)]
        prompt, negative = apply_style(request.style, request.prompt, request.negative_prompt)
        warnings += [w for f in ident.faces for w in (f.quality.warnings if f.quality else ())]
        ctx = RunContext(
            request=request, identity=ident, family=family, prompt=prompt, negative=negative, seeds=seeds, stage=stage,
            step_callback=lambda chunk: progress_callback(notify, run_check, chunk, request.steps), cancel=run_check, notify=notify,
            timings=timings, tools=self._tools(method), more=more,
        )
        return _Prepared(method, loaded, ctx, seed, warnings, check)

    def _finish(self, prep: "_Prepared", images: list[Any]) -> GenerationResult:
        """Scores, best-of, the face-detail pass and the result record of one request's images."""
        import torch

        method, loaded, ctx, seed, seeds = prep.method, prep.loaded, prep.ctx, prep.seed, prep.ctx.seeds
        request, ident, more, timings = ctx.request, ctx.identity, ctx.more, ctx.timings
        stage = ctx.stage
        with stage("score"):
            if more:
                outs = self._score_people(images, seeds, [ident] + [m[0] for m in more], ctx.regions)
            else:
                scores = self.score(images, ident)
                outs = [GeneratedImage(im, s, sc, why) for im, s, (sc, why) in zip(images, seeds, scores)]
        if request.best_of > 1:
            outs = sorted(outs, key=lambda o: -1e9 if o.identity_score is None else o.identity_score, reverse=True)[: request.samples]
        face_detail = None
        if request.face_detail:  # small faces re-rendered at a higher resolution (faceanchor.character.edit)
            from faceanchor.character.edit import face_detail_pass

            with stage("face_detail"):
                outs, face_detail = face_detail_pass(self, request, ident, outs, cancel=prep.cancel)
        params = request.public_params()
        params.update(seed=seed, prompt_used=ctx.prompt, negative_prompt_used=ctx.negative, face_space=ident.space,
                      embedding_normalised=method.normalised, **_reference_report(request, ident))
        params.update(method.effective_params(request))
        if request.model_name is not None and not self.loader.honours_model_name:
            params["model_name"] = None
        if face_detail is not None:
            params["face_detail"] = face_detail
        if torch.cuda.is_available() and str(self.device).startswith("cuda"):
            timings["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return GenerationResult(images=outs, seed=seed, params=params, models=method.models_used(loaded.models, request),
                                timings=timings, warnings=list(prep.warnings))

    # ------------------------------------------------------------------ separate requests, one call

    def batch_key(self, request: GenerationRequest) -> tuple[Any, ...] | None:
        """Requests with equal keys may run as one pipeline call (:meth:`generate_many`); ``None``:
        this request runs alone (its method cannot batch it, or it is invalid: it then fails alone).

        The key: method (its shared pipeline), base family and model, size as asked, steps,
        scheduler, guidance (CFG on or off and its scale), this engine's dtype and weights, and
        whatever the method's :meth:`~faceanchor.methods.contract.Method.batch_key` adds."""
        try:
            method = self.method(request.method)
            own = method.batch_key(request)
            if own is None:
                return None
            family = method.family_for(request)
        except FaceAnchorError:
            return None
        return (method.pipeline_key or method.name, method.name, family, request.model_name, request.width, request.height,
                request.steps, request.scheduler, request.guidance, str(self.dtype), self.weights, own)

    def generate_many(
        self,
        requests: list[GenerationRequest],
        on_progress: list[ProgressCallback | None] | None = None,
        cancel: list[CancelCheck | None] | None = None,
    ) -> list[GenerationResult | FaceAnchorError]:
        """Run separate requests, those of equal :meth:`batch_key` as one pipeline call.

        Each request keeps its own seeds (its own generators: its images equal what
        :meth:`generate` gives it alone, up to float tolerance), prompt, identity and strengths;
        results come back in order, each with its own timings (the shared stages' times, and
        ``batch_requests`` / ``batch_images``), metadata and scores. An entry is the request's
        :class:`FaceAnchorError` instead when that request alone failed (no face in its photo...)
        or was cancelled (``cancel[i]``; the others go on; all cancelled stops the call). An
        error of the shared call itself is raised (the caller may run the requests one by one)."""
        n = len(requests)
        notifies = list(on_progress or [None] * n)
        checks = [c or (lambda: False) for c in (cancel or [None] * n)]
        out: list[Any] = [None] * n

        def everyone() -> bool:
            return all(c() for c in checks)

        with self.lock, cancellation.scope(everyone):
            preps: dict[int, _Prepared] = {}
            for i, request in enumerate(requests):
                try:
                    with cancellation.scope(checks[i]):
                        preps[i] = self._prepare(request, notifies[i], checks[i], shared_cancel=everyone)
                except FaceAnchorError as e:
                    out[i] = e
            groups: dict[Any, list[int]] = {}
            for i, prep in preps.items():
                key = self.batch_key(prep.ctx.request)
                groups.setdefault((id(prep.loaded), key) if key is not None else ("alone", i), []).append(i)
            for members in groups.values():
                live = [i for i in members if not checks[i]()]
                for i in set(members) - set(live):
                    out[i] = Cancelled("cancelled before it ran")
                if not live:
                    continue
                try:
                    images = self._run_batch(live, preps, notifies, checks, everyone)
                except Cancelled as e:  # every request was cancelled: the call stopped
                    for i in live:
                        out[i] = e
                    continue
                for i in live:
                    if checks[i]():
                        out[i] = Cancelled("cancelled while its batch ran")
                        continue
                    try:
                        with cancellation.scope(checks[i]):
                            out[i] = self._finish(preps[i], images[i])
                            out[i].timings.update(batch_requests=float(len(live)), batch_images=float(sum(len(images[j]) for j in live)))
                    except FaceAnchorError as e:
                        out[i] = e
        return out

    def _run_batch(self, live: list[int], preps: dict[int, "_Prepared"], notifies: list[Any], checks: list[CancelCheck],
                   everyone: CancelCheck) -> dict[int, list[Any]]:
        """One method call for the requests ``live`` (equal batch keys, one loaded pipeline)."""
        from faceanchor.methods.contract import Batch

        first = preps[live[0]]
        ctxs = [preps[i].ctx for i in live]

        @contextmanager
        def stage(name: str) -> Iterator[None]:
            if everyone():
                raise Cancelled(f"cancelled before {name}")
            for i in live:
                if not checks[i]() and notifies[i] is not None:
                    notifies[i](ProgressEvent(stage=name, message=f"{name} started"))
            t0 = time.perf_counter()
            yield
            dt = time.perf_counter() - t0
            for ctx in ctxs:
                ctx.timings[name] = ctx.timings.get(name, 0.0) + dt

        def step_callback(chunk: int) -> Any:
            def notify_all(ev: ProgressEvent) -> None:
                for i in live:
                    if not checks[i]() and notifies[i] is not None:
                        notifies[i](ev)

            return progress_callback(notify_all, everyone, chunk, first.ctx.request.steps)

        if len(live) == 1:
            ctx = first.ctx
            with self._cancellable(first.loaded):
                return {live[0]: first.method.run(first.loaded, ctx)}
        with self._cancellable(first.loaded):
            images = first.method.run_many(first.loaded, Batch(ctxs, stage, step_callback))
        return dict(zip(live, images))

    # ------------------------------------------------------------------ render (characters)

    def work_pixels(self, request: GenerationRequest) -> int:
        """The working-size cap (pixels) of ``request``'s method and family on these weights."""
        m = self.method(request.method)
        return m.work_pixels(m.family_for(request), self.settings, self.loader)

    def can_render(self, method: str) -> str | None:
        """None when ``method`` offers image-to-image; else why not."""
        m = self.method(method)
        if m.renders:
            return None
        have = [x.name for x in _registry_methods() if x.renders]
        return f"{m.name} has no image-to-image (edits and the face-detail pass use {' or '.join(have) or 'none'})"

    def render(
        self,
        request: GenerationRequest,
        identity: Identity,
        image: Any,
        kps: np.ndarray,
        *,
        strength: float,
        seed: int,
        mask: np.ndarray | None = None,
        face_box: np.ndarray | None = None,
        on_step: Any = None,
        cancel: CancelCheck | None = None,
    ) -> Any:
        """Image-to-image (or inpainting with ``mask``) of ``image`` with ``identity``, by the request's method."""
        from faceanchor.styles import apply_style

        from faceanchor.pipelines.callbacks import step_callback

        why = self.can_render(request.method)
        if why:
            raise InvalidInputError(why)
        method = self.method(request.method)
        with self.lock, cancellation.scope(cancel):
            check = cancellation.current()
            family = method.family_for(request)
            loaded = self._load(method, family, request, int(identity.embedding.shape[-1]))
            prompt, negative = apply_style(request.style, request.prompt, request.negative_prompt)

            @contextmanager
            def stage(name: str) -> Iterator[None]:
                yield

            callback = step_callback(on_step=on_step, cancel=check)
            ctx = RunContext(request=request, identity=identity, family=family, prompt=prompt, negative=negative, seeds=[seed],
                             stage=stage, step_callback=lambda chunk: callback, cancel=check, notify=lambda e: None,
                             timings={}, tools=self._tools(method))
            with self._cancellable(loaded):
                return method.render(loaded, ctx, image, kps, strength=strength, seed=seed, mask=mask, face_box=face_box,
                                     callback=callback)


@dataclass
class _Prepared:
    """One request ready for its method's run (:meth:`Engine._prepare`)."""

    method: Method
    loaded: Loaded
    ctx: RunContext
    seed: int
    warnings: list[str]
    cancel: CancelCheck


def _reference_report(request: GenerationRequest, ident: Identity) -> dict[str, Any]:
    """``reference_sha256`` (of the raw reference embedding), ``same_person`` (pairwise verdicts of
    several references; ``overridden`` when blended on purpose) and ``reference_faces`` (per
    photo: the face used and how many others it had)."""
    from faceanchor.face.same_person import check_same_person

    import hashlib

    # the reference as a hash only (content credentials say a real face was used, never which)
    out: dict[str, Any] = {"reference_sha256": hashlib.sha256(np.ascontiguousarray(ident.reference, np.float32).tobytes()).hexdigest()}
    embs = [f.embedding for f in ident.faces if f.embedding is not None]
    if not embs and request.precomputed and request.face_embeddings:
        embs = [np.asarray(r, np.float32) for r in request.face_embeddings]
    if len(embs) > 1 and len({e.shape for e in embs}) == 1:
        out["same_person"] = check_same_person(embs, ident.space, allow=True)
    if ident.faces:
        out["reference_faces"] = [
            {"reference": i + 1, "face_index": request.face_index if i == 0 and request.face_index is not None else 0,
             "faces_found": f.faces_in_image, "others": max(0, (f.faces_in_image or 1) - 1)}
            for i, f in enumerate(ident.faces)
        ]
    return out


def _centre_in(bbox: Any, box: Any) -> bool:
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3]


def _registry_methods() -> list[Method]:
    from faceanchor.methods.registry import methods

    return methods()


def models_used(models: dict[str, str], request: GenerationRequest) -> dict[str, str]:
    """The models of ``models`` (all loaded on a base so far) that ``request`` used."""
    return Engine.method(request.method).models_used(models, request)
