"""Nothing is downloaded: every test runs with the network blocked (pytest-socket, enabled
for the whole suite in pyproject.toml), and the built-in datasets load under that block."""
import socket

import pytest
from pytest_socket import SocketBlockedError

from ckptkd import DataConfig, load_dataset


def test_the_suite_runs_with_the_network_blocked():
    with pytest.raises(SocketBlockedError):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    with pytest.raises(SocketBlockedError):
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM)


@pytest.mark.parametrize("spec", ["mnist1d", "digits"])
def test_the_built_in_datasets_load_without_the_network(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("CKPTKD_CACHE", str(tmp_path))  # generated afresh, not read from a cache
    data = load_dataset(DataConfig(spec=spec, num_samples=200))
    assert len(data.x_train) > 0 and data.num_classes == 10
