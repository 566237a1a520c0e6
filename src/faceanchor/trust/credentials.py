"""Content credentials (C2PA) on every output, with ``c2pa-python`` (imported when used).

The manifest asserts that faceanchor created the image with a trained model (IPTC digital source
type ``trainedAlgorithmicMedia``), and, as the ``faceanchor.generation`` assertion: the job id,
the method and model ids, the seed, and that a real reference face was used, as the SHA-256 of
the reference embedding (never the photo or the vector itself).

It is signed with the operator's key and certificate chain (settings ``c2pa_cert_chain``, PEM,
leaf first then its CA(s); ``c2pa_private_key``, PEM; ``c2pa_signing_alg``, default ES256):
without them outputs carry no manifest. C2PA wants an end-entity certificate issued by a CA
(not self-signed) with the digitalSignature key usage and an extended key usage such as
emailProtection or documentSigning; a production chain comes from a CA on the C2PA trust list,
so that verifiers show the signer as trusted (a test chain verifies as signed but untrusted).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from faceanchor.errors import FaceAnchorError

MIME = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}
SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
ASSERTION = "faceanchor.generation"


def _c2pa() -> Any:
    try:
        import c2pa
    except ImportError:
        raise FaceAnchorError("content credentials need c2pa-python: pip install 'faceanchor[trust]'") from None
    return c2pa


class CredentialSigner:
    """Signs encoded outputs with a C2PA manifest; built from settings (None when not configured)."""

    def __init__(self, cert_chain: bytes, private_key: bytes, alg: str = "es256", timestamp_url: str | None = None,
                 thumbnail: bool = False):
        self.thumbnail = thumbnail  # c2pa's default embeds a JPEG thumbnail (~115 KB on a 1024 px output)
        self.cert_chain = cert_chain
        self.private_key = private_key
        self.alg = alg.upper()
        self.timestamp_url = timestamp_url
        c2pa = _c2pa()
        if self.alg not in c2pa.C2paSigningAlg.__members__:
            raise FaceAnchorError(f"c2pa_signing_alg {alg!r} is unknown; use one of {', '.join(c2pa.C2paSigningAlg.__members__).lower()}")
        self._signer()  # a bad key or chain fails now, at start-up, with a readable message

    @classmethod
    def from_settings(cls, settings: Any) -> "CredentialSigner | None":
        chain, key = getattr(settings, "c2pa_cert_chain", None), getattr(settings, "c2pa_private_key", None)
        if chain is None and key is None:
            return None
        if chain is None or key is None:
            raise FaceAnchorError("content credentials need both c2pa_cert_chain and c2pa_private_key (PEM files)")
        data = []
        for name, path in (("c2pa_cert_chain", chain), ("c2pa_private_key", key)):
            try:
                data.append(Path(path).expanduser().read_bytes())
            except OSError as e:
                raise FaceAnchorError(f"{name}: cannot read {path} ({e.strerror or e})") from None
        return cls(data[0], data[1], getattr(settings, "c2pa_signing_alg", "es256"), getattr(settings, "c2pa_timestamp_url", None),
                   bool(getattr(settings, "c2pa_thumbnail", False)))

    def _signer(self) -> Any:
        c2pa = _c2pa()
        info = c2pa.C2paSignerInfo(getattr(c2pa.C2paSigningAlg, self.alg), self.cert_chain, self.private_key,
                                   self.timestamp_url.encode() if self.timestamp_url else None)
        try:
            return c2pa.Signer.from_info(info)
        except Exception as e:
            raise FaceAnchorError(f"the C2PA signing key or certificate chain is not usable: {str(e)[:300]}") from None

    def sign(self, data: bytes, fmt: str, assertion: dict[str, Any]) -> bytes:
        """``data`` (an encoded PNG/JPEG/WEBP) with a signed manifest carrying ``assertion``."""
        c2pa = _c2pa()
        mime = MIME[fmt.lower()]
        manifest = {
            "claim_generator_info": [{"name": "faceanchor", "version": _version()}],
            "title": f"faceanchor output {assertion.get('job_id', '')}".strip(),
            "format": mime,
            "assertions": [
                {"label": "c2pa.actions", "data": {"actions": [{
                    "action": "c2pa.created", "digitalSourceType": SOURCE_TYPE,
                    "softwareAgent": {"name": "faceanchor", "version": _version()},
                }]}},
                {"label": ASSERTION, "data": assertion},
            ],
        }
        out = io.BytesIO()
        signer = self._signer()
        try:
            context = c2pa.Context(c2pa.Settings.from_json(json.dumps({"builder": {"thumbnail": {"enabled": self.thumbnail}}})))
            with c2pa.Builder(json.dumps(manifest), context=context) as builder:
                builder.sign(signer, mime, io.BytesIO(data), out)
        except Exception as e:
            raise FaceAnchorError(f"signing the output's content credentials failed: {str(e)[:300]}") from None
        finally:
            signer.close()
        return out.getvalue()


def assertion_for(info: dict[str, Any], metadata: dict[str, Any] | None) -> dict[str, Any]:
    """The ``faceanchor.generation`` assertion of one output: ids and hashes, never an image."""
    meta = metadata or {}
    params = meta.get("params") or {}
    return {
        "job_id": info.get("job_id"),
        "method": params.get("method"),
        "models": meta.get("models") or {},
        "seed": meta.get("seed", params.get("seed")),
        "reference_face": {"used": bool(params.get("reference_sha256")), "embedding_sha256": params.get("reference_sha256"),
                           "space": params.get("face_space")},
        "same_person": (params.get("same_person") or {}).get("all_same"),
        "people_blended": bool((params.get("same_person") or {}).get("overridden")),
        "watermark": (info.get("watermark") or {}).get("payload"),
        "safety": info.get("safety"),
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("faceanchor")
    except Exception:
        return "0"


def read_manifest(data: bytes, mime: str, trust_anchors: bytes | None = None) -> dict[str, Any]:
    """The active C2PA manifest of ``data``: ``{"found": False}`` when it has none. With
    ``trust_anchors`` (PEM CA certificates, setting ``c2pa_trust_anchors``) a chain ending in one
    of them reads as ``trusted``."""
    try:
        import c2pa
    except ImportError:
        return {"found": False, "reason": "c2pa-python is not installed (pip install 'faceanchor[trust]')"}
    try:
        context = None
        if trust_anchors:
            settings = c2pa.Settings.from_json(json.dumps({"verify": {"verify_trust": True}, "trust": {"trust_anchors": trust_anchors.decode()}}))
            context = c2pa.Context(settings)
        with c2pa.Reader(mime, io.BytesIO(data), context=context) as reader:
            store = json.loads(reader.json())
    except Exception as e:  # no manifest (the usual case for foreign images) or a broken one
        text = str(e)
        if "notfound" in text.replace(" ", "").lower() or "jumbf" in text.lower():
            return {"found": False}
        return {"found": False, "error": text[:300]}
    active = store.get("active_manifest")
    manifest = store.get("manifests", {}).get(active, {})
    status = store.get("validation_status") or []
    codes = [str(s.get("code", "")) for s in status]
    failures = [c for c in codes if c != "signingCredential.untrusted"]
    gen = manifest.get("claim_generator_info") or [{}]
    return {
        "found": True,
        "valid": not failures,
        "trusted": not any(c == "signingCredential.untrusted" for c in codes),
        "validation_status": status,
        "claim_generator": manifest.get("claim_generator") or gen[0].get("name"),
        "title": manifest.get("title"),
        "assertions": {a.get("label"): a.get("data") for a in manifest.get("assertions", [])},
        "signature": manifest.get("signature_info"),
    }
