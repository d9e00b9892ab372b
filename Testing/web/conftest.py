"""Fixtures for the browser tests: a real `normativead web` server and a real headless Chromium.

The server is the command line's own subcommand, started on a free local port in its own process
(its temporary folders go to a folder of the test's, so that the test can see they are removed on
exit). The browser is Debian's chromium driven by selenium through chromedriver; without them the
tests skip and say how to install them (.ci/run installs them, so in CI they run).
"""

from __future__ import annotations

import pytest

from web_server import MAX_UPLOAD_MB, Server, browser_reason, new_browser



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    reason = browser_reason()
    if reason:
        pytest.skip(reason)
    running = Server(tmp_path_factory.mktemp("web_server"), max_upload_mb=MAX_UPLOAD_MB)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    driver = new_browser(tmp_path_factory.mktemp("downloads"))
    yield driver
    driver.quit()
