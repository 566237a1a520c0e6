"""Which ``pip install "faceanchor[EXTRA]"`` brings a missing module.

The CLI imports optional libraries inside its commands; a command run without its extra
installed fails with ``ModuleNotFoundError``, which :func:`install_hint` turns into one line
naming the extra. The table follows ``[project.optional-dependencies]`` in pyproject.toml
(``tests/cli/test_usage_errors.py`` checks that every distribution listed there is covered).
"""

from __future__ import annotations

#: Top-level import name → the extra that installs it.
MODULE_EXTRAS: dict[str, str] = {
    "torch": "gen",
    "diffusers": "gen",
    "transformers": "gen",
    "safetensors": "gen",
    "huggingface_hub": "gen",
    "accelerate": "gen",
    "peft": "gen",
    "compel": "gen",
    "onnx": "insightface",
    "mediapipe": "pose",
    "fastapi": "serve",
    "starlette": "serve",
    "uvicorn": "serve",
    "sqlalchemy": "serve",
    "httpx": "serve",
    "multipart": "serve",
    "python_multipart": "serve",
    "prometheus_client": "serve",
    "fastapi_offline": "serve",
    "ray": "ray",
    "psycopg": "postgres",
    "mcp": "mcp",
    "mcp_types": "mcp",
    "c2pa": "trust",
    "pywt": "trust",
    "optimum": "quant",
}

#: Distribution names whose import name differs from the normalised distribution name.
DISTRIBUTION_MODULES: dict[str, str] = {"python-multipart": "python_multipart", "prometheus-client": "prometheus_client",
                                        "huggingface-hub": "huggingface_hub", "c2pa-python": "c2pa", "pywavelets": "pywt",
                                        "optimum-quanto": "optimum"}


def missing_extra(error: ImportError) -> tuple[str, str] | None:
    """(missing top-level module, extra) when ``error`` is a module an extra installs; else None."""
    name = getattr(error, "name", None)
    if not isinstance(error, ModuleNotFoundError) or not name:
        return None
    top = name.split(".", 1)[0]
    extra = MODULE_EXTRAS.get(top)
    return (top, extra) if extra else None


def install_hint(error: ImportError, command: str) -> str | None:
    """One line: which extra ``command`` needs and the pip command that installs it."""
    found = missing_extra(error)
    if found is None:
        return None
    module, extra = found
    return f'{command} needs the "{extra}" extra ({module} is not installed): pip install "faceanchor[{extra}]"'
