"""Fixtures used across stages and the reliability figures' report. Helpers that are not
fixtures live in ``tests/helpers/`` (``tests/`` is on ``sys.path``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from helpers.figures import FIGURES, is_reliability_test


# ---------------------------------------------------------------- an S3-compatible server on 127.0.0.1
@dataclass
class S3:
    endpoint: str
    options: dict
    fs: Any
    bucket: Callable[[str], str]  # a fresh bucket for a test; returns its name


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free port of 127.0.0.1, one per test module (sink, engines)."""
    fsspec = pytest.importorskip("fsspec")
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)  # a free port
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    endpoint = f"http://{host}:{port}"
    # eu-west-1: s3fs sends the client's region as the bucket's location, which us-east-1 refuses
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint, "region_name": "eu-west-1"}}
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **options)
    made: list[str] = []

    def bucket(name: str) -> str:
        fs.mkdir(name)
        made.append(name)
        return name

    yield S3(endpoint, options, fs, bucket)
    server.stop()


# ---------------------------------------------------------------- reliability figures (issue 7)
def pytest_runtest_logreport(report):
    if report.failed and is_reliability_test(report.nodeid):
        FIGURES.failed_tests.append(report.nodeid)


def pytest_terminal_summary(terminalreporter):
    if not any(FIGURES.counts.values()) and not FIGURES.failed_tests:
        return
    terminalreporter.section("reliability figures (issue 7)")
    for line in FIGURES.lines():
        terminalreporter.write_line(line)
