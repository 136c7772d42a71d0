"""Weight downloads never hang and never leave partial files (issue 14, item 6).

A local server that accepts connections and never answers stands in for a stuck hub; a local
HTTP server stands in for a working one. No test reaches the internet.
"""

from __future__ import annotations

import functools
import http.server
import socket
import threading
import types
from pathlib import Path

import pytest
import torch

from hybridize.errors import WeightsError
from hybridize.models import create
from hybridize.nets import weights as W

TIMEOUT = "0.3"  # seconds per network wait in these tests


@pytest.fixture
def silent_server():
    """(base URL, accepted connections) of a server that accepts and never answers."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.05)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                accepted.append(srv.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}", accepted
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    srv.close()


@pytest.fixture
def file_server(tmp_path):
    """(base URL, folder) of an HTTP server for the files in ``folder``."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", folder
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch.hub folder, no offline switch, short timeouts, nothing cached."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HYBRIDIZE_DOWNLOAD_TIMEOUT", TIMEOUT)
    monkeypatch.setattr(W, "offline_state_dict", lambda *a, **k: None)
    return hub


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _one_line(info) -> str:
    msg = str(info.value)
    assert msg and "\n" not in msg
    return msg


def test_download_from_silent_server_times_out(silent_server, tmp_path) -> None:
    url, accepted = silent_server
    dest = tmp_path / "out" / "w.pth"
    with pytest.raises(WeightsError) as info:
        W.download(f"{url}/w.pth", dest, "a test model", timeout=0.3)
    msg = _one_line(info)
    assert "could not fetch" in msg and "no answer within 0.3 s" in msg and "--weights" in msg
    assert accepted, "the server saw no connection"
    assert _files(tmp_path) == []  # no .partial file, no destination


def test_timm_weights_from_silent_hub(silent_server, hub_dir, monkeypatch) -> None:
    url, accepted = silent_server
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(W, "hf_cached_file", lambda repo: None)
    with pytest.raises(WeightsError) as info:
        create("test_resnet", pretrained=True)
    msg = _one_line(info)
    assert "could not fetch" in msg and "127.0.0.1" in msg and "--weights FILE" in msg
    assert accepted and _files(hub_dir) == []


def test_torchvision_weights_from_silent_hub(silent_server, hub_dir, monkeypatch) -> None:
    import torchvision

    url, accepted = silent_server

    def refuse(**kwargs):
        raise AssertionError("torch.hub's own downloader (no timeout) must not be used")

    fake = types.SimpleNamespace(
        DEFAULT=types.SimpleNamespace(url=f"{url}/resnet18-fake.pth", get_state_dict=refuse)
    )
    monkeypatch.setattr(torchvision.models, "get_model_weights", lambda name: fake)
    with pytest.raises(WeightsError) as info:
        create("torchvision:resnet18", pretrained=True)
    assert "could not fetch" in _one_line(info)
    assert accepted and _files(hub_dir) == []


def test_download_fetches_the_bytes(file_server, tmp_path) -> None:
    url, folder = file_server
    payload = bytes(range(256)) * 5000  # more than one read
    (folder / "w.pth").write_bytes(payload)
    dest = tmp_path / "got" / "w.pth"
    assert W.download(f"{url}/w.pth", dest, "a test model", timeout=5) == dest
    assert dest.read_bytes() == payload
    assert _files(dest.parent) == ["w.pth"]


def test_hf_download_falls_back_to_the_next_file(file_server, hub_dir, monkeypatch) -> None:
    url, folder = file_server
    monkeypatch.setenv("HF_ENDPOINT", url)
    # real transfers that must succeed: a timeout a loaded CI machine cannot miss
    monkeypatch.setenv("HYBRIDIZE_DOWNLOAD_TIMEOUT", "30")
    repo = folder / "timm" / "tiny" / "resolve" / "main"
    repo.mkdir(parents=True)
    sd = {"w": torch.arange(4.0)}
    torch.save(sd, repo / "pytorch_model.bin")  # no model.safetensors there: a 404 first
    got = W.download_hf("timm/tiny", "a test model")
    assert got == W.hf_download_dir("timm/tiny") / "pytorch_model.bin"
    assert torch.equal(torch.load(got, weights_only=True)["w"], sd["w"])
    assert W.hf_cached_file("timm/tiny") == got  # found offline next time
    with pytest.raises(WeightsError, match="no weights file"):
        W.download_hf("timm/absent", "a test model")
    missing = f"{url}/nothing-here.pth"
    with pytest.raises(WeightsError, match="HTTP 404"):
        W.download_torch_hub(missing, "a test model")
    assert not list(hub_dir.rglob("*.partial*"))


def test_timeout_setting(monkeypatch) -> None:
    monkeypatch.setenv("HYBRIDIZE_DOWNLOAD_TIMEOUT", "2.5")
    assert W.download_timeout() == 2.5
    for bad in ("", "abc", "-1", "0"):
        monkeypatch.setenv("HYBRIDIZE_DOWNLOAD_TIMEOUT", bad)
        assert W.download_timeout() == W.DOWNLOAD_TIMEOUT_S


class _Payload:
    """Unpickling this runs code: it calls ``_ran``."""

    def __reduce__(self):
        return (_ran, ())


_RAN: list[bool] = []


def _ran() -> dict:
    _RAN.append(True)
    return {}


def _cached(hub: Path, name: str, obj: object) -> Path:
    path = hub / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def test_torchvision_cache_is_read_as_data(hub_dir, monkeypatch) -> None:
    import torchvision

    url = "http://127.0.0.1:9/resnet18-cached.pth"
    fake = types.SimpleNamespace(DEFAULT=types.SimpleNamespace(url=url))
    monkeypatch.setattr(torchvision.models, "get_model_weights", lambda name: fake)
    sd = torchvision.models.resnet18().state_dict()
    _cached(hub_dir, "resnet18-cached.pth", sd)
    model = create("torchvision:resnet18", pretrained=True)
    assert torch.equal(model.state_dict()["fc.weight"], sd["fc.weight"])
    _cached(hub_dir, "resnet18-cached.pth", _Payload())  # the same name, now with code in it
    _RAN.clear()
    with pytest.raises(WeightsError, match="as data .*delete that file and retry"):
        create("torchvision:resnet18", pretrained=True)
    assert _RAN == []


def test_timm_cache_with_code_is_refused(hub_dir, monkeypatch) -> None:
    evil = _cached(hub_dir, "pytorch_model.bin", _Payload())
    monkeypatch.setattr(W, "hf_cached_file", lambda repo: evil)
    _RAN.clear()
    with pytest.raises(WeightsError, match="as data .*delete that file and retry"):
        create("test_resnet", pretrained=True)
    assert _RAN == []


@pytest.fixture
def short_server():
    """Base URL of a server that promises 1000 bytes, sends 10 and closes."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    thread.join(timeout=5)
    srv.close()


def test_a_download_cut_short_is_not_kept(short_server, tmp_path) -> None:
    dest = tmp_path / "got" / "w.pth"
    with pytest.raises(WeightsError) as info:
        W.download(f"{short_server}/w.pth", dest, "a test model", timeout=5)
    assert "truncated: 10 of 1000 bytes" in _one_line(info)
    assert _files(tmp_path) == []  # neither the destination nor a partial file


def test_code_free_hub_formats_pass_to_timm_and_any_pickle_is_read_as_data(tmp_path) -> None:
    assert W.read_hub_file(tmp_path / "w.npz") is None  # numpy archive: timm reads it
    assert W.read_hub_file(tmp_path / "w.safetensors") is None
    odd = tmp_path / "w.pyth"  # an unusual suffix is still a pickle: read, not refused
    torch.save({"w": torch.ones(2)}, odd)
    assert torch.equal(W.read_hub_file(odd)["w"], torch.ones(2))
