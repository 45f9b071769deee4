"""The demo's and the tests' one HTTP call: `user:password@` in a URL becomes basic auth (urllib
would send the URL's credentials nowhere, and a Marathon behind basic auth would answer 401)."""

from __future__ import annotations

import base64

from devcluster.world_http import split_credentials


def basic(user_password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user_password.encode()).decode()}


def test_credentials_leave_the_url_and_become_a_basic_auth_header() -> None:
    assert split_credentials("https://registrar:pw@127.0.0.1:8080/v2/apps?embed=apps.tasks") == (
        "https://127.0.0.1:8080/v2/apps?embed=apps.tasks", basic("registrar:pw"))


def test_percent_encoded_credentials_are_decoded_once() -> None:
    assert split_credentials("http://ops:p%40ss%3Aword@127.0.0.1:8080") == ("http://127.0.0.1:8080",
                                                                            basic("ops:p@ss:word"))


def test_a_url_without_credentials_is_unchanged() -> None:
    url = "http://127.0.0.2:8500/v1/agent/services"
    assert split_credentials(url) == (url, {})
    assert split_credentials("https://127.0.0.1/v2/info") == ("https://127.0.0.1/v2/info", {})
